"""The waiting room in front of the engine, and async jobs on the embedded (memory) queue."""

from __future__ import annotations

import threading
import time

import pytest

from .conftest import start_runtime, stop_runtime

pytestmark = pytest.mark.integration
LONG = " ".join(f"w{i}" for i in range(40))  # ~40 tokens at 25 ms: about a second of generation


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """One generation at a time, one waiting, waits up to 0.6 s."""
    runtime = start_runtime(
        tmp_path_factory.mktemp("narrow"),
        GPT_MODEL_SOURCE="fake:echo?delay_ms=25",
        GPT_MAX_CONCURRENT_GENERATIONS="1",
        GPT_MAX_WAITING_GENERATIONS="1",
        GPT_QUEUE_TIMEOUT_S="0.6",
        GPT_ADMIN_EMAILS="vip@example.com",
    )
    yield runtime
    stop_runtime(runtime)


def in_threads(calls):
    results = [None] * len(calls)

    def run(i, call):
        results[i] = call()

    threads = []
    for i, call in enumerate(calls):
        threads.append(threading.Thread(target=run, args=(i, call)))
        threads[-1].start()
        time.sleep(0.15)  # a definite arrival order
    for thread in threads:
        thread.join(30)
    return results


def test_a_full_waiting_room_answers_503_with_retry_after(narrow):
    token = narrow.signup_and_login()

    def generate():
        with narrow.client(token) as api:
            return api.post("/generate", json={"prompt": LONG})

    first, second, third = in_threads([generate, generate, generate])
    assert first.status_code == 200
    assert third.status_code == 503
    assert third.json()["error"]["type"] == "overloaded" and third.json()["error"]["code"] == "queue_full"
    assert third.headers["retry-after"]
    # The second waited its turn, or gave up after the wait timeout: never a 5xx other than 503.
    assert second.status_code in (200, 503)
    if second.status_code == 503:
        assert second.json()["error"]["code"] == "queue_timeout"


def test_higher_tiers_are_served_first(tmp_path):
    server = start_runtime(
        tmp_path,
        GPT_MODEL_SOURCE="fake:echo?delay_ms=25",
        GPT_MAX_CONCURRENT_GENERATIONS="1",
        GPT_QUEUE_TIMEOUT_S="20",
        GPT_ADMIN_EMAILS="vip@example.com",
    )
    try:
        free, vip = server.signup_and_login(), server.signup_and_login("vip@example.com", verify=True)
        finished: list[str] = []

        def generate(token, name, prompt):
            def call():
                with server.client(token) as api:
                    response = api.post("/generate", json={"prompt": prompt})
                finished.append(name)
                return response

            return call

        # A long request holds the only slot; a free user queues first, an admin second.
        results = in_threads([generate(free, "hold", LONG), generate(free, "free", "a b"), generate(vip, "vip", "a b")])
        assert [r.status_code for r in results] == [200, 200, 200]
        assert finished == ["hold", "vip", "free"]
    finally:
        stop_runtime(server)


def test_async_generation_returns_a_job_that_completes(narrow):
    token = narrow.signup_and_login()
    with narrow.client(token) as api:
        accepted = api.post("/generate", json={"prompt": "later please", "async": True})
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status"] == "queued" and accepted.headers["location"] == f"/jobs/{body['job_id']}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = api.get(body["location"]).json()
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        assert job["result"]["content"] == "You said: later please"
        assert job["result"]["usage"]["completion_tokens"] == 4
        conversation = api.get(f"/conversations/{job['conversation_id']}").json()
        assert [m["content"] for m in conversation["messages"]] == ["later please", "You said: later please"]
        assert conversation["messages"][1]["id"] == job["result"]["message_id"]
    with narrow.client(narrow.signup_and_login()) as other:
        assert other.get(body["location"]).status_code == 404


def test_async_requests_are_validated_before_they_are_queued(narrow):
    with narrow.client(narrow.signup_and_login()) as api:
        missing = api.post("/generate", json={"prompt": "x", "async": True, "conversation_id": "nope"})
        assert missing.status_code == 404
        both = api.post("/generate", json={"prompt": "x", "async": True, "stream": True})
        assert both.status_code == 400 and both.json()["error"]["param"] == "stream"
        assert api.get("/jobs/unknown").status_code == 404
