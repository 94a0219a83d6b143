"""manifests/samples/ on a real cluster: what a user checks with kubectl after `kubectl apply -k manifests/samples`.

The dev and test samples have shutdown schedules; they are applied with the wake-until annotation so the
suite gives the same answer at 3 am and on Sundays (test_schedule.py covers sleeping and waking).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from . import audit
from .kube import NAME_LABEL, Kube, awake_for, load_samples

pytestmark = pytest.mark.e2e

SPOT = {
    "karpenter": ("karpenter.sh/capacity-type", "spot"),
    "eks": ("eks.amazonaws.com/capacityType", "SPOT"),
    "gke": ("cloud.google.com/gke-spot", "true"),
    "aks": ("kubernetes.azure.com/scalesetpriority", "spot"),
}
ON_DEMAND = {
    "karpenter": ("karpenter.sh/capacity-type", "on-demand"),
    "eks": ("eks.amazonaws.com/capacityType", "ON_DEMAND"),
}


@dataclass(frozen=True)
class Expect:
    namespace: str
    env: str
    strategy: str
    replicas: int
    capacity: str  # spot | on-demand | spot-with-fallback
    provider: str
    deployments: tuple[str, ...]
    gpu: int = 0


EXPECT = {
    "chat-dev": Expect("gpt-dev", "dev", "RollingUpdate", 1, "spot", "karpenter", ("chat-dev",)),
    "chat-test": Expect("gpt-test", "test", "BlueGreen", 2, "spot", "karpenter", ("chat-test-blue",)),
    "chat-staging": Expect(
        "gpt-staging", "staging", "Canary", 4, "spot-with-fallback", "gke", ("chat-staging-stable",), gpu=1
    ),
    "chat": Expect("gpt-prod", "prod", "RollingUpdate", 3, "on-demand", "eks", ("chat",)),
    "chat-bg": Expect("gpt-prod", "prod", "BlueGreen", 3, "on-demand", "aks", ("chat-bg-blue",), gpu=1),
    "chat-canary": Expect("gpt-prod", "prod", "Canary", 10, "on-demand", "karpenter", ("chat-canary-stable",)),
    "chat-llamacpp": Expect("gpt-dev", "dev", "RollingUpdate", 1, "spot", "karpenter", ("chat-llamacpp",)),
}

# The prod sample reads its model from a PersistentVolumeClaim; the scheduler places its pods only once the
# claim is bound, so the suite provides one (a static PV, bound by the controller-manager's PV controller).
MODELS_VOLUME = [
    {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "e2e-models", "labels": {"gpt-operator.dev/e2e": "true"}},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": "/var/lib/e2e-models"},
            "claimRef": {"namespace": "gpt-prod", "name": "models"},
        },
    },
    {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": "gpt-prod"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": "e2e-models",
            "resources": {"requests": {"storage": "10Gi"}},
        },
    },
]


@pytest.fixture(scope="module")
def samples(kube: Kube, namespaces: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """Every sample applied (awake), with the namespaces and the claim they need."""
    docs = load_samples()
    assert {d["metadata"]["name"] for d in docs} == set(EXPECT), "samples changed: update EXPECT"
    for name in sorted({d["metadata"]["namespace"] for d in docs}):
        namespaces(name)
    kube.run("delete", "pv", "e2e-models", "--ignore-not-found", "--wait=false")
    kube.apply(MODELS_VOLUME)
    for doc in docs:
        doc["metadata"].setdefault("annotations", {}).update(awake_for())
    kube.apply(docs)
    yield {d["metadata"]["name"]: d for d in docs}
    kube.run("delete", "pv", "e2e-models", "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture(scope="module")
def ready(kube: Kube, samples: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each sample's GPTDeployment once Ready with all its replicas."""
    return {name: kube.wait_ready(e.namespace, name, e.replicas, timeout=180) for name, e in EXPECT.items()}


@pytest.mark.parametrize("name", list(EXPECT))
def test_sample_becomes_ready_with_status(kube: Kube, ready: dict[str, dict[str, Any]], name: str) -> None:
    e = EXPECT[name]
    status = ready[name]["status"]
    assert status["phase"] == "Available"
    assert status["ready"] == f"{e.replicas}/{e.replicas}"
    assert status["replicas"] == e.replicas
    assert status["capacityType"] == e.capacity
    assert status["serviceName"] == name
    for type_, want in {"Ready": "True", "Available": "True", "Degraded": "False", "Sleeping": "False"}.items():
        cond = kube.condition(ready[name], type_)
        assert cond and cond["status"] == want, (type_, cond)
    # status.selector (the scale subresource's) selects exactly the serving pods
    pods = kube.pods(e.namespace, status["selector"])
    assert len(pods) == e.replicas


def test_printer_columns(kube: Kube, ready: dict[str, dict[str, Any]]) -> None:
    lines = kube.run("get", "gptd", "-A").splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "ENV", "STRATEGY", "READY", "PHASE", "AGE"]
    rows = {(cols[0], cols[1]): cols for cols in (line.split() for line in lines[1:])}
    for name, e in EXPECT.items():
        cols = rows[(e.namespace, name)]
        assert cols[2:6] == [e.env, e.strategy, f"{e.replicas}/{e.replicas}", "Available"], cols
    wide = kube.run("get", "gptd", "chat-staging", "-n", "gpt-staging", "-o", "wide").splitlines()
    assert wide[0].split()[-2:] == ["MODEL", "CAPACITY"]
    assert wide[1].split()[-2:] == ["s3://models-bucket/gpt/smollm2-360m", "spot-with-fallback"]


@pytest.mark.parametrize("name", list(EXPECT))
def test_children_are_owned_by_the_gptdeployment(kube: Kube, ready: dict[str, dict[str, Any]], name: str) -> None:
    e = EXPECT[name]
    uid = ready[name]["metadata"]["uid"]
    selector = f"app.kubernetes.io/managed-by=gpt-operator,{NAME_LABEL}={name}"
    kinds = ["deployments", "services", "configmaps", "horizontalpodautoscalers", "poddisruptionbudgets"]
    kinds.append("networkpolicies")
    children = {kind: kube.list(kind, e.namespace, selector) for kind in kinds}
    for kind, items in children.items():
        for child in items:
            refs = child["metadata"].get("ownerReferences", [])
            assert any(
                r["kind"] == "GPTDeployment" and r["name"] == name and r["uid"] == uid and r.get("controller")
                for r in refs
            ), f"{kind}/{child['metadata']['name']} has no controller ownerReference to {name}: {refs}"
    assert {d["metadata"]["name"] for d in children["deployments"]} == set(e.deployments)
    assert name in {s["metadata"]["name"] for s in children["services"]}
    assert children["configmaps"], "no runtime ConfigMap"
    if e.env == "prod":
        (hpa,) = children["horizontalpodautoscalers"]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "serving.gpt-operator.dev/v1alpha1",
            "kind": "GPTDeployment",
            "name": name,
        }
    # A PDB in prod, and in staging on spot (node drains by spot interruption handlers go one pod at a time).
    if e.env == "prod" or (e.env == "staging" and e.capacity != "on-demand"):
        assert len(children["poddisruptionbudgets"]) == 1
    else:
        assert not children["poddisruptionbudgets"]


def test_prod_sample_has_a_service_monitor(kube: Kube, ready: dict[str, dict[str, Any]]) -> None:
    smon = kube.get("servicemonitors.monitoring.coreos.com", "chat", "gpt-prod")
    assert smon is not None, "monitoring.serviceMonitor: true but no ServiceMonitor"
    assert smon["metadata"]["ownerReferences"][0]["uid"] == ready["chat"]["metadata"]["uid"]


@pytest.mark.parametrize("name", list(EXPECT))
def test_pods_are_scheduled_by_capacity_type(kube: Kube, ready: dict[str, dict[str, Any]], name: str) -> None:
    """The real scheduler puts dev/test pods on spot nodes and prod pods on on-demand nodes of the provider."""
    e = EXPECT[name]
    nodes = kube.node_labels()
    pods = kube.pods(e.namespace, f"{NAME_LABEL}={name}")
    assert len(pods) == e.replicas
    placed = [nodes[p["spec"]["nodeName"]] for p in pods]
    spot_key, spot_value = SPOT[e.provider]
    on_spot = [labels.get(spot_key) == spot_value for labels in placed]
    if e.capacity == "spot":
        assert all(on_spot), [p["spec"]["nodeName"] for p in pods]
    elif e.capacity == "on-demand":
        assert not any(on_spot), [p["spec"]["nodeName"] for p in pods]
        if e.provider in ON_DEMAND:
            key, value = ON_DEMAND[e.provider]
            assert all(labels.get(key) == value for labels in placed)
    else:  # spot-with-fallback: spot preferred (the scheduler also spreads, so most, not necessarily all)
        assert sum(on_spot) >= math.ceil(len(pods) / 2), [p["spec"]["nodeName"] for p in pods]
    for pod in pods:
        requests = pod["spec"]["containers"][0]["resources"].get("requests", {})
        tolerations = pod["spec"].get("tolerations", [])
        if e.gpu:
            assert requests.get("nvidia.com/gpu") == str(e.gpu)
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
            assert nodes[pod["spec"]["nodeName"]].get("nvidia.com/gpu.present") == "true"
        else:
            assert "nvidia.com/gpu" not in requests


def test_blue_green_sample_serves_from_the_active_colour(kube: Kube, ready: dict[str, dict[str, Any]]) -> None:
    status = ready["chat-test"]["status"]
    assert status["activeTrack"] == "blue"
    blue = {p["status"]["podIP"] for p in kube.ready_pods("gpt-test", f"{NAME_LABEL}=chat-test")}
    assert len(blue) == 2
    kube.eventually(lambda: kube.endpoint_ips("gpt-test", "chat-test") == blue, "Service chat-test -> blue pods")
    assert kube.get("service", "chat-test-preview", "gpt-test") is not None


def test_the_operator_makes_no_writes_and_no_lists_at_rest(kube: Kube, ready: dict[str, dict[str, Any]]) -> None:
    """With the six samples Ready, a window of 10 resync ticks (2 s each) in which nobody else changes a
    GPTDeployment costs the operator no write and no LIST: children are read from the watch-fed cache and
    compared as the API server stores them. (Before: 553 PATCHes in 3 idle minutes.) The HPAs of the prod
    samples may write their scale subresource at any sync; a window with such a change is measured again.
    Positive control: deleting a child in the next window shows up as the operator's write."""
    assert os.environ.get("GPT_E2E_OPERATOR", "cluster") == "cluster", "counts the operator's service account"
    namespaces = {e.namespace for e in EXPECT.values()}
    time.sleep(6)  # the last status writes of becoming Ready
    for _ in range(4):
        start = datetime.now(UTC)
        time.sleep(20)
        end = datetime.now(UTC)
        time.sleep(2)  # the audit log is written after the response
        changes = [
            audit.describe(e)
            for e in audit.events(start, end, user=None)
            if e["verb"] in audit.WRITE_VERBS
            and (e.get("objectRef") or {}).get("resource") == "gptdeployments"
            and (e.get("objectRef") or {}).get("namespace") in namespaces
            and e["user"]["username"] != audit.OPERATOR_SA
        ]
        if not changes:
            break
    assert not changes, f"no quiet 20 s window: {changes}"
    found = audit.events(start, end)
    # writes in the samples' namespaces only: another module's GPTDeployment may still be finishing a rollout
    # (CI saw a blue-green scale-down delay of the kubectl plugin test end in this window)
    ours = [e for e in found if (e.get("objectRef") or {}).get("namespace") in namespaces]
    assert audit.writes(ours) == {}, audit.writes(ours)
    # A kind whose CRD the cluster lacks (HTTPRoute here) is looked for again once a minute: a 404, however
    # many GPTDeployments there are. Every other LIST happens once, at start.
    answered = [e for e in found if e["responseStatus"]["code"] < 400]
    assert audit.reads(answered, "list") == {}, audit.reads(found, "list")
    gets = audit.reads(found, "get")
    assert sum(n for what, n in gets.items() if "leases" not in what) == 0, gets

    kube.run("delete", "service", "chat-dev", "-n", EXPECT["chat-dev"].namespace)
    again = kube.eventually(lambda: kube.get("service", "chat-dev", EXPECT["chat-dev"].namespace), "chat-dev again")
    time.sleep(2)
    recreated = audit.writes(audit.events(end, datetime.now(UTC)))
    assert recreated[f"patch services {EXPECT['chat-dev'].namespace}/chat-dev"] >= 1, recreated
    assert again["metadata"]["ownerReferences"][0]["name"] == "chat-dev"
