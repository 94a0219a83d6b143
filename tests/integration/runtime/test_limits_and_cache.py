"""Rate limits, token quotas, the response cache and conversation caching, as a client sees them."""

from __future__ import annotations

import json
import re

import pytest
from websockets.exceptions import ConnectionClosed

from .conftest import start_runtime, stop_runtime
from .wsclient import sse_events, ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration

ADMIN = "boss@example.com"
TEN_WORDS = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    runtime = start_runtime(
        tmp_path_factory.mktemp("limits"),
        GPT_RATE_LIMIT_FREE="6",
        GPT_RATE_LIMIT_PREMIUM="10",
        GPT_RATE_LIMIT_ANONYMOUS="100000",
        GPT_QUOTA_FREE="1000,1000,40,1000000",
        GPT_QUOTA_PREMIUM="1000,2,100000,10000000",
        GPT_ADMIN_EMAILS=ADMIN,
    )
    yield runtime
    stop_runtime(runtime)


@pytest.fixture(scope="module")
def admin(limited):
    with limited.client(limited.signup_and_login(ADMIN, verify=True)) as client:
        yield client


def metric(server, name: str, labels: str) -> float:
    text = server.client().get("/metrics").text
    match = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_every_response_carries_rate_limit_headers_until_429(limited):
    before = metric(limited, "rate_limit_exceeded_total", 'type="requests"')
    with limited.client(limited.signup_and_login()) as api:
        remaining = []
        for _ in range(6):
            response = api.get("/auth/me")
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "6"
            assert 1 <= int(response.headers["x-ratelimit-reset"]) <= 60
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert remaining == [5, 4, 3, 2, 1, 0]
        refused = api.get("/conversations")
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "requests"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert metric(limited, "rate_limit_exceeded_total", 'type="requests"') == before + 1


def test_admins_are_unlimited_and_premium_gets_more(limited, admin):
    for _ in range(12):
        assert admin.get("/auth/me").status_code == 200
    token = limited.signup_and_login()
    with limited.client(token) as api:
        user_id = api.get("/auth/me").json()["id"]
        promoted = admin.put(f"/admin/users/{user_id}/role", json={"role": "premium"})
        assert promoted.status_code == 200 and promoted.json()["role"] == "premium"
        assert api.get("/auth/me").headers["x-ratelimit-limit"] == "10"
        # Premium's daily request quota in this server is 2 generations.
        assert api.post("/generate", json={"prompt": "first"}).status_code == 200
        assert api.post("/generate", json={"prompt": "second"}).status_code == 200
        third = api.post("/generate", json={"prompt": "third"})
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "insufficient_quota"
    assert third.headers["retry-after"]


def test_only_admins_change_roles(limited):
    with limited.client(limited.signup_and_login()) as api:
        me = api.get("/auth/me").json()["id"]
        refused = api.put(f"/admin/users/{me}/role", json={"role": "admin"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"


def test_token_quota_is_charged_after_generation_and_checked_before(limited):
    with limited.client(limited.signup_and_login()) as api:
        first = api.post("/generate", json={"prompt": TEN_WORDS})
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-tokens"] == "40"
        spent = first.json()["usage"]["total_tokens"]
        assert spent > 20
        second = api.post("/generate", json={"prompt": TEN_WORDS + " again"})
        assert second.status_code == 200  # checked before: 40 - spent tokens were still left
        assert int(second.headers["x-ratelimit-remaining-tokens"]) == 40 - spent
        third = api.post("/generate", json={"prompt": "anything new"})
        assert third.status_code == 429
        assert third.json()["error"]["type"] == "tokens"
        usage = api.get("/usage").json()
    assert usage["requests"] == 2
    assert usage["total_tokens"] == spent + second.json()["usage"]["total_tokens"]
    assert usage["estimated_cost_usd"] > 0
    assert usage["limits"]["quota"]["tpm"] == 40 and usage["tier"] == "free"


def test_an_exhausted_quota_falls_back_to_a_cached_answer(limited):
    with limited.client(limited.signup_and_login()) as api:
        original = api.post("/generate", json={"prompt": TEN_WORDS + " fallback", "temperature": 0.9})
        assert original.headers["x-cache"] == "MISS"
        api.post("/generate", json={"prompt": TEN_WORDS + " burn the quota"})
        again = api.post("/generate", json={"prompt": TEN_WORDS + " fallback", "temperature": 0.9})
        assert again.status_code == 200
        assert again.headers["x-cache"] == "HIT" and again.headers["x-quota-fallback"] == "true"
        assert again.json()["content"] == original.json()["content"]
        assert api.post("/generate", json={"prompt": "never asked before"}).status_code == 429


def test_deterministic_requests_are_served_from_the_cache(limited):
    request = {"prompt": "cache me please", "temperature": 0}
    with limited.client(limited.signup_and_login()) as api:
        first = api.post("/generate", json=request)
        second = api.post("/generate", json=request)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert second.json()["content"] == first.json()["content"]
        assert second.json()["usage"] == first.json()["usage"]
        # A cache hit is still a real reply in its conversation, and costs no tokens.
        detail = api.get(f"/conversations/{second.json()['conversation_id']}").json()
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
        assert api.get("/usage").json()["total_tokens"] == first.json()["usage"]["total_tokens"]
        sampled = {"prompt": "cache me please", "temperature": 0.8}
        assert api.post("/generate", json=sampled).headers["x-cache"] == "MISS"
        seeded = {"prompt": "cache me please", "temperature": 0.8, "seed": 7}
        assert api.post("/generate", json=seeded).headers["x-cache"] == "MISS"


def test_streams_are_cached_too(limited):
    request = {"prompt": "stream from cache", "temperature": 0, "stream": True}
    with limited.client(limited.signup_and_login()) as api:
        texts = []
        for expected in ("MISS", "HIT"):
            with api.stream("POST", "/generate", json=request) as response:
                assert response.headers["x-cache"] == expected
                events = list(sse_events(response))
            assert events[-1] == "[DONE]"
            chunks = [e for e in events if isinstance(e, dict) and e["choices"]]
            texts.append("".join(c["choices"][0]["delta"].get("content", "") for c in chunks))
    assert texts == ["You said: stream from cache"] * 2


def test_cache_stats_and_pattern_invalidation_are_for_admins(limited, admin):
    request = {"prompt": "invalidate me", "temperature": 0}
    with limited.client(limited.signup_and_login()) as api:
        api.post("/generate", json=request)
        assert api.post("/generate", json=request).headers["x-cache"] == "HIT"
        assert api.get("/cache/stats").status_code == 403
        assert api.delete("/cache", params={"pattern": "*"}).status_code == 403
        stats = admin.get("/cache/stats").json()
        assert stats["hits"] >= 1 and 0 < stats["hit_rate"] <= 1
        assert stats["by_kind"]["response"]["hits"] >= 1
        deleted = admin.delete("/cache", params={"pattern": "resp:*"}).json()["deleted"]
        assert deleted >= 1
        assert api.post("/generate", json=request).headers["x-cache"] == "MISS"


def test_conversation_reads_are_cached_and_every_write_invalidates(server, api):
    assert api.get("/conversations").json()["items"] == []
    hits_before = metric(server, "cache_hits_total", 'kind="list"')
    assert api.get("/conversations").json()["items"] == []
    assert metric(server, "cache_hits_total", 'kind="list"') == hits_before + 1
    created = api.post("/conversations", json={"title": "fresh"}).json()
    assert [c["id"] for c in api.get("/conversations").json()["items"]] == [created["id"]]
    api.get(f"/conversations/{created['id']}")
    api.put(f"/conversations/{created['id']}/title", json={"title": "renamed"})
    assert api.get(f"/conversations/{created['id']}").json()["title"] == "renamed"
    assert api.get("/conversations").json()["items"][0]["title"] == "renamed"
    api.post("/generate", json={"prompt": "new message", "conversation_id": created["id"]})
    first, second = (api.get(f"/conversations/{created['id']}") for _ in range(2))
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json() == second.json() and second.json()["message_count"] == 2
    assert second.headers["x-ratelimit-limit"] and second.headers["x-request-id"]
    forged = server.client("not-a-token").get(f"/conversations/{created['id']}")
    assert forged.status_code == 401 and forged.json()["error"]["type"] == "authentication_error"
    api.delete(f"/conversations/{created['id']}")
    assert api.get("/conversations").json()["items"] == []
    assert api.get(f"/conversations/{created['id']}").status_code == 404


def test_anonymous_routes_are_limited_per_client_address(tmp_path):
    server = start_runtime(tmp_path, GPT_RATE_LIMIT_ANONYMOUS="3")
    try:
        with server.client() as anon:
            codes = [
                anon.post("/auth/login", json={"email": "x@example.com", "password": "whatever1"}).status_code
                for _ in range(4)
            ]
            last = anon.post("/auth/login", json={"email": "x@example.com", "password": "whatever1"})
        assert codes == [401, 401, 401, 429]
        assert last.json()["error"]["type"] == "requests" and last.headers["retry-after"]
        assert server.client().get("/health").status_code == 200  # probes are never limited
    finally:
        stop_runtime(server)


def test_websockets_count_against_the_rate_limit(limited):
    token = limited.signup_and_login()
    with ws_connect(limited.ws_url, token) as ws:  # the connection is request 1 of 6
        for i in range(5):
            ws.send(
                json.dumps({"type": "generate", "request_id": f"r{i}", "content": "hi", "params": {"max_tokens": 2}})
            )
            assert ws_frames_until_done(ws, f"r{i}")[-1]["type"] == "done"
        ws.send(json.dumps({"type": "generate", "request_id": "over", "content": "hi"}))
        refused = ws_frames_until_done(ws, "over")[-1]
        assert refused["type"] == "error" and refused["error"]["type"] == "requests"
    with ws_connect(limited.ws_url, token) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4429
