"""SIGTERM drains a real runtime: /ready fails first, streams in flight finish with every token, exit 0."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from .conftest import RuntimeServer, start_runtime, stop_runtime
from .wsclient import sse_events, ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration

WORDS = 40
PROMPT = " ".join(f"word{i}" for i in range(WORDS))  # the echo engine answers "You said: " + PROMPT
REPLY_TOKENS = WORDS + 2  # "You " "said: " and the 40 words; at 100 ms each the stream takes about 4 s


@pytest.fixture
def slow_server(tmp_path) -> RuntimeServer:
    runtime = start_runtime(
        tmp_path,
        GPT_MODEL_SOURCE="fake:echo?delay_ms=100",
        GPT_SHUTDOWN_TIMEOUT_S="30",
        GPT_RATE_LIMIT_ANONYMOUS="100000",
    )
    yield runtime
    if runtime.process.poll() is None:
        stop_runtime(runtime)


def ready_status(server: RuntimeServer) -> int | None:
    try:
        return httpx.get(f"{server.base_url}/ready", timeout=2).status_code
    except httpx.TransportError:
        return None


def test_sigterm_fails_ready_and_lets_an_sse_stream_finish(slow_server: RuntimeServer) -> None:
    token = slow_server.signup_and_login()
    events: list = []
    started = threading.Event()

    def stream() -> None:
        with (
            slow_server.client(token) as api,
            api.stream("POST", "/generate", json={"prompt": PROMPT, "stream": True}) as response,
        ):
            assert response.status_code == 200
            for event in sse_events(response):
                events.append(event)
                started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(10), "the stream did not start"
    slow_server.process.send_signal(signal.SIGTERM)

    # Readiness fails first, on a new connection, while the stream is still running.
    deadline = time.monotonic() + 3
    while ready_status(slow_server) != 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready_status(slow_server) == 503
    body = httpx.get(f"{slow_server.base_url}/ready", timeout=2).json()
    assert body["error"]["code"] == "shutting_down"
    assert reader.is_alive() and "[DONE]" not in events, "the stream ended before /ready failed"
    assert slow_server.process.poll() is None

    reader.join(30)
    assert not reader.is_alive()
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [e for e in events if isinstance(e, dict)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == f"You said: {PROMPT}"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")][-1] == "stop"
    assert slow_server.process.wait(15) == 0, slow_server.logs()[-2000:]


def test_sigterm_lets_a_websocket_generation_finish_before_closing(slow_server: RuntimeServer) -> None:
    token = slow_server.signup_and_login()
    with ws_connect(slow_server.ws_url, token) as ws:
        ws.send(json.dumps({"type": "generate", "request_id": "r1", "content": PROMPT}))
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "delta"
        slow_server.process.send_signal(signal.SIGTERM)
        frames = [first, *ws_frames_until_done(ws, "r1")]
    assert frames[-1]["type"] == "done", frames[-1]
    assert frames[-1]["finish_reason"] == "stop"
    assert frames[-1]["usage"]["completion_tokens"] == REPLY_TOKENS
    assert "".join(f["content"] for f in frames if f["type"] == "delta") == f"You said: {PROMPT}"
    assert slow_server.process.wait(15) == 0, slow_server.logs()[-2000:]


def test_an_idle_runtime_exits_promptly_and_cleanly_on_sigterm(slow_server: RuntimeServer) -> None:
    started = time.monotonic()
    slow_server.process.send_signal(signal.SIGTERM)
    assert slow_server.process.wait(10) == 0
    assert time.monotonic() - started < 5
    # a clean stop logs no error: the in-process job worker's loops end because it stops, not because they failed
    errors = [line for line in slow_server.logs().splitlines() if '"level": "ERROR"' in line]
    assert errors == [], errors
