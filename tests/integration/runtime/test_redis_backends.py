"""Two runtime pods sharing a real redis-server: shared limits and cache, Redis failures, reliable jobs."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from .conftest import start_runtime, stop_runtime
from .servers import start_redis, start_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.process.kill()


@pytest.fixture(scope="module")
def pods(tmp_path_factory, redis_server):
    """Two API processes on one database and one Redis, as two pods of a deployment."""
    shared = tmp_path_factory.mktemp("shared")
    env = {
        "GPT_DATABASE_URL": f"sqlite:///{shared / 'gpt.db'}",
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_CACHE_URL": redis_server.url,
        "GPT_RATELIMIT_URL": redis_server.url,
        "GPT_QUEUE_URL": redis_server.url + "?queue=pods",
        "GPT_WORKER_IN_PROCESS": "true",
        "GPT_RATE_LIMIT_FREE": "8",
    }
    first = start_runtime(tmp_path_factory.mktemp("pod-a"), **env)
    second = start_runtime(tmp_path_factory.mktemp("pod-b"), **env)
    yield first, second
    stop_runtime(first)
    stop_runtime(second)


def test_rate_limits_are_shared_by_all_pods(pods):
    a, b = pods
    token = a.signup_and_login()
    with a.client(token) as on_a, b.client(token) as on_b:
        statuses = [client.get("/auth/me").status_code for client in (on_a, on_b) * 4]
        assert statuses == [200] * 8
        refused = on_a.get("/auth/me")
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "requests"


def test_the_response_cache_and_list_invalidation_are_shared(pods):
    a, b = pods
    token = a.signup_and_login()
    request = {"prompt": "shared across pods", "temperature": 0}
    with a.client(token) as on_a, b.client(token) as on_b:
        assert on_a.post("/generate", json=request).headers["x-cache"] == "MISS"
        assert on_b.post("/generate", json=request).headers["x-cache"] == "HIT"
        before = on_b.get("/conversations").json()["items"]  # now cached on pod b
        created = on_a.post("/conversations", json={"title": "made on a"}).json()
        after = on_b.get("/conversations").json()["items"]
    assert created["id"] not in [c["id"] for c in before]
    assert after[0]["id"] == created["id"]


def test_redis_down_degrades_without_errors(pods, redis_server):
    a, _ = pods
    token = a.signup_and_login()
    with a.client(token) as api:
        assert api.post("/generate", json={"prompt": "before the outage"}).status_code == 200
        redis_server.stop()
        try:
            statuses = []
            for i in range(5):
                response = api.post("/generate", json={"prompt": f"during the outage {i}", "temperature": 0})
                statuses.append(response.status_code)
                assert "x-ratelimit-limit" in response.headers  # limits fall back to this pod
            listed = api.get("/conversations")
            assert listed.status_code == 200 and len(listed.json()["items"]) == 6
            assert statuses == [200] * 5
            assert a.client().get("/ready").status_code == 200
        finally:
            redis_server.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # after the breaker's cooldown Redis is used again
            if api.post("/generate", json={"prompt": "after", "temperature": 0}).headers["x-cache"] == "HIT":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the cache did not come back after Redis restarted")


def _wait_job(client, job_id, timeout=30.0, until=("succeeded", "failed")):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job stuck: {job}")


@pytest.fixture
def job_api(tmp_path, redis_server):
    """An API that only queues (no in-process worker), and the env its workers share."""
    env = {
        "GPT_DATABASE_URL": f"sqlite:///{tmp_path / 'gpt.db'}",
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_QUEUE_URL": redis_server.url + "?queue=work&visibility_timeout=2&max_receives=2",
        "GPT_WORKER_IN_PROCESS": "false",
        "GPT_MODEL_SOURCE": "fake:echo?delay_ms=100",
        "GPT_RATE_LIMIT_FREE": "10000",
    }
    api = start_runtime(tmp_path / "api", **env)
    yield api, env
    stop_runtime(api)


def test_a_job_whose_worker_dies_completes_on_another(job_api, tmp_path):
    api, env = job_api
    first = start_worker(tmp_path / "worker1.log", env)
    second = None
    try:
        with api.client(api.signup_and_login()) as client:
            words = " ".join(f"w{i}" for i in range(30))  # ~3 s of generation
            job_id = client.post("/generate", json={"prompt": words, "async": True}).json()["job_id"]
            _wait_job(client, job_id, until=("running",))
            first.kill()  # SIGKILL mid-generation: no cleanup, no ack
            first.wait(5)
            second = start_worker(tmp_path / "worker2.log", env)
            job = _wait_job(client, job_id, timeout=40)
            assert job["status"] == "succeeded"
            assert job["attempts"] == 2
            assert job["result"]["content"] == f"You said: {words}"
            messages = client.get(f"/conversations/{job['conversation_id']}").json()["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant"]  # nothing duplicated by the retry
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)


def test_a_poison_message_ends_in_the_dead_letter_list(job_api, tmp_path, redis_server):
    _, env = job_api
    client = redis_server.client()
    client.lpush("gpt:queue:{work}:pending", json.dumps({"id": "poison-1", "body": "{not json"}))
    worker = start_worker(tmp_path / "worker.log", env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not client.llen("gpt:queue:{work}:dead"):
            time.sleep(0.1)
        dead = [json.loads(raw) for raw in client.lrange("gpt:queue:{work}:dead", 0, -1)]
        assert [d["id"] for d in dead] == ["poison-1"]
        assert client.llen("gpt:queue:{work}:pending") == 0
        assert client.llen("gpt:queue:{work}:processing") == 0
        assert worker.poll() is None  # the worker survived it
    finally:
        worker.terminate()
        worker.wait(10)
