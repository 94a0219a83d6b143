"""Bad input gets the right 4xx and the JSON error body, never a 500 or FastAPI's {"detail": ...}."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from .wsclient import ws_connect

pytestmark = pytest.mark.integration


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_malformed_json_is_400(api):
    response = api.post("/generate", content=b'{"prompt": "unterminated', headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": 42}, "prompt"),
        ({"prompt": "hi", "max_tokens": "ten"}, "max_tokens"),
        ({"prompt": "hi", "temperature": 9}, "temperature"),
        ({"prompt": "hi", "stream": "yes"}, "stream"),
        ({"prompt": "hi", "surprise": True}, "surprise"),
        ({"prompt": ""}, "prompt"),
        ({}, "prompt"),
        ([1, 2], None),
    ],
)
def test_wrong_types_are_422_naming_the_field(api, body, param):
    error = assert_error(api.post("/generate", json=body), 422)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_oversize_body_is_413(api):
    response = api.post("/generate", json={"prompt": "x" * 100_000})
    assert_error(response, 413, "payload_too_large")


def test_oversize_chunked_body_is_413(api):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    response = api.post("/generate", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413)


def test_oversize_prompt_is_413(api):
    error = assert_error(api.post("/generate", json={"prompt": "z" * 25_000}), 413, "prompt_too_large")
    assert error["param"] == "prompt"


def test_prompt_beyond_the_context_window_is_400(api):
    words = " ".join(f"w{i}" for i in range(400))  # the test server's window is 300 tokens
    error = assert_error(api.post("/generate", json={"prompt": words}), 400, "context_length_exceeded")
    assert "context window" in error["message"]


def test_nothing_is_stored_for_rejected_generations(api):
    api.post("/generate", json={"prompt": " ".join(["w"] * 400)})
    api.post("/generate", json={"prompt": 7})
    assert api.get("/conversations").json()["items"] == []


def test_missing_forged_and_expired_tokens_are_401(server):
    with server.client() as anon:
        assert_error(anon.get("/conversations"), 401, "missing_token")
        assert anon.get("/conversations").headers["www-authenticate"] == "Bearer"
    now = int(time.time())
    user_id = "someone"
    forged = jwt.encode(
        {"sub": user_id, "typ": "access", "iss": "gpt-runtime", "iat": now, "exp": now + 600},
        "a-different-secret-of-at-least-32-chars!!",
        algorithm="HS256",
    )
    expired = jwt.encode(
        {"sub": user_id, "typ": "access", "iss": "gpt-runtime", "iat": now - 900, "exp": now - 300},
        server.jwt_secret,
        algorithm="HS256",
    )
    unsigned = jwt.encode(
        {"sub": user_id, "typ": "access", "iss": "gpt-runtime", "iat": now, "exp": now + 600}, None, algorithm="none"
    )
    for token, code in [
        (forged, "invalid_token"),
        (expired, "token_expired"),
        (unsigned, "invalid_token"),
        ("not.a.jwt", "invalid_token"),
    ]:
        with server.client(token) as client:
            assert_error(client.get("/auth/me"), 401, code)


def test_refresh_token_is_not_an_access_token(server):
    email = "refresh-misuse@example.com"
    server.signup_and_login(email)
    with server.client() as anon:
        tokens = anon.post("/auth/login", json={"email": email, "password": "correct horse battery"}).json()
    with server.client(tokens["refresh_token"]) as client:
        assert_error(client.get("/auth/me"), 401, "invalid_token")


def test_bad_query_parameters(api):
    assert_error(api.get("/conversations", params={"limit": 0}), 422)
    assert_error(api.get("/conversations", params={"limit": "many"}), 422)
    assert_error(api.get("/conversations", params={"cursor": "garbage!!"}), 400, "invalid_cursor")
    assert_error(api.get("/conversations", params={"updated_since": "last tuesday"}), 422)


def test_bad_titles_and_unknown_routes(api):
    conversation_id = api.post("/conversations", json={}).json()["id"]
    assert_error(api.put(f"/conversations/{conversation_id}/title", json={"title": ""}), 422)
    assert_error(api.put(f"/conversations/{conversation_id}/title", json={"title": "t" * 500}), 422)
    assert_error(api.put(f"/conversations/{conversation_id}/title", json={}), 422)
    assert_error(api.get("/no/such/route"), 404)
    assert_error(api.patch("/conversations"), 405)


def test_websocket_rejects_bad_tokens_with_1008(server):
    for token in (None, "forged"):
        with ws_connect(server.ws_url, token) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008


def test_websocket_bad_frames_get_error_frames_and_the_socket_stays_open(server, token):
    with ws_connect(server.ws_url, token) as ws:
        for raw in [
            "not json",
            json.dumps({"type": "dance"}),
            json.dumps({"type": "generate", "request_id": "a"}),
            json.dumps({"type": "generate", "request_id": "b", "content": "hi", "params": {"top_p": 5}}),
        ]:
            ws.send(raw)
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "error"
            assert frame["error"]["type"] == "invalid_request_error"
        ws.send(json.dumps({"type": "generate", "request_id": "ok", "content": "still here"}))
        frames = []
        while not frames or frames[-1]["type"] != "done":
            frames.append(json.loads(ws.recv(timeout=10)))
        assert "".join(f.get("content", "") for f in frames) == "You said: still here"


def test_server_logs_hold_no_tracebacks_or_secrets(server, token, api):
    api.post("/generate", content=b"{", headers={"content-type": "application/json"})
    with ws_connect(server.ws_url, token) as ws:
        ws.send(json.dumps({"type": "generate", "request_id": "r", "content": "hi"}))
        ws.recv(timeout=10)
    logs = server.logs()
    assert "WebSocket /ws/generate?access_token=[REDACTED]" in logs
    assert token not in logs
    assert "Traceback" not in logs
    assert server.jwt_secret not in logs
    assert "correct horse battery" not in logs
