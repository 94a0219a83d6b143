"""The activator (`python -m gpt_runtime.activator`) in front of a real runtime, both real processes on loopback:
requests held until the runtime is ready, then proxied (HTTP, SSE, WebSocket); a wake timeout; local probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gpt_runtime.errors import error_body
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .conftest import (
    RuntimeServer,
    Samples,
    free_port,
    metric_samples,
    metric_value,
    start_runtime,
    stop_process,
    stop_runtime,
    wait_until_ready,
)
from .wsclient import ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration
FAKE_MODEL = "fake:echo?delay_ms=10"
PASSWORD = "correct horse battery"


@dataclass
class ActivatorServer:
    base_url: str
    ws_url: str
    process: subprocess.Popen
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text()


def start_activator(tmp: Path, upstream_port: int, **env: str) -> ActivatorServer:
    """The activator on a free port, in front of http://127.0.0.1:`upstream_port`; ready when /health answers."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = tmp / "activator.log"
    full_env = {
        **os.environ,
        "GPT_ACTIVATOR_UPSTREAM": f"http://127.0.0.1:{upstream_port}",
        "GPT_ACTIVATOR_HOST": "127.0.0.1",
        "GPT_ACTIVATOR_PORT": str(port),
        "GPT_ACTIVATOR_POLL_SECONDS": "0.1",
        **env,
    }
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gpt_runtime.activator"], env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, f"{base_url}/health", log_path, "activator", timeout=30)
    return ActivatorServer(base_url, f"ws://127.0.0.1:{port}", process, log_path)


def scrape(base_url: str) -> Samples:
    """Every sample of the activator's GET /metrics."""
    return metric_samples(httpx.get(f"{base_url}/metrics", timeout=5).text)


def outcomes(base_url: str) -> dict[str, float]:
    samples = scrape(base_url)
    return {o: metric_value(samples, "gpt_activator_requests_total", outcome=o) or 0 for o in ("proxied", "timeout")}


def login(base_url: str) -> str:
    """A fresh account's access token, signed up and logged in through `base_url`."""
    email = f"act-{time.monotonic_ns()}@example.com"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.post("/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 201
        response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


@pytest.fixture(scope="module")
def awake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeServer, ActivatorServer]]:
    """A runtime on the fake model and an activator in front of it."""
    runtime = start_runtime(tmp_path_factory.mktemp("runtime"), GPT_MODEL_SOURCE=FAKE_MODEL)
    activator = start_activator(tmp_path_factory.mktemp("activator"), int(runtime.base_url.rsplit(":", 1)[1]))
    yield runtime, activator
    stop_process(activator.process)
    stop_runtime(runtime)


def test_a_request_is_held_until_the_runtime_starts_then_answered(tmp_path: Path):
    upstream_port = free_port()
    activator = start_activator(
        tmp_path / "activator",
        upstream_port,
        GPT_ACTIVATOR_WAKE_TIMEOUT_SECONDS="120",
        GPT_ACTIVATOR_SHUTDOWN_TIMEOUT_SECONDS="1",
    )
    runtime = None
    try:
        email = f"held-{time.monotonic_ns()}@example.com"
        answers: list[httpx.Response] = []
        sent = time.time()
        held = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{activator.base_url}/auth/signup", json={"email": email, "password": PASSWORD}, timeout=120
                )
            )
        )
        held.start()
        deadline = time.monotonic() + 10
        while metric_value(samples := scrape(activator.base_url), "gpt_activator_waiting_requests") != 1:
            assert time.monotonic() < deadline, "the request was never held"
            time.sleep(0.05)
        first = metric_value(samples, "gpt_last_request_timestamp_seconds")
        assert first is not None and first >= sent  # activity, read as now while the request is held
        time.sleep(0.3)
        assert (metric_value(scrape(activator.base_url), "gpt_last_request_timestamp_seconds") or 0) > first
        assert held.is_alive() and not answers

        runtime = start_runtime(tmp_path / "runtime", port=upstream_port, GPT_MODEL_SOURCE=FAKE_MODEL)
        held.join(timeout=30)
        assert answers and answers[0].status_code == 201, answers and answers[0].text
        # the deployment is awake: the next requests go straight through, a chat completion included
        with httpx.Client(base_url=activator.base_url, timeout=30) as client:
            token = client.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
            completion = client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {token}"},
                json={"model": "fake-echo", "messages": [{"role": "user", "content": "hello there"}]},
            )
        assert completion.status_code == 200, completion.text
        assert completion.json()["choices"][0]["message"]["content"] == "You said: hello there"

        samples = scrape(activator.base_url)
        assert metric_value(samples, "gpt_activator_waiting_requests") == 0
        assert metric_value(samples, "gpt_activator_requests_total", outcome="proxied") == 3
        assert metric_value(samples, "gpt_activator_requests_total", outcome="timeout") == 0
        assert metric_value(samples, "gpt_activator_wait_seconds_count") == 3
        assert (metric_value(samples, "gpt_activator_wait_seconds_sum") or 0) > 0.3  # the first one waited
        last = metric_value(samples, "gpt_last_request_timestamp_seconds") or 0
        assert first < last <= time.time()
        logs = activator.logs()
        assert '"outcome": "proxied"' in logs and '"path": "/auth/signup"' in logs
        assert PASSWORD not in logs and token not in logs

        # the runtime goes away (asleep again): a refused connection is no 502, the request waits for a new one
        stop_runtime(runtime)
        runtime = None
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{activator.base_url}/v1/models", timeout=httpx.Timeout(10, read=1.5))
        samples = scrape(activator.base_url)
        assert metric_value(samples, "gpt_activator_waiting_requests") == 1
        assert metric_value(samples, "gpt_activator_requests_total", outcome="upstream_error") == 0
        assert httpx.get(f"{activator.base_url}/ready").json()["error"]["code"] == "asleep"
    finally:
        stop_process(activator.process)
        if runtime is not None:
            stop_runtime(runtime)


def test_an_sse_stream_arrives_chunk_by_chunk(awake: tuple[RuntimeServer, ActivatorServer]):
    _, activator = awake
    token = login(activator.base_url)
    words = " ".join(f"w{i}" for i in range(30))  # about 30 tokens at 10 ms each
    arrivals: list[tuple[float, str]] = []
    with (
        httpx.Client(base_url=activator.base_url, timeout=30) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": "fake-echo", "messages": [{"role": "user", "content": words}], "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line[6:]))
    assert arrivals[-1][1] == "[DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for _, payload in arrivals[:-1]
        for choice in json.loads(payload)["choices"]
    )
    assert text == f"You said: {words}"
    assert len(arrivals) > 10
    # not buffered: the events came over the ~0.3 s the model took, not all at once at the end
    assert arrivals[-1][0] - arrivals[0][0] > 0.15


def test_a_websocket_generation_goes_through(awake: tuple[RuntimeServer, ActivatorServer]):
    _, activator = awake
    token = login(activator.base_url)
    with ws_connect(activator.ws_url, token) as ws:
        ws.send(json.dumps({"type": "generate", "request_id": "r1", "content": "over the socket"}))
        frames = ws_frames_until_done(ws, "r1")
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"
    assert "".join(f["content"] for f in frames if f["type"] == "delta") == "You said: over the socket"
    # the runtime's close code comes back as it sent it: 1008 for a refused token
    with ws_connect(activator.ws_url, "not-a-token") as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert token not in activator.logs()  # the token rode in the query string


def test_no_runtime_in_time_answers_503_with_retry_after(tmp_path: Path):
    activator = start_activator(tmp_path, free_port(), GPT_ACTIVATOR_WAKE_TIMEOUT_SECONDS="2")
    try:
        started = time.monotonic()
        response = httpx.get(f"{activator.base_url}/v1/models", timeout=10)
        assert 2 <= time.monotonic() - started < 5
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        assert response.json() == error_body(
            "the model is waking up: try again shortly", "overloaded", None, "model_waking_up"
        )
        assert outcomes(activator.base_url) == {"proxied": 0, "timeout": 1}
        # a WebSocket handshake is refused the same way
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{activator.ws_url}/ws/generate", open_timeout=10)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body or b"")["error"]["code"] == "model_waking_up"
        samples = scrape(activator.base_url)
        assert metric_value(samples, "gpt_activator_requests_total", outcome="timeout") == 2
        assert metric_value(samples, "gpt_activator_waiting_requests") == 0
        assert '"outcome": "timeout"' in activator.logs()
    finally:
        stop_process(activator.process)


def test_probes_and_metrics_are_answered_locally_and_are_no_activity(
    tmp_path: Path, awake: tuple[RuntimeServer, ActivatorServer]
):
    activator = start_activator(tmp_path, free_port())
    try:
        health = httpx.get(f"{activator.base_url}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = httpx.get(f"{activator.base_url}/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "asleep"
        for _ in range(2):
            samples = scrape(activator.base_url)
            assert metric_value(samples, "gpt_last_request_timestamp_seconds") == 0
            assert metric_value(samples, "gpt_activator_waiting_requests") == 0
            assert sum(outcomes(activator.base_url).values()) == 0
    finally:
        stop_process(activator.process)
    assert activator.process.returncode == 0  # SIGTERM: a clean exit

    # awake (a request woke it), /ready is the runtime's own answer, and still no activity
    _, awake_activator = awake
    with httpx.Client(base_url=awake_activator.base_url, timeout=10) as client:
        assert client.get("/v1/models").status_code == 401  # known ready from here on
        before = metric_value(scrape(awake_activator.base_url), "gpt_last_request_timestamp_seconds")
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert client.get("/health").status_code == 200
        assert metric_value(scrape(awake_activator.base_url), "gpt_last_request_timestamp_seconds") == before
