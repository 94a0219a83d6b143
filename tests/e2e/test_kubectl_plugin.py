"""`kubectl gptd`, found by kubectl as a plugin on PATH, driving blue-green and canary rollouts of real pods.

retry, undo and the history they read need this checkout's operator (GPT_E2E_OPERATOR=local until the image
on the node is rebuilt)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .kube import GROUP, NAME_LABEL, Kube, gptd_manifest

pytestmark = pytest.mark.e2e
ROLLOUT = {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False, "scaleDownDelaySeconds": 600}}


def _spec(revision: int) -> dict:
    return {
        "environment": "staging",
        "model": {"source": "builtin:tiny"},
        "replicas": 1,
        "env": [{"name": "E2E_REVISION", "value": str(revision)}],
        "rollout": ROLLOUT,
    }


def plugin(kube: Kube, *args: str) -> str:
    """`kubectl gptd ARGS`: kubectl itself finds kubectl-gptd (installed with the project) on PATH."""
    result = plugin_attempt(kube, *args)
    assert result.returncode == 0, f"kubectl gptd {' '.join(args)} failed ({result.returncode}): {result.stderr}"
    return result.stdout


def plugin_attempt(kube: Kube, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`kubectl gptd ARGS` whether or not it fails."""
    path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(kube.kubectl).parent), os.environ["PATH"]])
    return subprocess.run(
        [kube.kubectl, "gptd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PATH": path},
    )


def served_revisions(kube: Kube, ns: str, name: str) -> set[str]:
    """The revisions of the pods behind Service NAME's ready endpoints: what users are answered by."""
    ips = kube.endpoint_ips(ns, name)
    pods = kube.pods(ns, f"{NAME_LABEL}={name}")
    return {p["metadata"]["labels"][f"{GROUP}/revision"] for p in pods if p.get("status", {}).get("podIP") in ips}


def test_plugin_promotes_pauses_resumes_and_wakes(kube: Kube, ns: str) -> None:
    name = "plug"
    kube.apply(gptd_manifest(name, ns, _spec(1)))
    kube.wait_ready(ns, name, 1)
    kube.apply(gptd_manifest(name, ns, _spec(2)))
    kube.wait_gptd(ns, name, lambda o: o["status"].get("previewTrack") == "green", "green preview waiting")

    status = plugin(kube, "status", name, "-n", ns)
    assert "strategy:    BlueGreen" in status and "preview:     green" in status

    plugin(kube, "promote", name, "-n", ns)
    kube.wait_gptd(ns, name, lambda o: o["status"].get("activeTrack") == "green", "green active after promote")

    plugin(kube, "pause", name, "-n", ns)
    assert kube.gptd(ns, name)["metadata"]["annotations"][f"{GROUP}/paused"] == "true"
    plugin(kube, "resume", name, "-n", ns)
    assert f"{GROUP}/paused" not in (kube.gptd(ns, name)["metadata"].get("annotations") or {})

    plugin(kube, "wake", name, "-n", ns, "--for", "90m")
    until = kube.gptd(ns, name)["metadata"]["annotations"][f"{GROUP}/wake-until"]
    expected = datetime.now(UTC) + timedelta(minutes=90)
    assert abs(datetime.fromisoformat(until.replace("Z", "+00:00")) - expected) < timedelta(minutes=2)


def test_plugin_lists_retries_an_abort_and_undoes_to_the_previous_revision(kube: Kube, ns: str) -> None:
    name = "plug-undo"
    kube.apply(gptd_manifest(name, ns, _spec(1)))
    first = kube.wait_ready(ns, name, 1)["status"]["stableRevision"]
    kube.eventually(lambda: served_revisions(kube, ns, name) == {first}, "revision 1 served")

    rows = [line.split() for line in plugin(kube, "list", "-n", ns).splitlines()]
    assert rows[0] == ["NAME", "ENV", "STRATEGY", "PHASE", "READY", "CANARY/STEP", "AGE"]
    assert [name, "staging", "BlueGreen", "Available", "1/1", "-"] in [row[:6] for row in rows]
    everywhere = [line.split() for line in plugin(kube, "list", "-A").splitlines()]
    assert everywhere[0][0] == "NAMESPACE" and [ns, name] in [row[:2] for row in everywhere]

    # retry: the aborted revision starts again on the preview colour, without a spec change
    kube.apply(gptd_manifest(name, ns, _spec(2)))
    previewed = kube.wait_gptd(ns, name, lambda o: o["status"].get("phase") == "Paused", "preview ready, waiting")
    second = previewed["status"]["updateRevision"]
    plugin(kube, "abort", name, "-n", ns)
    kube.wait_gptd(ns, name, lambda o: o["status"].get("abortedRevision") == second, "revision 2 aborted")
    kube.eventually(lambda: not kube.pods(ns, f"{NAME_LABEL}={name},{GROUP}/track=green"), "the preview's pods gone")
    assert "annotated" in plugin(kube, "retry", name, "-n", ns)
    kube.wait_gptd(
        ns,
        name,
        lambda o: not o["status"].get("abortedRevision") and o["status"].get("phase") == "Paused",
        "revision 2 previewed again",
    )
    preview = kube.ready_pods(ns, f"{NAME_LABEL}={name},{GROUP}/track=green")
    assert preview and {p["metadata"]["labels"][f"{GROUP}/revision"] for p in preview} == {second}
    refused = plugin_attempt(kube, "retry", name, "-n", ns)
    assert refused.returncode == 1 and "no aborted rollout to retry" in refused.stderr
    plugin(kube, "promote", name, "-n", ns)
    kube.eventually(lambda: served_revisions(kube, ns, name) == {second}, "revision 2 served")
    history = kube.wait_gptd(ns, name, lambda o: len(o["status"].get("history") or []) == 2, "2 revisions in history")
    assert [e["revision"] for e in history["status"]["history"]] == [second, first]

    # undo: the spec goes back to revision 1's fields; a blue-green rollout previews it, a promote serves it
    out = plugin(kube, "undo", name, "-n", ns)
    assert f"spec back at revision 1 ({first})" in out
    spec = kube.gptd(ns, name)["spec"]
    assert spec["env"] == [{"name": "E2E_REVISION", "value": "1"}]  # revision 1's field
    assert spec["rollout"]["blueGreen"]["scaleDownDelaySeconds"] == 600  # not a revision field: as it was
    kube.wait_gptd(ns, name, lambda o: o["status"].get("updateRevision") == first, "undo's revision rolling out")
    plugin(kube, "promote", name, "-n", ns)
    kube.eventually(lambda: served_revisions(kube, ns, name) == {first}, "revision 1 served again")
    nothing = plugin_attempt(kube, "undo", name, "-n", ns, "--to-revision", "3")
    assert nothing.returncode == 1 and "already runs revision 3" in nothing.stderr


def test_status_watch_shows_the_canary_steps_and_ends_at_the_phase(kube: Kube, ns: str) -> None:
    name = "plug-watch"
    # each timed pause holds a frame for 3 s, so a watch polling every second sees both steps
    steps = [{"setWeight": 25}, {"pause": {"duration": 3}}, {"setWeight": 50}, {"pause": {"duration": 3}}]
    spec = {**_spec(1), "replicas": 2, "rollout": {"strategy": "Canary", "canary": {"steps": steps}}}
    kube.apply(gptd_manifest(name, ns, spec))
    kube.wait_ready(ns, name, 2)
    kube.apply(gptd_manifest(name, ns, {**spec, "env": [{"name": "E2E_REVISION", "value": "2"}]}))
    watched = plugin_attempt(
        kube, "status", name, "-n", ns, "--watch", "--until", "Available", "--timeout", "240s", timeout=260
    )
    assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr
    frames = [f"name:        {frame}" for frame in watched.stdout.split("name:        ")[1:]]
    first_pause = [f for f in frames if "step:        1" in f and "canary:      25%" in f]
    second_pause = [f for f in frames if "step:        3" in f and "canary:      50%" in f]
    assert first_pause and second_pause, watched.stdout
    # the canary's pod is drawn under its track, with its traffic share
    assert "  canary   25% of traffic" in first_pause[-1] and f"{name}-canary-" in first_pause[-1]
    last = frames[-1].splitlines()
    assert "phase:       Available" in last
    assert "100% of traffic" in next(line for line in last if line.startswith("  stable"))
    history = kube.wait_gptd(ns, name, lambda o: len(o["status"].get("history") or []) == 2, "2 stable revisions")
    # at rest the status, history included, is not written again (the operator resyncs every few seconds)
    for _ in range(4):
        before = kube.gptd(ns, name)["metadata"]["resourceVersion"]
        time.sleep(6)
        if kube.gptd(ns, name)["metadata"]["resourceVersion"] == before:
            break
    else:
        raise AssertionError(f"the GPTDeployment was written in every 6 s window: {kube.gptd(ns, name)['status']}")
    assert kube.gptd(ns, name)["status"]["history"] == history["status"]["history"]
    timed_out = plugin_attempt(kube, "status", name, "-n", ns, "--watch", "--until", "Sleeping", "--timeout", "3s")
    assert timed_out.returncode == 1 and "timed out after 3s waiting for phase Sleeping" in timed_out.stdout
