"""The runtime's LLM metrics (vLLM's names), auth events and process metrics, scraped from a real runtime."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from .conftest import RuntimeServer, Samples, metric_samples, start_runtime, stop_runtime
from .conftest import metric_value as value
from .wsclient import ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration
MODEL = "fake-echo"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """A runtime of its own, so every counter starts at zero."""
    server = start_runtime(tmp_path_factory.mktemp("metrics"), GPT_MODEL_SOURCE="fake:echo?delay_ms=5")
    yield server
    stop_runtime(server)


def scrape(server: RuntimeServer) -> Samples:
    """Every sample of the runtime's GET /metrics."""
    with server.client() as client:
        return metric_samples(client.get("/metrics").text)


def sse_usage(lines: list[str]) -> dict:
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    return next(chunk["usage"] for chunk in chunks if chunk.get("usage"))


def _text(chunk: dict) -> str:
    return "".join(choice.get("delta", {}).get("content") or "" for choice in chunk.get("choices", []))


def test_generations_auth_and_process_metrics(runtime: RuntimeServer):
    email, password = f"m-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
    usages = []
    with runtime.client() as anon:
        assert anon.post("/auth/signup", json={"email": email, "password": password}).status_code == 201
        assert anon.post("/auth/login", json={"email": email, "password": "wrong password!"}).status_code == 401
        login = anon.post("/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200
        token = login.json()["access_token"]
        assert anon.get("/auth/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        assert anon.get("/auth/me", headers={"Authorization": "Bearer sk-gpt-" + "0" * 40}).status_code == 401
    with runtime.client(token) as api:
        for prompt in ("one two three four", "five six seven"):
            response = api.post("/generate", json={"prompt": prompt})
            assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
            usages.append(response.json()["usage"])
        with api.stream("POST", "/generate", json={"prompt": "eight nine ten eleven twelve", "stream": True}) as sse:
            assert sse.status_code == 200
            usages.append(sse_usage(list(sse.iter_lines())))

    samples = scrape(runtime)
    generations = len(usages)
    prompt_tokens = sum(u["prompt_tokens"] for u in usages)
    completion_tokens = sum(u["completion_tokens"] for u in usages)
    assert completion_tokens > generations  # several tokens each: the inter-token gaps below are not vacuous
    assert value(samples, "vllm:time_to_first_token_seconds_count", model_name=MODEL) == generations
    assert value(samples, "vllm:e2e_request_latency_seconds_count", model_name=MODEL) == generations
    # the fake engine sends one token per piece of text: one gap between each two consecutive tokens
    assert value(samples, "vllm:inter_token_latency_seconds_count", model_name=MODEL) == completion_tokens - generations
    ttft_sum = value(samples, "vllm:time_to_first_token_seconds_sum", model_name=MODEL)
    e2e_sum = value(samples, "vllm:e2e_request_latency_seconds_sum", model_name=MODEL)
    assert ttft_sum is not None and e2e_sum is not None and 0 < ttft_sum < e2e_sum
    # vLLM's buckets, not prometheus_client's defaults
    assert value(samples, "vllm:time_to_first_token_seconds_bucket", model_name=MODEL, le="2560.0") == generations
    assert value(samples, "vllm:e2e_request_latency_seconds_bucket", model_name=MODEL, le="7680.0") == generations

    assert value(samples, "vllm:prompt_tokens_total", model_name=MODEL) == prompt_tokens
    assert value(samples, "vllm:generation_tokens_total", model_name=MODEL) == completion_tokens
    assert value(samples, "generation_tokens_total", kind="prompt") == prompt_tokens
    assert value(samples, "generation_tokens_total", kind="completion") == completion_tokens

    assert value(samples, "vllm:num_requests_running", model_name=MODEL) == 0
    assert value(samples, "vllm:num_requests_waiting", model_name=MODEL) == 0
    assert value(samples, "vllm:kv_cache_usage_perc", model_name=MODEL) == 0  # the fake engine has no KV cache
    assert value(samples, "job_queue_depth") == 0  # the embedded SQLite queue, empty

    for event, count in {
        "signup": 1, "login": 1, "login_failed": 1, "token_rejected": 1, "api_key_rejected": 1
    }.items():  # fmt: skip
        assert value(samples, "auth_events_total", event=event) == count, event
    assert value(samples, "auth_events_total", event="password_reset") == 0  # present from the start, at 0
    labels = {dict(key[1]).get("event") for key in samples if key[0] == "auth_events_total"}
    assert email not in str(samples) and labels == {"signup", "login", "login_failed", "token_rejected",
                                                      "api_key_rejected", "password_reset"}  # fmt: skip

    assert (value(samples, "process_resident_memory_bytes") or 0) > 0
    assert value(samples, "process_cpu_seconds_total") is not None
    assert (value(samples, "process_open_fds") or 0) > 0


def test_queue_gauges_count_a_running_generation(runtime: RuntimeServer):
    """While a stream runs, num_requests_running says so; afterwards it is back to 0."""
    with runtime.client(runtime.signup_and_login()) as api:
        words = " ".join(f"w{i}" for i in range(60))  # ~0.3 s at 5 ms a token
        with api.stream("POST", "/generate", json={"prompt": words, "stream": True}) as sse:
            lines = sse.iter_lines()
            next(line for line in lines if line.startswith("data: {") and _text(json.loads(line[6:])))
            during = scrape(runtime)  # the first words arrived; most are still to come
            for _ in lines:
                pass
    assert value(during, "vllm:num_requests_running", model_name=MODEL) == 1
    assert value(scrape(runtime), "vllm:num_requests_running", model_name=MODEL) == 0


def test_last_request_time_moves_with_api_requests_not_probes_or_scrapes(runtime: RuntimeServer):
    """gpt_last_request_timestamp_seconds, the operator's idle signal: probes and scrapes leave it alone, an API
    request moves it, and a stream reads as now until it ends."""
    last = "gpt_last_request_timestamp_seconds"
    token = runtime.signup_and_login()
    before = value(scrape(runtime), last)
    assert before is not None and 0 < before <= time.time()
    with runtime.client() as anon:
        for path in ("/health", "/ready", "/metrics"):
            assert anon.get(path).status_code == 200
    assert value(scrape(runtime), last) == before

    sent = time.time()
    with runtime.client(token) as api:
        assert api.get("/auth/me").status_code == 200
        after = value(scrape(runtime), last)
        assert after is not None and after >= sent > before
        words = " ".join(f"w{i}" for i in range(60))  # ~0.3 s at 5 ms a token
        with api.stream("POST", "/generate", json={"prompt": words, "stream": True}) as sse:
            lines = sse.iter_lines()
            next(line for line in lines if line.startswith("data: {") and _text(json.loads(line[6:])))
            during = value(scrape(runtime), last)
            time.sleep(0.05)
            assert (value(scrape(runtime), last) or 0) > (during or 0) > after  # now, while it streams
            for _ in lines:
                pass
    ended = value(scrape(runtime), last)
    time.sleep(0.05)
    assert value(scrape(runtime), last) == ended  # at rest again

    with ws_connect(runtime.ws_url, token) as ws:
        idle = value(scrape(runtime), last)
        assert (idle or 0) > (ended or 0)  # the connection counts
        time.sleep(0.1)
        assert value(scrape(runtime), last) == idle  # an open, idle socket is no activity
        ws.send(json.dumps({"type": "generate", "request_id": "r", "content": "hi"}))
        ws_frames_until_done(ws, "r")
        assert (value(scrape(runtime), last) or 0) > (idle or 0)
