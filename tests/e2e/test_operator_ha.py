"""The operator as production runs it: two replicas with a leader, deletion that does not need it, and
one-shot actions (promote, abort) that survive a crash between the operator's writes.

These tests change the session's operator Deployment (replicas, a failpoint variable) and put it back.
They need the operator in the cluster (GPT_E2E_OPERATOR=cluster, the default).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .kube import NAME_LABEL, OPERATOR_NAMESPACE, PROMOTE, TRACK_LABEL, Kube, gptd_manifest

pytestmark = pytest.mark.e2e
LEASE = "gpt-operator"
OPERATOR_PODS = "app.kubernetes.io/name=gpt-operator"


@pytest.fixture(autouse=True)
def in_cluster_operator(operator: None) -> None:
    mode = os.environ.get("GPT_E2E_OPERATOR", "cluster")
    assert mode == "cluster", f"these tests drive the operator's Deployment (GPT_E2E_OPERATOR={mode})"


def _spec(rollout: dict[str, Any], revision: int, replicas: int = 2) -> dict[str, Any]:
    return {
        "environment": "staging",
        "model": {"source": "builtin:tiny"},
        "replicas": replicas,
        "env": [{"name": "E2E_REVISION", "value": str(revision)}],
        "rollout": rollout,
    }


def operator(kube: Kube, *args: str, timeout: float = 60) -> str:
    return kube.run("-n", OPERATOR_NAMESPACE, *args, timeout=timeout)


def rolled_out(kube: Kube) -> None:
    operator(kube, "rollout", "status", "deployment/gpt-operator", "--timeout=180s", timeout=200)


def leader(kube: Kube) -> str | None:
    lease = kube.get("lease", LEASE, OPERATOR_NAMESPACE)
    return (lease or {}).get("spec", {}).get("holderIdentity")


def restarts(kube: Kube) -> int:
    pods = kube.list("pods", OPERATOR_NAMESPACE, OPERATOR_PODS)
    return sum(cs.get("restartCount", 0) for p in pods for cs in p.get("status", {}).get("containerStatuses", []))


@pytest.fixture()
def restore_operator(kube: Kube) -> Iterator[None]:
    yield
    operator(kube, "set", "env", "deployment/gpt-operator", "GPT_OPERATOR_FAILPOINT-")
    operator(kube, "scale", "deployment/gpt-operator", "--replicas=2")
    rolled_out(kube)


def test_two_replicas_one_leader_and_the_lease_names_it(kube: Kube) -> None:
    rolled_out(kube)
    pods = kube.list("pods", OPERATOR_NAMESPACE, OPERATOR_PODS)
    assert len([p for p in pods if p["status"].get("phase") == "Running"]) == 2
    holder = kube.eventually(lambda: leader(kube), "a leader")
    assert any(holder.startswith(f"gpt-operator@{p['metadata']['name']}-") for p in pods), holder
    # The standby reconciles nothing: it says so in its log.
    logs = {p["metadata"]["name"]: operator(kube, "logs", p["metadata"]["name"], "--tail=200") for p in pods}
    standby = [name for name in logs if not holder.startswith(f"gpt-operator@{name}-")]
    assert len(standby) == 1
    assert "waits for Lease" in logs[standby[0]] and "applied" not in logs[standby[0]]


def test_a_canary_goes_on_when_its_leader_is_killed_mid_rollout(kube: Kube, ns: str, restore_operator) -> None:
    """Timed canary steps are the leader's timers: kill the leader (no clean stop, no Lease release) while
    the canary waits in a timed pause; the standby takes the Lease and finishes the rollout."""
    rolled_out(kube)
    name = "ha"
    steps = [{"setWeight": 50}, {"pause": {"duration": 20}}]
    rollout = {"strategy": "Canary", "canary": {"steps": steps}}
    kube.apply(gptd_manifest(name, ns, _spec(rollout, 1)))
    first = kube.wait_ready(ns, name, 2)
    kube.apply(gptd_manifest(name, ns, _spec(rollout, 2)))
    kube.wait_gptd(ns, name, lambda o: o["status"].get("currentStep") == 1, "in the timed pause", timeout=120)
    before = leader(kube)
    assert before
    pod = before.removeprefix("gpt-operator@").rsplit("-", 1)[0]
    operator(kube, "delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")
    after = kube.eventually(lambda: (h := leader(kube)) and h != before and h, "a new leader", timeout=120)
    done = kube.wait_gptd(
        ns,
        name,
        lambda o: (
            o["status"].get("stableRevision") != first["status"]["stableRevision"]
            and o["status"].get("phase") == "Available"
        ),
        "promoted by the new leader",
        timeout=180,
    )
    assert not done["status"].get("canaryWeight")
    assert not after.startswith(f"gpt-operator@{pod}-")


def test_deleting_a_gptdeployment_does_not_need_the_operator(kube: Kube, ns: str, restore_operator) -> None:
    """No finalizer: with the operator scaled to zero a delete completes at once, and the garbage collector
    removes the children through their owner references."""
    name = "gone"
    kube.apply(gptd_manifest(name, ns, _spec({"strategy": "RollingUpdate"}, 1, replicas=1)))
    obj = kube.wait_ready(ns, name, 1)
    assert not obj["metadata"].get("finalizers"), obj["metadata"].get("finalizers")
    operator(kube, "scale", "deployment/gpt-operator", "--replicas=0")
    kube.eventually(lambda: not kube.list("pods", OPERATOR_NAMESPACE, OPERATOR_PODS), "no operator pods", timeout=120)
    kube.run("delete", "gptd", name, "-n", ns, "--timeout=30s", timeout=40)
    kube.eventually(lambda: not kube.list("deployments", ns, f"{NAME_LABEL}={name}"), "children collected")
    assert kube.get("service", name, ns) is None


@pytest.mark.parametrize("point", ["after-children", "after-status"])
def test_a_promote_survives_a_crash_between_the_operators_writes(
    kube: Kube, ns: str, restore_operator, point: str
) -> None:
    """The operator exits (status 70) at `point` of a blue-green promote: after switching the Service but
    before status (the promote is done again, with the same result), or after status but before removing
    the annotation (the annotation is removed, nothing is done twice). Traffic never goes back to blue."""
    name = f"crash-{point}"
    rollout = {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False, "scaleDownDelaySeconds": 600}}
    kube.apply(gptd_manifest(name, ns, _spec(rollout, 1)))
    kube.wait_ready(ns, name, 2)
    kube.apply(gptd_manifest(name, ns, _spec(rollout, 2)))
    kube.wait_gptd(
        ns, name, lambda o: o["status"].get("phase") == "Paused" and o["status"].get("previewTrack"), "preview"
    )
    operator(kube, "set", "env", "deployment/gpt-operator", f"GPT_OPERATOR_FAILPOINT={point}")
    rolled_out(kube)
    kube.eventually(lambda: _leader_has_failpoint(kube, point), "a leader with the failpoint", timeout=120)
    crashes = restarts(kube)
    value = f"step@{time.time()}"
    kube.annotate("gptd", name, ns, PROMOTE, value)
    kube.eventually(lambda: restarts(kube) > crashes, f"the operator crashed at {point}", timeout=120)
    selectors = []
    done = kube.wait_gptd(
        ns,
        name,
        lambda o: (
            selectors.append(_selector(kube, ns, name))
            or (
                o["status"].get("activeTrack") == "green"
                and PROMOTE not in (o["metadata"].get("annotations") or {})
                and not o["status"].get("lastActions")
            )
        ),
        "promoted, annotation and record gone",
        timeout=180,
    )
    assert done["status"]["activeTrack"] == "green"  # blue stays as the preview until its scale-down delay
    assert selectors[-1] == "green"
    assert "blue" not in selectors[selectors.index("green") :], selectors  # never back to the old colour
    for _ in range(5):  # and it stays there
        time.sleep(2)
        assert _selector(kube, ns, name) == "green"


def _leader_has_failpoint(kube: Kube, point: str) -> bool:
    """Whether the Lease holder is a running pod whose environment names the failpoint (an old pod that is
    still stopping may lead for a few seconds after the rollout)."""
    holder = leader(kube) or ""
    for pod in kube.list("pods", OPERATOR_NAMESPACE, OPERATOR_PODS):
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        running = pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
        if (
            running
            and env.get("GPT_OPERATOR_FAILPOINT") == point
            and holder.startswith(f"gpt-operator@{pod['metadata']['name']}-")
        ):
            return True
    return False


def _selector(kube: Kube, ns: str, name: str) -> str | None:
    service = kube.get("service", name, ns)
    return (service or {}).get("spec", {}).get("selector", {}).get(TRACK_LABEL)
