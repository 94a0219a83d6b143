"""The whole user journey over real HTTP, SSE and WebSocket against a real uvicorn."""

from __future__ import annotations

import json

import pytest

from .wsclient import sse_events, ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration


def test_signup_to_delete_journey(server):
    email = "journey@example.com"
    with server.client() as anon:
        signup = anon.post("/auth/signup", json={"email": email, "password": "journey-password"})
        assert signup.status_code == 201
        assert signup.json()["user"]["email"] == email
        assert signup.json()["user"]["role"] == "free"
        login = anon.post("/auth/login", json={"email": email, "password": "journey-password"})
        assert login.status_code == 200
        tokens = login.json()
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0
    token = tokens["access_token"]
    with server.client(token) as api:
        me = api.get("/auth/me").json()
        assert me["email"] == email

        created = api.post("/conversations", json={"title": "Trip planning"})
        assert created.status_code == 201
        conversation_id = created.json()["id"]
        assert created.json()["message_count"] == 0

        first = api.post("/generate", json={"prompt": "Where should I go?", "conversation_id": conversation_id})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["content"] == "You said: Where should I go?"
        assert body["conversation_id"] == conversation_id
        assert body["finish_reason"] == "stop"
        usage = body["usage"]
        assert usage["completion_tokens"] == 6  # "You said: Where should I go?"
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert body["message"]["role"] == "assistant" and body["message"]["content"] == body["content"]

        # WebSocket: tokens arrive as delta frames, then a done frame with usage.
        with ws_connect(server.ws_url, token) as ws:
            frame = {"type": "generate", "request_id": "r1", "conversation_id": conversation_id, "content": "And then?"}
            ws.send(json.dumps(frame))
            frames = ws_frames_until_done(ws, "r1")
        deltas = [f["content"] for f in frames if f["type"] == "delta"]
        assert len(deltas) >= 2
        assert "".join(deltas) == "You said: And then?"
        done = frames[-1]
        assert done["type"] == "done" and done["finish_reason"] == "stop"
        assert done["conversation_id"] == conversation_id
        # Prior messages were context: the prompt grew by the first exchange.
        assert done["usage"]["prompt_tokens"] > usage["prompt_tokens"]

        # SSE: OpenAI chat.completion.chunk events, role first, finish_reason last, usage, [DONE].
        with api.stream(
            "POST", "/generate", json={"prompt": "Any tips?", "conversation_id": conversation_id, "stream": True}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            events = list(sse_events(response))
        assert events[-1] == "[DONE]"
        chunks = [e for e in events if isinstance(e, dict)]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == "You said: Any tips?"
        finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
        assert chunks[-1]["usage"]["completion_tokens"] == 4

        detail = api.get(f"/conversations/{conversation_id}").json()
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 3
        assert [m["content"] for m in detail["messages"][::2]] == ["Where should I go?", "And then?", "Any tips?"]
        assert detail["message_count"] == 6

        listed = api.get("/conversations").json()
        assert [c["id"] for c in listed["items"]] == [conversation_id]

        renamed = api.put(f"/conversations/{conversation_id}/title", json={"title": "Lisbon trip"})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Lisbon trip"
        assert api.get(f"/conversations/{conversation_id}").json()["title"] == "Lisbon trip"

        assert api.delete(f"/conversations/{conversation_id}").status_code == 204
        gone = api.get(f"/conversations/{conversation_id}")
        assert gone.status_code == 404
        assert gone.json()["error"]["type"] == "not_found_error"
        assert api.get("/conversations").json()["items"] == []


def test_generate_without_conversation_starts_one(api):
    response = api.post("/generate", json={"prompt": "  Plan   a\nweek in Porto  ", "temperature": 0})
    assert response.status_code == 200
    conversation_id = response.json()["conversation_id"]
    conversation = api.get(f"/conversations/{conversation_id}").json()
    assert conversation["title"] == "Plan a week in Porto"
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]


def test_sampling_parameters_reach_the_engine(api):
    limited = api.post("/generate", json={"prompt": "one two three four five", "max_tokens": 3}).json()
    assert limited["finish_reason"] == "length"
    assert limited["usage"]["completion_tokens"] == 3
    assert limited["content"] == "You said: one "
    stopped = api.post("/generate", json={"prompt": "alpha beta gamma", "stop": ["beta"]}).json()
    assert stopped["content"] == "You said: alpha "
    assert stopped["finish_reason"] == "stop"


def test_long_conversation_is_trimmed_to_the_context_window(api):
    """The server's window is 300 tokens: history is dropped oldest first, generation keeps working."""
    conversation_id = api.post("/conversations", json={}).json()["id"]
    prompts = []
    for turn in range(8):
        prompt = f"turn {turn} " + " ".join(f"w{i}" for i in range(40))
        prompts.append(prompt)
        response = api.post("/generate", json={"prompt": prompt, "conversation_id": conversation_id, "max_tokens": 60})
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        assert usage["prompt_tokens"] + 60 <= 300
    # Every message is still stored, even those no longer sent as context.
    stored = api.get(f"/conversations/{conversation_id}").json()["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == prompts


def test_pagination_and_updated_since(api):
    ids = [api.post("/conversations", json={"title": f"c{i}"}).json()["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/conversations", params=params).json()
        seen += [c["id"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, no repeats, none missing

    since = api.get(f"/conversations/{ids[2]}").json()["updated_at"]
    api.put(f"/conversations/{ids[0]}/title", json={"title": "touched"})
    changed = api.get("/conversations", params={"updated_since": since}).json()["items"]
    assert [c["id"] for c in changed] == [ids[0], ids[4], ids[3]]
