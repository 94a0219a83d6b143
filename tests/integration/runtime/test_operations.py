"""Probes, Prometheus metrics, request ids and JSON logs, as an operator sees them."""

from __future__ import annotations

import json
import re
import socket

import pytest

from .conftest import start_runtime, stop_runtime

pytestmark = pytest.mark.integration


def test_health_and_ready(server):
    with server.client() as anon:
        health = anon.get("/health")
        assert health.json() == {"status": "ok", "revision": None, "track": None, "instance": socket.gethostname()}
        assert "x-gpt-revision" not in health.headers  # outside a GPTDeployment's pod: no revision
        ready = anon.get("/ready").json()
        assert ready["status"] == "ready"
        assert ready["checks"] == {"engine": True, "database": True, "files": True, "worker": True}
        assert ready["model"] == "fake-echo"


def test_metrics_count_requests_and_tokens(server, api):
    api.post("/generate", json={"prompt": "count me"})
    with server.client() as anon:
        text = anon.get("/metrics").text
    assert 'api_requests_total{method="POST",route="/generate",status="200"}' in text
    assert 'api_request_duration_seconds_bucket{le="0.005",method="POST",route="/generate"}' in text
    assert 'generation_tokens_total{kind="completion"}' in text
    assert 'generation_tokens_total{kind="prompt"}' in text
    for gauge in ("generation_queue_depth", "generation_running", "engine_queue_depth", "engine_running"):
        assert re.search(rf"^{gauge} \d", text, re.M), gauge
    # Route templates, not raw paths: ids never become label values.
    api.get("/conversations/abc123")
    text = server.client().get("/metrics").text
    assert 'route="/conversations/{conversation_id}"' in text
    assert "abc123" not in text


def test_request_id_is_echoed_and_logged_as_json(server, api):
    response = api.get("/auth/me", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    generated = api.get("/auth/me").headers["x-request-id"]
    assert len(generated) == 32
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry.get("request_id") == "trace-42"]
    assert access and access[0]["path"] == "/auth/me" and access[0]["status"] == 200
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)


def test_openapi_documents_the_api(server):
    with server.client() as anon:
        paths = anon.get("/openapi.json").json()["paths"]
    for path in ("/auth/signup", "/auth/login", "/conversations", "/conversations/{conversation_id}", "/generate"):
        assert path in paths


def test_a_pod_reports_its_revision_and_track(tmp_path):
    """What the operator's downward-API env gives a pod; e2e tests tell revisions apart through a Service."""
    pod = start_runtime(tmp_path, GPT_REVISION="5d8c7f9b", GPT_TRACK="canary")
    try:
        with pod.client() as anon:
            health = anon.get("/health")
            assert health.json() == {
                "status": "ok",
                "revision": "5d8c7f9b",
                "track": "canary",
                "instance": socket.gethostname(),
            }
            for response in (health, anon.get("/ready"), anon.get("/auth/me"), anon.get("/no-such-route")):
                assert response.headers["x-gpt-revision"] == "5d8c7f9b", response.request.url
            assert anon.get("/auth/me").status_code == 401
    finally:
        stop_runtime(pod)
