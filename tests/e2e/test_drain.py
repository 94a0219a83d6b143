"""Spot interruption on the real node: a stream in flight when its pod is deleted (as a node drain or a spot
interruption handler deletes it, with the pod's grace period) runs to its end.

The runtime uses the fake engine at one token a second (GPT_MODEL_SOURCE in spec.env overrides the ConfigMap),
so the stream is still being generated when the pod is deleted: preStop sleep (5 s), then SIGTERM, /ready 503, the
generation finishes, the server exits.
"""

from __future__ import annotations

import time
import uuid

import pytest

from .kube import NAME_LABEL, Kube, gptd_manifest
from .realpods import InClusterClient, on_real_node, real_node_name, service_url

pytestmark = pytest.mark.e2e

REPLY_TOKENS = 11  # the echo engine's "You said: Tell me a long story about a lighthouse keeper."


@pytest.fixture(scope="module")
def client(kube: Kube, ns: str, operator: None) -> InClusterClient:
    real_node_name(kube)
    return InClusterClient(kube, ns, name="drain-client").start()


def test_a_stream_in_flight_when_its_pod_is_deleted_completes(kube: Kube, ns: str, client: InClusterClient) -> None:
    name = "drained"
    spec = on_real_node(
        {
            "environment": "staging",
            "model": {"source": "builtin:tiny"},
            "replicas": 1,
            "env": [{"name": "GPT_MODEL_SOURCE", "value": "fake:echo?delay_ms=1000"}],
        }
    )
    kube.apply(gptd_manifest(name, ns, spec))
    kube.wait_ready(ns, name, 1, timeout=300)
    (pod,) = kube.ready_pods(ns, f"{NAME_LABEL}={name}")
    assert pod["spec"]["terminationGracePeriodSeconds"] == 90  # staging = spot
    url = service_url(kube, ns, name)
    signed = client.run("signup", url, f"drain-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery")
    assert signed["status"] == 200, signed
    token = signed["body"]["access_token"]

    stream = client.popen("stream", url, token, "64")
    assert stream.stderr is not None
    line = stream.stderr.readline()  # "started": the first token arrived, about 10 more to come
    assert line.strip() == "started", (line, client.finish(stream, timeout=60))
    deleted = time.monotonic()
    kube.run("delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")

    result = client.finish(stream, timeout=120)
    assert result["status"] == 200, result
    assert result["done"] and not result["broke"] and not result["error_event"], result
    assert result["chunks"] >= REPLY_TOKENS - 1, result  # every token (the first delta may carry only the role)
    assert time.monotonic() - deleted > 5, "the stream ended before the pod's SIGTERM: nothing was drained"
    kube.eventually(
        lambda: kube.get("pod", pod["metadata"]["name"], ns) is None, "the drained pod is gone", timeout=120
    )
