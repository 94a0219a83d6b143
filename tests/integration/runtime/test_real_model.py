"""The runtime in front of a real model (our own tiny GPT built on the fly), not the fake engine."""

from __future__ import annotations

import json

import pytest

from .conftest import start_runtime, stop_runtime
from .wsclient import sse_events, ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    runtime = start_runtime(tmp_path_factory.mktemp("tiny"), GPT_MODEL_SOURCE="builtin:tiny")
    yield runtime
    stop_runtime(runtime)


def test_greedy_replies_agree_across_rest_sse_and_websocket(tiny_server):
    token = tiny_server.signup_and_login()
    request = {"prompt": "Hello, model!", "temperature": 0, "max_tokens": 12}
    with tiny_server.client(token) as api:
        ready = api.get("/ready").json()
        assert ready["model"] != "fake-echo"
        first = api.post("/generate", json=request).json()
        second = api.post("/generate", json=request).json()
        assert first["content"] == second["content"]
        assert first["usage"]["completion_tokens"] <= 12
        assert first["usage"]["prompt_tokens"] > 0
        assert first["finish_reason"] in ("stop", "length")
        with api.stream("POST", "/generate", json=request | {"stream": True}) as response:
            chunks = [e for e in sse_events(response) if isinstance(e, dict)]
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert streamed == first["content"]
    with ws_connect(tiny_server.ws_url, token) as ws:
        frame = {"type": "generate", "request_id": "t", "content": request["prompt"], "params": request | {}}
        frame["params"].pop("prompt")
        ws.send(json.dumps(frame))
        frames = ws_frames_until_done(ws, "t", timeout=60)
    assert "".join(f["content"] for f in frames if f["type"] == "delta") == first["content"]
    assert frames[-1]["usage"] == first["usage"]


@pytest.mark.slow
def test_a_newcomers_first_chat_with_the_embedded_default(tmp_path):
    """What `bash hack/run.sh` serves: the default model answers a simple question sensibly."""
    server = start_runtime(tmp_path, GPT_MODEL_SOURCE="builtin:smollm2-135m")
    try:
        with server.client(server.signup_and_login()) as api:
            assert api.get("/ready").json()["model"] == "smollm2-135m-instruct"
            reply = api.post("/generate", json={"prompt": "What is the capital of France?", "temperature": 0})
            assert reply.status_code == 200
            assert "Paris" in reply.json()["content"]
            follow_up = api.post(
                "/generate",
                json={
                    "prompt": "What country is that city in?",
                    "conversation_id": reply.json()["conversation_id"],
                    "temperature": 0,
                    "max_tokens": 40,
                },
            )
            assert "France" in follow_up.json()["content"]
    finally:
        stop_runtime(server)
