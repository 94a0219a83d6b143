"""Async jobs under stress, on real servers: jobs longer than their lease, queue outages, a queue that is
down at submit time, kill -9 of the API with accepted jobs, and credentials in queue URLs."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import time

import boto3
import httpx
import pytest

from .conftest import free_port, start_runtime, stop_runtime
from .servers import start_moto, start_redis, start_worker

pytestmark = pytest.mark.integration
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
UNLIMITED = {"GPT_RATE_LIMIT_FREE": "100000"}  # tests poll /jobs often
LONG = " ".join(f"w{i}" for i in range(28))  # 30 reply words at 100 ms: 3 s, three times a 1 s lease


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.process.kill()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30.0, until=("succeeded", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job stuck: {job}")


def submit(client: httpx.Client, prompt: str) -> str:
    accepted = client.post("/generate", json={"prompt": prompt, "async": True})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["job_id"]


def assert_ran_once(client: httpx.Client, job: dict, prompt: str) -> None:
    assert job["status"] == "succeeded", job
    messages = client.get(f"/conversations/{job['conversation_id']}").json()["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", prompt), ("assistant", f"You said: {prompt}")]
    assert job["attempts"] == 1, job  # never delivered again while it ran
    assert job["result"]["message_id"] == messages[-1]["id"]


def _stop(process) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(10)


def test_a_job_longer_than_its_lease_runs_once_on_redis(tmp_path, redis_server):
    env = {
        **UNLIMITED,
        "GPT_DATABASE_URL": f"sqlite:///{tmp_path / 'gpt.db'}",
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_QUEUE_URL": redis_server.url + "?queue=lease&visibility_timeout=1&max_receives=5",
        "GPT_WORKER_IN_PROCESS": "false",
        "GPT_MODEL_SOURCE": "fake:echo?delay_ms=100",
    }
    api = start_runtime(tmp_path / "api", **env)
    worker = start_worker(tmp_path / "worker.log", env, concurrency=2)  # a free slot would take a redelivery
    try:
        with api.client(api.signup_and_login()) as client:
            job = wait_job(client, submit(client, LONG))
            assert_ran_once(client, job, LONG)
    finally:
        _stop(worker)
        stop_runtime(api)


def test_a_job_longer_than_its_visibility_timeout_runs_once_on_sqs(tmp_path):
    endpoint, moto = start_moto(tmp_path / "moto.log")
    env = {
        **AWS,
        **UNLIMITED,
        "GPT_DATABASE_URL": f"sqlite:///{tmp_path / 'gpt.db'}",
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_QUEUE_URL": f"sqs://lease-jobs?endpoint_url={endpoint}&visibility_timeout=1&max_receives=5",
        "GPT_WORKER_IN_PROCESS": "false",
        "GPT_MODEL_SOURCE": "fake:echo?delay_ms=100",
    }
    api = start_runtime(tmp_path / "api", **env)
    worker = start_worker(tmp_path / "worker.log", env, concurrency=2)
    try:
        with api.client(api.signup_and_login()) as client:
            job = wait_job(client, submit(client, LONG))
            assert_ran_once(client, job, LONG)
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", **_aws_keys())
        queue_url = sqs.get_queue_url(QueueName="lease-jobs")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    finally:
        _stop(worker)
        stop_runtime(api)
        moto.terminate()
        moto.wait(10)


def _aws_keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def test_the_in_process_worker_survives_a_redis_outage_during_jobs(tmp_path, redis_server):
    api = start_runtime(
        tmp_path / "api",
        **UNLIMITED,
        GPT_QUEUE_URL=redis_server.url + "?queue=outage",
        GPT_WORKER_IN_PROCESS="true",
        GPT_MODEL_SOURCE="fake:echo?delay_ms=100",
    )
    try:
        with api.client(api.signup_and_login()) as client:
            prompts = [" ".join(f"{name}{i}" for i in range(18)) for name in ("a", "b")]  # 2 s each
            during = [submit(client, prompt) for prompt in prompts]
            for job_id in during:
                wait_job(client, job_id, until=("running",))
            redis_server.stop()  # the two jobs end while Redis is away: their acks fail
            try:
                for job_id in during:
                    assert wait_job(client, job_id)["status"] == "succeeded"
                time.sleep(1.0)
            finally:
                redis_server.start()
            later = {submit(client, f"after the outage {i}"): f"after the outage {i}" for i in range(3)}
            for job_id, prompt in later.items():
                job = wait_job(client, job_id, timeout=45)
                assert job["status"] == "succeeded", job
                assert job["result"]["content"] == f"You said: {prompt}"
            ready = httpx.get(f"{api.base_url}/ready")
            assert ready.status_code == 200 and ready.json()["checks"]["worker"] is True
    finally:
        stop_runtime(api)


def test_async_submit_with_the_queue_down_answers_503_and_writes_nothing(tmp_path):
    api = start_runtime(
        tmp_path / "api",
        GPT_QUEUE_URL=f"redis://127.0.0.1:{free_port()}/0?queue=nowhere",  # nothing listens there
        GPT_WORKER_IN_PROCESS="false",
    )
    try:
        with api.client(api.signup_and_login()) as client:
            refused = client.post("/generate", json={"prompt": "queue me", "async": True})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["type"] == "overloaded"
            assert refused.json()["error"]["code"] == "overloaded"
            assert int(refused.headers["retry-after"]) > 0
            assert client.get("/conversations").json()["items"] == []  # no empty conversation left behind
            existing = client.post("/conversations", json={"title": "kept"}).json()
            again = client.post("/generate", json={"prompt": "x", "async": True, "conversation_id": existing["id"]})
            assert again.status_code == 503
            assert [c["id"] for c in client.get("/conversations").json()["items"]] == [existing["id"]]
            assert client.get(f"/conversations/{existing['id']}").json()["messages"] == []
        with sqlite3.connect(tmp_path / "api" / "data" / "gpt.db") as db:
            assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)  # no orphan queued job
    finally:
        stop_runtime(api)


def test_accepted_jobs_survive_kill_9_of_the_runtime(tmp_path):
    """The default (embedded) queue is durable: every job answered 202 before a kill -9 runs after restart."""
    env = {
        **UNLIMITED,
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_MODEL_SOURCE": "fake:echo?delay_ms=60",
        "GPT_JOB_VISIBILITY_TIMEOUT_S": "2",
    }
    api = start_runtime(tmp_path, **env)
    token = api.signup_and_login()
    prompts = [f"job {i} " + " ".join(f"x{j}" for j in range(8)) for i in range(12)]
    with api.client(token) as client:
        accepted = [submit(client, prompt) for prompt in prompts]
    os.kill(api.process.pid, signal.SIGKILL)
    api.process.wait(10)
    restarted = start_runtime(tmp_path, **env)  # same data directory
    try:
        with restarted.client(token) as client:
            jobs = [wait_job(client, job_id, timeout=60) for job_id in accepted]
            assert [job["status"] for job in jobs] == ["succeeded"] * len(prompts)
            for job, prompt in zip(jobs, prompts, strict=True):
                messages = client.get(f"/conversations/{job['conversation_id']}").json()["messages"]
                assert [m["content"] for m in messages] == [prompt, f"You said: {prompt}"]
    finally:
        stop_runtime(restarted)


def test_worker_and_runtime_logs_hide_queue_url_credentials(tmp_path, redis_server):
    password = "s3cret-" + secrets.token_hex(4)
    queue_url = f"redis://default:{password}@127.0.0.1:{redis_server.port}/0?queue=creds"  # nopass user: accepted
    env = {
        **UNLIMITED,
        "GPT_DATABASE_URL": f"sqlite:///{tmp_path / 'gpt.db'}",
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_QUEUE_URL": queue_url,
        "GPT_CACHE_URL": f"redis://default:{password}@127.0.0.1:{free_port()}/0",  # down: its errors get logged
        "GPT_WORKER_IN_PROCESS": "false",
        "GPT_MODEL_SOURCE": "fake:echo",
    }
    worker = start_worker(tmp_path / "worker.log", env)
    api = start_runtime(tmp_path / "api", **env)
    try:
        with api.client(api.signup_and_login()) as client:
            job = wait_job(client, submit(client, "with credentials"))
            assert job["status"] == "succeeded"
        worker_log = (tmp_path / "worker.log").read_text()
        assert "worker started" in worker_log and "[REDACTED]@127.0.0.1" in worker_log
        assert password not in worker_log
        assert password not in api.logs()
    finally:
        _stop(worker)
        stop_runtime(api)


def test_a_separate_workers_writes_reach_the_apis_memory_read_cache(tmp_path, redis_server):
    """memory:// cache in the API, jobs done by another process: cached reads are checked against the store."""
    env = {
        **UNLIMITED,
        "GPT_DATABASE_URL": f"sqlite:///{tmp_path / 'gpt.db'}",
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_CACHE_URL": "memory://",
        "GPT_QUEUE_URL": redis_server.url + "?queue=stale",
        "GPT_WORKER_IN_PROCESS": "false",
        "GPT_MODEL_SOURCE": "fake:echo?delay_ms=50",
    }
    api = start_runtime(tmp_path / "api", **env)
    worker = start_worker(tmp_path / "worker.log", env)
    try:
        with api.client(api.signup_and_login()) as client:
            conversation_id = client.post("/conversations", json={"title": "t"}).json()["id"]
            client.get(f"/conversations/{conversation_id}")
            cached = client.get(f"/conversations/{conversation_id}")
            assert cached.headers["x-cache"] == "HIT" and cached.json()["messages"] == []
            listed = client.get("/conversations").json()["items"]  # cached too, message_count 0
            job_id = client.post(
                "/generate", json={"prompt": "from the worker", "async": True, "conversation_id": conversation_id}
            ).json()["job_id"]
            assert wait_job(client, job_id)["status"] == "succeeded"
            after = client.get(f"/conversations/{conversation_id}")
            assert [m["role"] for m in after.json()["messages"]] == ["user", "assistant"]
            relisted = client.get("/conversations").json()["items"]
            assert [c["message_count"] for c in listed] == [0] and [c["message_count"] for c in relisted] == [2]
            again = client.get(f"/conversations/{conversation_id}")
            assert again.headers["x-cache"] == "HIT" and again.json() == after.json()  # still cached when unchanged
    finally:
        _stop(worker)
        stop_runtime(api)
