"""Small helpers for talking to /ws/generate and reading SSE streams in tests."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
from websockets.sync.client import ClientConnection, connect


def ws_connect(ws_url: str, token: str | None) -> ClientConnection:
    query = f"?access_token={token}" if token else ""
    return connect(f"{ws_url}/ws/generate{query}", open_timeout=10, close_timeout=5)


def ws_frames_until_done(ws: ClientConnection, request_id: str, timeout: float = 30) -> list[dict]:
    """Frames for `request_id` up to and including its done or error frame."""
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=timeout))
        if frame.get("request_id") == request_id:
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


def sse_events(response: httpx.Response) -> Iterator[dict | str]:
    """Parsed `data:` payloads of an SSE response: dicts, or the string "[DONE]"."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            yield payload if payload == "[DONE]" else json.loads(payload)
