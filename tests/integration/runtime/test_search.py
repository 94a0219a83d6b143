"""Conversation search by meaning on a real uvicorn with the real embedding model (all-MiniLM-L6-v2):
each user finds their own conversation first, never sees another's, renames and deletes show at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import RuntimeServer, start_runtime, stop_runtime

pytestmark = pytest.mark.integration

ANN = {
    "sourdough": "How long should I let my sourdough proof before it goes into the oven?",
    "kubernetes": "My Kubernetes pod is in CrashLoopBackOff after I changed the container image.",
    "taxes": "Can I deduct my home office from my income tax return as a freelancer?",
}
BOB = {
    "tomatoes": "Why are the leaves of my tomato plants turning yellow in the garden?",
    "bread": "What flour is best for baking a crusty loaf of bread at home?",
}


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    runtime = start_runtime(
        tmp_path_factory.mktemp("search"),
        GPT_MODEL_SOURCE="fake:echo?context=2048",
        GPT_RATE_LIMIT_ANONYMOUS="0",
        GPT_RATE_LIMIT_FREE="0",
        GPT_QUOTA_FREE="0,0,0,0",
    )
    yield runtime
    stop_runtime(runtime)


def search(api: httpx.Client, q: str, **params: object) -> httpx.Response:
    """GET /conversations/search, waiting out 503 embeddings_loading (the model loads on first use)."""
    deadline = time.monotonic() + 120
    while True:
        response = api.get("/conversations/search", params={"q": q, **params})
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        assert response.json()["error"]["code"] == "embeddings_loading", response.text
        time.sleep(float(response.headers["retry-after"]) / 4)


def chat(api: httpx.Client, prompts: dict[str, str]) -> dict[str, str]:
    """One conversation per prompt (made by /generate, titled by the prompt); topic -> conversation id."""
    ids = {}
    for topic, prompt in prompts.items():
        response = api.post("/generate", json={"prompt": prompt})
        assert response.status_code == 200, response.text
        ids[topic] = response.json()["conversation_id"]
    return ids


def ranked(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pending"] == 0
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    return [r["conversation_id"] for r in body["results"]]


def test_each_user_finds_their_own_conversation_first_and_only_their_own(search_server):
    ann_token, bob_token = search_server.signup_and_login(), search_server.signup_and_login()
    with search_server.client(ann_token) as ann, search_server.client(bob_token) as bob:
        anns, bobs = chat(ann, ANN), chat(bob, BOB)

        for query, topic in [
            ("letting bread dough rise", "sourdough"),
            ("container keeps crashing and restarting", "kubernetes"),
            ("claiming work expenses with the revenue service", "taxes"),
        ]:
            results = ranked(search(ann, query))
            assert results[0] == anns[topic], (query, results)
            assert set(results) == set(anns.values())  # all of Ann's, none of Bob's

        hit = search(ann, "letting bread dough rise").json()["results"][0]
        assert hit["title"].startswith("How long should I let my sourdough")
        assert "sourdough" in hit["snippet"] and 0 < hit["score"] <= 1

        # Bob's bread conversation is his best match for bread; Ann's never shows up for him
        results = ranked(search(bob, "baking bread"))
        assert results[0] == bobs["bread"]
        assert set(results) == set(bobs.values())
        assert ranked(search(bob, "pod crash loop"))[0] != anns["kubernetes"]
        assert ranked(search(bob, "yellow leaves", limit=1)) == [bobs["tomatoes"]]


def test_new_renamed_and_deleted_conversations_show_in_the_next_search(search_server):
    with search_server.client(search_server.signup_and_login()) as api:
        ids = chat(api, ANN)
        assert ranked(search(api, "dough rising time"))[0] == ids["sourdough"]

        # a new conversation is found by the very next search (no cached answer, no waiting for an indexer)
        ids |= chat(api, {"cycling": "Which gear ratio should I use on my road bike for steep hills?"})
        first = search(api, "bicycle climbing mountains")
        assert "x-cache" not in first.headers
        assert ranked(first)[0] == ids["cycling"]

        # renaming re-embeds the title
        renamed = api.put(f"/conversations/{ids['taxes']}/title", json={"title": "Packing list for a ski trip"})
        assert renamed.status_code == 200
        top = search(api, "what to bring skiing in the snow").json()["results"][0]
        assert (top["conversation_id"], top["title"]) == (ids["taxes"], "Packing list for a ski trip")

        # deleting removes it from every later answer
        assert api.delete(f"/conversations/{ids['sourdough']}").status_code == 204
        assert ids["sourdough"] not in ranked(search(api, "dough rising time"))
        assert set(ranked(search(api, "anything at all"))) == set(ids.values()) - {ids["sourdough"]}


def test_a_user_without_conversations_gets_no_results(search_server):
    with search_server.client(search_server.signup_and_login()) as api:
        assert search(api, "sourdough").json() == {"results": [], "pending": 0}


def test_search_is_not_taken_for_a_conversation_id(search_server):
    with search_server.client(search_server.signup_and_login()) as api:
        response = search(api, "hello")
        assert response.status_code == 200 and set(response.json()) == {"results", "pending"}
        # and a conversation route with another id is still a conversation route
        missing = api.get("/conversations/searching")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "conversation_not_found"


@pytest.mark.parametrize(
    "params",
    [{}, {"q": ""}, {"q": "   "}, {"q": "x" * 501}, {"q": "ok", "limit": 0}, {"q": "ok", "limit": 51}],
)
def test_bad_queries_are_422(search_server, params):
    with search_server.client(search_server.signup_and_login()) as api:
        response = api.get("/conversations/search", params=params)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] in ("q", "limit")


def test_search_and_embeddings_need_a_token(search_server):
    with search_server.client() as anon:
        for response in (
            anon.get("/conversations/search", params={"q": "bread"}),
            anon.post("/v1/embeddings", json={"input": "bread"}),
        ):
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "missing_token"


def test_embeddings_over_http(search_server):
    with search_server.client(search_server.signup_and_login()) as api:
        search(api, "wait for the model")
        response = api.post("/v1/embeddings", json={"input": ["a cat naps", "a kitten sleeps", "tax forms"]})
        assert response.status_code == 200, response.text
        body = response.json()
        vectors = [d["embedding"] for d in body["data"]]
        assert [len(v) for v in vectors] == [384, 384, 384]
        cosine = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
        assert cosine[0] > cosine[1]


def test_disabled_embeddings_answer_501(tmp_path):
    server = start_runtime(tmp_path, GPT_EMBEDDING_MODEL_SOURCE="none", GPT_RATE_LIMIT_ANONYMOUS="0")
    try:
        with server.client(server.signup_and_login()) as api:
            for response in (
                api.get("/conversations/search", params={"q": "bread"}),
                api.post("/v1/embeddings", json={"input": "bread"}),
            ):
                assert response.status_code == 501, response.text
                error = response.json()["error"]
                assert (error["code"], error["type"]) == ("embeddings_disabled", "not_implemented_error")
    finally:
        stop_runtime(server)
