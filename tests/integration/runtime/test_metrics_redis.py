"""redis_errors_total while Redis is unreachable, and the job worker's own /metrics listener."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from .conftest import free_port, start_runtime, stop_runtime
from .servers import start_redis, start_worker

pytestmark = pytest.mark.integration


def redis_errors(text: str, backend: str) -> float:
    prefix = f'redis_errors_total{{backend="{backend}"}} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_redis_errors_are_counted_while_requests_succeed_on_the_fallbacks(tmp_path):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = start_runtime(tmp_path, GPT_CACHE_URL=closed, GPT_RATELIMIT_URL=closed)
    try:
        before = server.client().get("/metrics").text
        assert redis_errors(before, "cache") == 0 and redis_errors(before, "limits") == 0
        token = server.signup_and_login()
        with server.client(token) as api:
            response = api.post("/generate", json={"prompt": "is redis there", "temperature": 0})
            assert response.status_code == 200 and response.json()["content"]
            assert "x-ratelimit-limit" in response.headers  # the limits ran, on this pod's memory
        after = server.client().get("/metrics").text
        assert redis_errors(after, "limits") >= 1
        assert redis_errors(after, "cache") >= 1
        assert "redis://" not in after  # the URL is no label
    finally:
        stop_runtime(server)


def test_the_worker_serves_metrics_on_its_own_port(tmp_path):
    (tmp_path / "redis").mkdir()
    redis_server = start_redis(tmp_path / "redis")
    port = free_port()
    env = {
        "GPT_DATABASE_URL": f"sqlite:///{tmp_path / 'gpt.db'}",
        "GPT_DATA_DIR": str(tmp_path / "data"),
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_QUEUE_URL": redis_server.url + "?queue=metrics",
        "GPT_MODEL_SOURCE": "fake:echo",
        "GPT_WORKER_METRICS_PORT": str(port),
    }
    worker = None
    try:
        worker = start_worker(tmp_path / "worker.log", env)
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                text = response.text
                break
            except httpx.TransportError:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                time.sleep(0.2)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert "jobs_total" in text and "process_resident_memory_bytes" in text
        assert 'vllm:num_requests_running{model_name="fake-echo"} 0.0' in text
        assert "job_queue_depth 0.0" in text
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(10)
        redis_server.process.kill()
