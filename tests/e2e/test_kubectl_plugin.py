"""`kubectl gptd`, found by kubectl as a plugin on PATH, driving a blue-green rollout on a real API server."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .kube import GROUP, Kube, gptd_manifest

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
    path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(kube.kubectl).parent), os.environ["PATH"]])
    old = os.environ["PATH"]
    os.environ["PATH"] = path
    try:
        return kube.run("gptd", *args)
    finally:
        os.environ["PATH"] = old


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
