"""The sentence-embedding model (all-MiniLM-L6-v2 from its wheel, loaded offline) and POST /v1/embeddings.

Quality: for 30 pairs of sentences that say the same thing in other words, each sentence is closer to its
partner than to every one of the other 29 partners (and the other way round). The margins are printed
(`pytest -s`): the smallest gap between a partner and the best unrelated sentence.
"""

from __future__ import annotations

import asyncio
import base64
import threading

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from gpt_model.embeddings import BUILTIN, BUILTIN_ID, check_source, open_embedder
from gpt_runtime.api import embeddings as embeddings_api
from gpt_runtime.deps import get_current_user
from gpt_runtime.errors import install_error_handlers
from gpt_runtime.services.embeddings import EmbeddingService
from gpt_runtime.storage import User

pytestmark = pytest.mark.unit

PAIRS = [
    ("How do I reset my password?", "I forgot my login credentials and need to change them."),
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("What time does the train to Paris leave?", "When is the departure of the Paris-bound train?"),
    ("My laptop battery drains very quickly.", "The notebook's battery runs out fast."),
    ("Preheat the oven to 200 degrees.", "Heat the oven up to two hundred degrees before baking."),
    ("The stock market fell sharply today.", "Share prices dropped steeply in today's trading."),
    ("She plays the violin in an orchestra.", "She is a violinist in a symphony orchestra."),
    ("How many calories are in a banana?", "What is the energy content of a banana?"),
    ("The meeting has been moved to Thursday.", "We rescheduled the meeting for Thursday."),
    ("My pod keeps restarting in Kubernetes.", "The Kubernetes container is stuck in a crash loop."),
    ("It is raining heavily outside.", "There is a downpour out there."),
    ("Can you recommend a good science fiction novel?", "Suggest a great sci-fi book to read."),
    ("The car won't start in cold weather.", "My vehicle fails to start when it's freezing."),
    ("He scored the winning goal in the final minute.", "His last-minute goal won the match."),
    ("Drink plenty of water when you exercise.", "Stay hydrated during workouts."),
    ("The museum is closed on Mondays.", "On Monday the museum does not open."),
    ("I need to renew my passport.", "My passport is expiring and must be renewed."),
    ("The baby is crying because she is hungry.", "The infant cries since she wants to be fed."),
    ("Python lists can be sorted with the sorted function.", "Use sorted() to order a list in Python."),
    ("The restaurant serves excellent sushi.", "That place has really great sushi."),
    ("Global temperatures are rising due to greenhouse gases.", "Climate change is driven by carbon emissions."),
    ("Please turn off the lights when you leave.", "Switch the lamps off on your way out."),
    ("The package was delivered to the wrong address.", "My parcel went to someone else's house."),
    ("He is learning to play chess.", "He's taking chess lessons."),
    ("The flight was delayed by three hours.", "Our plane took off three hours late."),
    ("Vaccines help prevent infectious diseases.", "Immunization protects against infections."),
    ("I'd like to open a savings account.", "How can I start a savings account at the bank?"),
    ("The hikers reached the summit at dawn.", "At sunrise the climbers got to the top of the mountain."),
    ("This software update fixes several security bugs.", "The patch closes a number of vulnerabilities."),
    ("Our dog loves chasing tennis balls in the park.", "The puppy enjoys running after balls at the park."),
]


@pytest.fixture(scope="module")
def embedder():
    model = open_embedder(BUILTIN)
    assert model is not None
    return model


def test_vectors_are_unit_length_float32_and_deterministic(embedder):
    vectors = embedder.embed(["A man is eating food.", "A man is eating a piece of bread.", "A man rides a horse."])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(
        vectors, embedder.embed(["A man is eating food.", "A man is eating a piece of bread.", "A man rides a horse."])
    )
    similarity = vectors @ vectors.T
    # sentence-transformers' documentation gives 0.7553 for the first two with this model
    assert abs(similarity[0, 1] - 0.7553) < 0.002
    assert similarity[0, 1] > similarity[0, 2]


def test_batches_give_the_vectors_single_texts_give(embedder):
    texts = [pair[0] for pair in PAIRS[:40]] + ["short", "a much longer sentence " * 20]
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([text])[0] for text in texts[:5] + texts[-2:]])
    assert np.allclose(together[:5], alone[:5], atol=1e-5)
    assert np.allclose(together[-2:], alone[-2:], atol=1e-5)


def test_text_past_the_window_does_not_change_the_vector(embedder):
    head = "word " * 300  # more than 256 tokens
    vectors, tokens = embedder.embed_counted([head, head + "completely different ending about volcanoes"])
    assert np.allclose(vectors[0], vectors[1], atol=1e-6)
    assert tokens == 2 * embedder.window


def test_each_paraphrase_is_closer_to_its_partner_than_to_any_unrelated_sentence(embedder):
    left = embedder.embed([a for a, _ in PAIRS])
    right = embedder.embed([b for _, b in PAIRS])
    similarity = left @ right.T
    partner = np.diag(similarity)
    unrelated = similarity.copy()
    np.fill_diagonal(unrelated, -np.inf)
    margins_left = partner - unrelated.max(axis=1)  # a_i against every other b_j
    margins_right = partner - unrelated.max(axis=0)  # b_i against every other a_j
    print(
        f"\n{len(PAIRS)} pairs: partner cosine mean {partner.mean():.3f} (min {partner.min():.3f});"
        f" best unrelated mean {unrelated.max(axis=1).mean():.3f} (max {unrelated.max():.3f});"
        f" margin min {min(margins_left.min(), margins_right.min()):.3f},"
        f" mean {np.concatenate([margins_left, margins_right]).mean():.3f}"
    )
    failures = [PAIRS[i] for i in np.flatnonzero((margins_left <= 0) | (margins_right <= 0))]
    assert not failures, failures


def test_sources(tmp_path):
    assert check_source(" none ") == "none"
    assert open_embedder("none") is None
    with pytest.raises(ValueError, match="unknown builtin"):
        check_source("builtin:bert-large")
    with pytest.raises(ValueError, match="directory"):
        check_source(str(tmp_path / "missing"))


# POST /v1/embeddings on the real router, with the real model (no server: the app is called in-process)


class _Runtime:
    def __init__(self, service: EmbeddingService | None):
        self.embeddings = service


def _app(service: EmbeddingService | None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(embeddings_api.router)
    app.state.runtime = _Runtime(service)
    user = User("u1", "u1@example.com", "h", "free", True, 0)
    app.dependency_overrides[get_current_user] = lambda: user
    return app


def _post(service: EmbeddingService | None, body: dict) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(service)), base_url="http://t") as client:
            return await client.post("/v1/embeddings", json=body)

    return asyncio.run(call())


@pytest.fixture(scope="module")
def service(embedder) -> EmbeddingService:
    service = EmbeddingService(BUILTIN, store=None, index_batch=8, cache_bytes=0)  # type: ignore[arg-type]
    service._model = embedder  # loaded above; start() would load it again in a thread
    return service


def test_embeddings_route_answers_in_openais_shape(service, embedder):
    response = _post(service, {"input": ["The cat sleeps.", "A kitten naps."], "model": BUILTIN_ID})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == BUILTIN_ID
    assert [(d["object"], d["index"], len(d["embedding"])) for d in body["data"]] == [
        ("embedding", 0, 384),
        ("embedding", 1, 384),
    ]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    expected = embedder.embed(["The cat sleeps.", "A kitten naps."])
    assert np.allclose(np.array([d["embedding"] for d in body["data"]]), expected, atol=1e-6)

    one = _post(service, {"input": "The cat sleeps.", "encoding_format": "base64", "dimensions": 384}).json()
    decoded = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, expected[0], atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "x", "model": "text-embedding-3-small"}, 404, "model"),
        ({"input": "x", "dimensions": 256}, 400, "dimensions"),
        ({"input": ""}, 422, "input"),
        ({"input": []}, 422, "input"),
        ({"input": ["x"] * 65}, 422, "input"),
        ({"input": "x" * 8193}, 422, "input"),
        ({"input": [1, 2, 3]}, 422, "input"),
        ({"input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"input": "x", "temperature": 1}, 422, "temperature"),
    ],
)
def test_embeddings_route_refuses_what_it_cannot_do(service, body, status, param):
    response = _post(service, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_embeddings_route_answers_501_when_disabled():
    response = _post(None, {"input": "x"})
    assert response.status_code == 501
    assert response.json()["error"]["code"] == "embeddings_disabled"


def test_embeddings_route_answers_503_while_the_model_loads(monkeypatch, embedder):
    """Nothing loads until the first call; that call waits load_wait_s, then 503 until loading ends, then 200."""
    release = threading.Event()
    calls: list[str] = []

    def slow_open(source: str):
        calls.append(source)
        release.wait(30)
        return embedder

    monkeypatch.setattr("gpt_runtime.services.embeddings.open_embedder", slow_open)
    loading = EmbeddingService(BUILTIN, store=None, index_batch=8, cache_bytes=0, load_wait_s=0.2)  # type: ignore[arg-type]

    async def scenario() -> list[httpx.Response]:
        assert calls == [] and loading._task is None  # constructed, not loaded: a pod that never embeds pays nothing
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(loading)), base_url="http://t") as client:
            first = await client.post("/v1/embeddings", json={"input": "x"})
            release.set()
            await asyncio.wait_for(asyncio.shield(loading._task), 30)
            second = await client.post("/v1/embeddings", json={"input": "x"})
        return [first, second]

    first, second = asyncio.run(scenario())
    assert first.status_code == 503
    assert first.json()["error"]["code"] == "embeddings_loading"
    assert first.headers["retry-after"] == "2"
    assert second.status_code == 200, second.text
    assert calls == [BUILTIN]  # loaded once
