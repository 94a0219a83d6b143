"""What the runtime image brings beyond the Python API, in a pod on the real node: the built web page (hashed
assets cached for a year, the HTML never), espeak-ng and PocketSphinx (a sentence spoken by /synthesize comes back
as words from /transcribe), and the embedding model (a conversation found by meaning, the model loaded on that
first search).

The pod gets 1536Mi: after one synthesis, one transcription (a PocketSphinx decoder, ~90 MB) and one search
(all-MiniLM-L6-v2, ~100 MB) a builtin:tiny runtime holds about 870 MiB, more than the 768Mi of the samples' pods
on this node. What this does not prove: a browser against the pod (the browser test runs on loopback), image
generation (no diffusers model ships in the image; that path is tested on loopback with a tiny pipeline).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from .kube import Kube, awake_for, gptd_manifest
from .realpods import InClusterClient, on_real_node, service_url

pytestmark = pytest.mark.e2e
NAME = "features"


@pytest.fixture
def deployment(kube: Kube, ns: str) -> Iterator[str]:
    spec = {"environment": "dev", "model": {"source": "builtin:tiny"}, "replicas": 1}
    # awake whatever the hour: dev sleeps 20:00-08:00 and weekends by default (CI at 22:00 UTC waited 300 s for it)
    kube.apply(gptd_manifest(NAME, ns, on_real_node(spec, {"cpu": "100m", "memory": "1536Mi"}), awake_for()))
    kube.wait_ready(ns, NAME, 1, timeout=300)
    yield service_url(kube, ns, NAME)
    kube.run("delete", "gptd", NAME, "-n", ns, "--wait=false", check=False)


def test_the_runtime_image_serves_the_web_page_speech_and_search(client: InClusterClient, deployment: str) -> None:
    out = client.run("features", deployment, f"features-{uuid.uuid4().hex[:8]}@example.com", "pw-features-1",
                     timeout=400)  # fmt: skip
    assert out["page"]["status"] == 200 and out["page"]["type"].startswith("text/html"), out["page"]
    assert "no-cache" in out["page"]["cache"] and out["page"]["asset"].startswith("/assets/"), out["page"]
    assert out["asset"]["status"] == 200 and "javascript" in out["asset"]["type"], out["asset"]
    assert "immutable" in out["asset"]["cache"] and out["asset"]["bytes"] > 10_000, out["asset"]
    assert out["synthesize"] == {**out["synthesize"], "status": 200, "type": "audio/wav", "riff": True}
    assert out["transcribe"]["status"] == 200, out["transcribe"]
    heard = set(out["transcribe"]["body"]["text"].split())  # "i would like a cup of coffee", said by espeak-ng
    assert len(heard & {"i", "would", "like", "a", "cup", "of", "coffee"}) >= 5, out["transcribe"]
    assert out["search"]["status"] == 200, out["search"]
    assert out["search"]["body"]["results"][0]["title"].startswith("How do I bake sourdough"), out["search"]
