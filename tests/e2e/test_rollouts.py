"""Blue-green and canary rollouts, driven the way a user drives them: change the spec, then
`kubectl annotate gptd NAME serving.gpt-operator.dev/promote=true` (or `abort=true`), and watch which pods
the Service `<name>` sends traffic to (its EndpointSlices, kept by the controller-manager)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from typing import Any

import pytest

from .kube import ABORT, NAME_LABEL, PROMOTE, REVISION_LABEL, TRACK_LABEL, Kube, KubectlError, gptd_manifest

pytestmark = pytest.mark.e2e


def _spec(replicas: int, rollout: dict[str, Any], revision: int) -> dict[str, Any]:
    # staging: no default schedule; the env var is the "new version" that makes a new revision
    return {
        "environment": "staging",
        "model": {"source": "builtin:tiny"},
        "replicas": replicas,
        "env": [{"name": "E2E_REVISION", "value": str(revision)}],
        "rollout": rollout,
    }


def _ips(kube: Kube, ns: str, name: str, track: str) -> set[str]:
    return {p["status"]["podIP"] for p in kube.ready_pods(ns, f"{NAME_LABEL}={name},{TRACK_LABEL}={track}")}


def _serves(kube: Kube, ns: str, service: str, ips: set[str], what: str) -> None:
    assert ips, f"no ready pods for {what}"
    kube.eventually(lambda: kube.endpoint_ips(ns, service) == ips, f"Service {service} -> {what}")


def _annotation_consumed(kube: Kube, ns: str, name: str, key: str) -> None:
    kube.wait_gptd(ns, name, lambda o: key not in (o["metadata"].get("annotations") or {}), f"{key} consumed")


def test_blue_green_promote_switches_the_service_and_abort_switches_back(kube: Kube, ns: str) -> None:
    name = "bg"
    rollout = {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False, "scaleDownDelaySeconds": 600}}
    kube.apply(gptd_manifest(name, ns, _spec(2, rollout, 1)))
    first = kube.wait_ready(ns, name, 2)
    assert first["status"]["activeTrack"] == "blue"
    blue = _ips(kube, ns, name, "blue")
    assert len(blue) == 2
    _serves(kube, ns, name, blue, "the blue pods")

    # A new revision goes to the inactive colour; the active Service does not move until promoted.
    kube.apply(gptd_manifest(name, ns, _spec(2, rollout, 2)))
    kube.wait_gptd(
        ns,
        name,
        lambda o: o["status"].get("previewTrack") == "green" and o["status"].get("phase") == "Paused",
        "green preview ready and waiting for promotion",
    )
    green = kube.eventually(lambda: (ips := _ips(kube, ns, name, "green")) and len(ips) == 2 and ips, "2 green pods")
    _serves(kube, ns, f"{name}-preview", green, "the green (preview) pods")
    assert kube.endpoint_ips(ns, name) == blue

    kube.annotate("gptd", name, ns, PROMOTE, "true")
    kube.wait_gptd(ns, name, lambda o: o["status"].get("activeTrack") == "green", "green active")
    _serves(kube, ns, name, green, "the green pods after promotion")
    _annotation_consumed(kube, ns, name, PROMOTE)
    # the old colour lingers for scaleDownDelaySeconds, ready to take traffic back
    assert _ips(kube, ns, name, "blue") == blue

    kube.annotate("gptd", name, ns, ABORT, "true")
    aborted = kube.wait_gptd(ns, name, lambda o: o["status"].get("activeTrack") == "blue", "rolled back to blue")
    _serves(kube, ns, name, blue, "the blue pods after abort")
    _annotation_consumed(kube, ns, name, ABORT)
    degraded = kube.condition(aborted, "Degraded")
    assert degraded and degraded["status"] == "True" and degraded["reason"] == "RolloutAborted", degraded
    assert kube.gptd(ns, name)["status"]["phase"] == "Degraded"


def _track_sizes(kube: Kube, ns: str, name: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for pod in kube.ready_pods(ns, f"{NAME_LABEL}={name}"):
        track = pod["metadata"]["labels"][TRACK_LABEL]
        sizes[track] = sizes.get(track, 0) + 1
    return sizes


def test_canary_steps_move_the_replica_ratio(kube: Kube, ns: str) -> None:
    name = "can"
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    rollout = {"strategy": "Canary", "canary": {"steps": steps}}
    kube.apply(gptd_manifest(name, ns, _spec(10, rollout, 1)))
    kube.wait_ready(ns, name, 10)
    kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 10}, "10 stable pods")
    old = kube.gptd(ns, name)["status"]["stableRevision"]

    kube.apply(gptd_manifest(name, ns, _spec(10, rollout, 2)))
    kube.wait_gptd(
        ns,
        name,
        lambda o: o["status"].get("canaryWeight") == 20 and o["status"].get("phase") == "Paused",
        "paused at 20%",
    )
    kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 8, "canary": 2}, "8 stable + 2 canary pods")
    every_pod = {p["status"]["podIP"] for p in kube.ready_pods(ns, f"{NAME_LABEL}={name}")}
    _serves(kube, ns, name, every_pod, "stable and canary pods by replica ratio")

    kube.annotate("gptd", name, ns, PROMOTE, "true")
    kube.wait_gptd(
        ns,
        name,
        lambda o: o["status"].get("canaryWeight") == 50 and o["status"].get("phase") == "Paused",
        "paused at 50%",
    )
    kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 5, "canary": 5}, "5 stable + 5 canary pods")

    kube.annotate("gptd", name, ns, PROMOTE, "full")
    done = kube.wait_ready(ns, name, 10)
    new = done["status"]["stableRevision"]
    assert new != old and done["status"]["updateRevision"] == new
    kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 10}, "canary folded into stable")
    revisions = {p["metadata"]["labels"].get(REVISION_LABEL) for p in kube.pods(ns, f"{NAME_LABEL}={name}")}
    assert revisions == {new}

    # a third revision, aborted at its first step: every pod back on the stable revision
    kube.apply(gptd_manifest(name, ns, _spec(10, rollout, 3)))
    kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 8, "canary": 2}, "third revision at 20%")
    kube.annotate("gptd", name, ns, ABORT, "true")
    kube.wait_gptd(ns, name, lambda o: o["status"].get("phase") == "Degraded", "aborted (Degraded)")
    kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 10}, "all traffic back on stable")
    revisions = {p["metadata"]["labels"].get(REVISION_LABEL) for p in kube.pods(ns, f"{NAME_LABEL}={name}")}
    assert revisions == {new}


def test_canary_full_promotion_never_runs_more_than_the_full_count_plus_the_canary(kube: Kube, ns: str) -> None:
    """4 replicas at 50% (2 stable + 2 canary), promoted in full: the pod count, sampled every 0.5 s, stays at
    or below 4 + 2. Changing the stable track's template and size in one write made the Deployment controller
    scale the old ReplicaSet from 2 to 4 first and surge a new pod on top: 4 + 1 + 2 = 7."""
    name = "peak"
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    kube.apply(gptd_manifest(name, ns, _spec(4, rollout, 1)))
    kube.wait_ready(ns, name, 4)
    old = kube.gptd(ns, name)["status"]["stableRevision"]
    kube.apply(gptd_manifest(name, ns, _spec(4, rollout, 2)))
    kube.wait_gptd(
        ns,
        name,
        lambda o: o["status"].get("canaryWeight") == 50 and o["status"].get("phase") == "Paused",
        "paused at 50%",
    )
    kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 2, "canary": 2}, "2 stable + 2 canary pods")

    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:  # pods not being deleted: what the Deployment controller asked for
        while not stop.is_set():
            with contextlib.suppress(KubectlError, subprocess.TimeoutExpired):
                samples.append(len(kube.pods(ns, f"{NAME_LABEL}={name}")))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, name="pod-count", daemon=True)
    sampler.start()
    try:
        kube.annotate("gptd", name, ns, PROMOTE, "full")
        done = kube.wait_ready(ns, name, 4)
        kube.eventually(lambda: _track_sizes(kube, ns, name) == {"stable": 4}, "canary folded into stable")
        kube.eventually(lambda: len(kube.pods(ns, f"{NAME_LABEL}={name}")) == 4, "4 pods left")
    finally:
        stop.set()
        sampler.join(timeout=10)
    assert done["status"]["stableRevision"] not in (None, old)
    assert len(samples) >= 4, samples
    assert max(samples) <= 4 + 2, f"peak {max(samples)} pods; samples every 0.5 s: {samples}"
