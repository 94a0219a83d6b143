"""Long-lived API keys under /auth/keys, used by the official OpenAI SDK against a real runtime."""

from __future__ import annotations

import uuid

import openai
import pytest

from .conftest import mailed_token, start_runtime, stop_runtime

pytestmark = pytest.mark.integration


def _sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.base_url}/v1", max_retries=0)


def _chat(sdk: openai.OpenAI) -> str:
    completion = sdk.chat.completions.create(model="fake-echo", messages=[{"role": "user", "content": "ping"}])
    return completion.choices[0].message.content


def test_an_api_key_drives_the_openai_sdk_until_revoked(server, api):
    created = api.post("/auth/keys", json={"name": "batch job"})
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("sk-gpt-") and len(key) > 40
    assert key.startswith(body["prefix"]) and len(body["prefix"]) < 16
    assert (body["name"], body["last_used_at"]) == ("batch job", None)

    with _sdk(server, key) as sdk:
        assert _chat(sdk) == "You said: ping"
        with server.client(key) as as_key:  # the rest of the API too, as the same user
            assert as_key.get("/auth/me").json() == api.get("/auth/me").json()
            conversation = as_key.post("/conversations", json={"title": "via key"})
            assert conversation.status_code == 201
            assert conversation.json()["id"] in [c["id"] for c in api.get("/conversations").json()["items"]]

        listed = api.get("/auth/keys")
        assert listed.status_code == 200 and key not in listed.text
        (entry,) = listed.json()["data"]
        assert set(entry) == {"id", "name", "prefix", "created_at", "last_used_at"}
        assert entry["id"] == body["id"] and entry["last_used_at"] is not None

        assert api.delete(f"/auth/keys/{body['id']}").status_code == 204
        with pytest.raises(openai.AuthenticationError) as refused:
            _chat(sdk)
        assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    assert api.get("/auth/keys").json()["data"] == []
    assert api.delete(f"/auth/keys/{body['id']}").status_code == 404


def test_keys_are_their_owners_alone(server, api):
    key = api.post("/auth/keys", json={"name": "ann's"}).json()
    with server.client(server.signup_and_login()) as bob:
        assert bob.get("/auth/keys").json()["data"] == []
        stolen = bob.delete(f"/auth/keys/{key['id']}")
        assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "api_key_not_found"
    with server.client(key["key"]) as as_key:
        assert as_key.get("/auth/me").status_code == 200  # still works


def test_an_api_key_cannot_manage_keys(server, api):
    key = api.post("/auth/keys", json={}).json()["key"]
    with server.client(key) as as_key:
        for response in (as_key.post("/auth/keys", json={"name": "more"}), as_key.get("/auth/keys")):
            assert response.status_code == 403 and response.json()["error"]["code"] == "session_required"
    assert len(api.get("/auth/keys").json()["data"]) == 1


def test_unknown_keys_are_401_json(server):
    with server.client("sk-gpt-" + "A" * 43) as forged:
        response = forged.get("/auth/me")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


def test_resetting_a_forgotten_password_revokes_every_key(server):
    email = f"keyed-{uuid.uuid4().hex[:6]}@example.com"
    with server.client(server.signup_and_login(email)) as api:
        key = api.post("/auth/keys", json={"name": "left behind"}).json()["key"]
    with server.client() as anon:
        anon.post("/auth/forgot-password", json={"email": email})
        token = mailed_token(server.wait_for_mail(email, "Reset"))
        assert (
            anon.post("/auth/reset-password", json={"token": token, "new_password": "brand-new-pw"}).status_code == 200
        )
    with server.client(key) as as_key:
        assert as_key.get("/auth/me").status_code == 401


def test_an_api_key_shares_its_owners_rate_limit(tmp_path):
    runtime = start_runtime(tmp_path, GPT_RATE_LIMIT_FREE="5", GPT_RATE_LIMIT_ANONYMOUS="0")
    try:
        token = runtime.signup_and_login()
        with runtime.client(token) as api:
            key = api.post("/auth/keys", json={}).json()["key"]  # the user's 1st request
            with runtime.client(key) as as_key:
                remaining = [as_key.get("/auth/me").headers["x-ratelimit-remaining"] for _ in range(2)]
                assert remaining == ["3", "2"]
                assert api.get("/auth/me").headers["x-ratelimit-remaining"] == "1"  # one window for both
                assert as_key.get("/auth/me").headers["x-ratelimit-remaining"] == "0"
                limited = as_key.get("/auth/me")
                assert limited.status_code == 429 and "retry-after" in limited.headers
    finally:
        stop_runtime(runtime)
