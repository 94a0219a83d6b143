"""A user never sees another user's data: every id-bearing route answers 404, as for a missing id."""

from __future__ import annotations

import json

import pytest

from .wsclient import sse_events, ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration


@pytest.fixture
def owned(server):
    """Alice's conversation with one exchange, and Bob's client."""
    alice = server.signup_and_login()
    with server.client(alice) as api:
        conversation_id = api.post("/conversations", json={"title": "alice private"}).json()["id"]
        assert (
            api.post("/generate", json={"prompt": "secret plan", "conversation_id": conversation_id}).status_code == 200
        )
    bob = server.signup_and_login()
    return alice, bob, conversation_id


def _assert_not_found(response):
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found_error"


def test_rest_routes_hide_other_users_conversations(server, owned):
    alice, bob, conversation_id = owned
    with server.client(bob) as api:
        _assert_not_found(api.get(f"/conversations/{conversation_id}"))
        _assert_not_found(api.put(f"/conversations/{conversation_id}/title", json={"title": "mine now"}))
        _assert_not_found(api.delete(f"/conversations/{conversation_id}"))
        _assert_not_found(api.post("/generate", json={"prompt": "leak it", "conversation_id": conversation_id}))
        _assert_not_found(
            api.post("/generate", json={"prompt": "leak it", "conversation_id": conversation_id, "stream": True})
        )
        assert api.get("/conversations").json()["items"] == []
        # Same answer as for an id that never existed.
        missing = api.get("/conversations/does-not-exist")
        assert missing.json() == api.get(f"/conversations/{conversation_id}").json()
    with server.client(alice) as api:
        conversation = api.get(f"/conversations/{conversation_id}").json()
        assert conversation["title"] == "alice private"
        assert [m["content"] for m in conversation["messages"]] == ["secret plan", "You said: secret plan"]


def test_websocket_hides_other_users_conversations(server, owned):
    _, bob, conversation_id = owned
    with ws_connect(server.ws_url, bob) as ws:
        ws.send(
            json.dumps({"type": "generate", "request_id": "x", "conversation_id": conversation_id, "content": "hi"})
        )
        frames = ws_frames_until_done(ws, "x")
    assert frames[-1]["type"] == "error"
    assert frames[-1]["error"]["type"] == "not_found_error"
    assert not [f for f in frames if f["type"] == "delta"]


def test_other_users_pages_and_streams_stay_apart(server, owned):
    alice, bob, conversation_id = owned
    with server.client(bob) as api:
        bob_conversation = api.post("/conversations", json={"title": "bob"}).json()["id"]
        with api.stream(
            "POST", "/generate", json={"prompt": "hello", "conversation_id": bob_conversation, "stream": True}
        ) as r:
            events = list(sse_events(r))
        assert events[-1] == "[DONE]"
    with server.client(alice) as api:
        items = api.get("/conversations").json()["items"]
        assert [c["id"] for c in items] == [conversation_id]
