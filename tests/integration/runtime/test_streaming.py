"""Cancellation: a client that leaves or cancels stops its generation, and the partial reply is kept."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from .wsclient import ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration

LONG_PROMPT = " ".join(f"word{i}" for i in range(150))  # ~150 tokens at 10 ms each: 1.5 s of generation


def cancelled_count(server, transport: str) -> float:
    with server.client() as anon:
        text = anon.get("/metrics").text
    match = re.search(rf'generation_requests_total{{finish_reason="cancelled",transport="{transport}"}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def last_reply(api, conversation_id):
    messages = api.get(f"/conversations/{conversation_id}").json()["messages"]
    return messages[-1] if messages and messages[-1]["role"] == "assistant" else None


def test_sse_client_disconnect_cancels_generation(server, api):
    before = cancelled_count(server, "sse")
    conversation_id = api.post("/conversations", json={}).json()["id"]
    with api.stream(
        "POST", "/generate", json={"prompt": LONG_PROMPT, "conversation_id": conversation_id, "stream": True}
    ) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(8)]
        assert any('"content":"You "' in line for line in received)
    # Closing the stream disconnects; the engine slot is freed and what was said is kept.
    wait_for(lambda: cancelled_count(server, "sse") == before + 1)
    wait_for(lambda: last_reply(api, conversation_id) is not None)
    reply = last_reply(api, conversation_id)
    assert reply["finish_reason"] == "cancelled"
    assert reply["content"].startswith("You said:")
    assert len(reply["content"]) < len("You said: " + LONG_PROMPT)


def test_rest_client_disconnect_cancels_generation(server, token, api):
    before = cancelled_count(server, "rest")
    body = json.dumps({"prompt": LONG_PROMPT}).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.4)  # generation is under way
    wait_for(lambda: cancelled_count(server, "rest") == before + 1)


def test_websocket_cancel_frame_stops_one_request(server, token):
    with ws_connect(server.ws_url, token) as ws:
        ws.send(json.dumps({"type": "generate", "request_id": "long", "content": LONG_PROMPT}))
        ws.send(json.dumps({"type": "generate", "request_id": "short", "content": "quick one"}))
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "delta"
        ws.send(json.dumps({"type": "cancel", "request_id": "long"}))
        long_frames = ws_frames_until_done(ws, "long")
        assert long_frames[-1]["type"] == "done"
        assert long_frames[-1]["finish_reason"] == "cancelled"
        assert 1 <= long_frames[-1]["usage"]["completion_tokens"] < 150
        assert long_frames[-1]["usage"]["prompt_tokens"] > 150
        ws.send(json.dumps({"type": "generate", "request_id": "after", "content": "still works"}))
        after = ws_frames_until_done(ws, "after")
        assert after[-1]["finish_reason"] == "stop"


def test_websocket_disconnect_cancels_everything_in_flight(server, token):
    before = cancelled_count(server, "websocket")
    with ws_connect(server.ws_url, token) as ws:
        for request_id in ("a", "b"):
            ws.send(json.dumps({"type": "generate", "request_id": request_id, "content": LONG_PROMPT}))
        json.loads(ws.recv(timeout=10))
    wait_for(lambda: cancelled_count(server, "websocket") == before + 2)


def test_two_streams_on_one_socket_interleave(server, token):
    with ws_connect(server.ws_url, token) as ws:
        for request_id in ("x", "y"):
            ws.send(json.dumps({"type": "generate", "request_id": request_id, "content": "one two three four"}))
        frames = []
        while sum(f["type"] == "done" for f in frames) < 2:
            frames.append(json.loads(ws.recv(timeout=10)))
    for request_id in ("x", "y"):
        text = "".join(f.get("content", "") for f in frames if f["request_id"] == request_id and f["type"] == "delta")
        assert text == "You said: one two three four"
    order = [f["request_id"] for f in frames if f["type"] == "delta"]
    assert order != sorted(order)  # they ran at the same time, not one after the other
