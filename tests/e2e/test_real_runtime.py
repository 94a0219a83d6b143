"""The runtime image on a real kubelet, behind the operator's probes (kind only: hack/kind-e2e.sh sets
GPT_E2E_RUNTIME_IMAGE and GPT_E2E_REAL_NODE; the local control plane has only kwok's fake nodes)."""

from __future__ import annotations

import os

import pytest

from .kube import NAME_LABEL, Kube, gptd_manifest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (os.environ.get("GPT_E2E_RUNTIME_IMAGE") and os.environ.get("GPT_E2E_REAL_NODE")),
        reason="needs a real node and the runtime image (hack/kind-e2e.sh sets them)",
    ),
]


def test_runtime_pod_becomes_ready_and_answers(kube: Kube, ns: str) -> None:
    spec = {
        "environment": "staging",
        "model": {"source": "builtin:tiny"},
        "image": os.environ["GPT_E2E_RUNTIME_IMAGE"],
        "imagePullPolicy": "IfNotPresent",
        "replicas": 1,
        "resources": {"cpu": "500m", "memory": "1Gi"},
        # preferred (not required) spot placement, pinned to the real node by an extra selector
        "capacity": {
            "type": "spot-with-fallback",
            "nodeSelector": {"kubernetes.io/hostname": os.environ["GPT_E2E_REAL_NODE"]},
        },
    }
    kube.apply(gptd_manifest("real", ns, spec))
    kube.wait_ready(ns, "real", 1, timeout=300)  # Ready = the runtime's /ready probe passed
    (pod,) = kube.ready_pods(ns, f"{NAME_LABEL}=real")
    assert pod["spec"]["nodeName"] == os.environ["GPT_E2E_REAL_NODE"]
    probe = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/health').status)"
    out = kube.run("exec", "-n", ns, pod["metadata"]["name"], "--", "python", "-c", probe)
    assert out.strip() == "200"
