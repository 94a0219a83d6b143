"""Talk to a running runtime the way a user would: sign up, chat over REST, SSE and WebSocket.

    .venv/bin/python hack/demo.py [--url http://127.0.0.1:8000] [--prompt "What is the capital of France?"]

Uses only the standard library and `websockets` (installed with the runtime).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
import uuid

import websockets


def call(url: str, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    request = urllib.request.Request(f"{url}{path}", method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        sys.exit(f"{method} {path} -> {exc.code}: {exc.read().decode()}")


def stream_sse(url: str, token: str, body: dict) -> None:
    request = urllib.request.Request(
        f"{url}/generate", method="POST", data=json.dumps(body | {"stream": True}).encode()
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                print(choice["delta"].get("content", ""), end="", flush=True)
            if "usage" in chunk:
                print(f"\n   usage: {chunk['usage']}")


async def stream_ws(url: str, token: str, content: str, conversation_id: str) -> None:
    ws_url = url.replace("http", "ws", 1) + f"/ws/generate?access_token={token}"
    async with websockets.connect(ws_url) as ws:
        frame = {"type": "generate", "request_id": "demo", "conversation_id": conversation_id, "content": content}
        await ws.send(json.dumps(frame))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "delta":
                print(frame["content"], end="", flush=True)
            else:
                print(
                    f"\n   {frame['type']}: {frame.get('finish_reason') or frame.get('error')} {frame.get('usage', '')}"
                )
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--prompt", default="What is the capital of France?")
    args = parser.parse_args()
    email, password = f"demo-{uuid.uuid4().hex[:8]}@example.com", "demo-password-123"
    call(args.url, "POST", "/auth/signup", {"email": email, "password": password})
    token = call(args.url, "POST", "/auth/login", {"email": email, "password": password})["access_token"]
    print(f"signed up and logged in as {email}")

    print(f"\n[REST] {args.prompt}")
    reply = call(args.url, "POST", "/generate", {"prompt": args.prompt, "temperature": 0, "max_tokens": 64}, token)
    print(f"   {reply['content']}\n   usage: {reply['usage']}")
    conversation_id = reply["conversation_id"]

    print("\n[SSE] And what is it famous for?")
    stream_sse(
        args.url,
        token,
        {
            "prompt": "And what is it famous for?",
            "conversation_id": conversation_id,
            "max_tokens": 64,
            "temperature": 0,
        },
    )
    print("\n[WebSocket] Thank you!")
    asyncio.run(stream_ws(args.url, token, "Thank you!", conversation_id))

    conversation = call(args.url, "GET", f"/conversations/{conversation_id}", token=token)
    print(f"\nconversation {conversation['title']!r} holds {conversation['message_count']} messages")


if __name__ == "__main__":
    main()
