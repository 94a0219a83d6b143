"""The search service without a model: chunking, ranking, lazy indexing and the per-process vector cache
(which must answer exactly what a fresh process answers after appends, renames and deletes)."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest
from gpt_runtime.services.search import CHUNK_CHARS, ConversationSearch, _blocks, _Vectors, chunk_text, rank
from gpt_runtime.storage import NewMessage
from gpt_runtime.storage.base import VectorRows
from gpt_runtime.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.unit
DIM = 8


async def word_embed(texts: list[str]) -> np.ndarray:
    """A stand-in model: each text is the normalized sum of its words' fixed random vectors."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
            out[i] += np.random.default_rng(seed).standard_normal(DIM)
        out[i] /= np.linalg.norm(out[i]) or 1
    return out


def test_chunks_are_bounded_and_cut_between_words():
    assert chunk_text("  a  b\nc ") == ["a b c"]
    assert chunk_text("") == []
    long = " ".join(["word"] * 1000)
    chunks = chunk_text(long)
    assert all(len(c) <= CHUNK_CHARS for c in chunks) and all(not c.startswith(" ") for c in chunks)
    assert " ".join(chunks) == long[: len(" ".join(chunks))]
    assert chunk_text("x" * 2500) == ["x" * 1000, "x" * 1000, "x" * 500]
    assert len(chunk_text("word " * 100_000)) == 8


def test_rank_takes_each_live_conversations_best_chunk():
    vectors = np.eye(4, dtype=np.float32)
    rows = VectorRows(["b", "a", "b", "c"], ["b0", "a0", "b1", "c0"], vectors.tobytes())
    grouped = _Vectors.of(_blocks(rows, 4), 4)
    query = np.array([0.1, 0.5, 0.9, 0.3], dtype=np.float32)
    hits = rank(grouped, query, {"a", "b"}, 10)  # c is not live
    assert [(grouped.conversation_of(r), grouped.keys[r], round(s, 2)) for r, s in hits] == [
        ("b", "b1", 0.9),
        ("a", "a0", 0.5),
    ]
    assert len(rank(grouped, query, {"a", "b", "c"}, 1)) == 1
    assert rank(grouped, query, set(), 5) == []


async def _results(search: ConversationSearch, user_id: str, query: str) -> list[tuple[str, float, str]]:
    hits, pending = await search.search(user_id, query, 10)
    assert pending == 0
    return [(h.conversation_id, h.score, h.snippet) for h in hits]


def test_the_cache_answers_what_a_fresh_process_answers(tmp_path):
    async def scenario() -> None:
        store = SQLiteStore(str(tmp_path / "gpt.db"))
        await store.open()
        ann = await store.create_user("ann@example.com", "h")
        cached = ConversationSearch(store, word_embed, dim=lambda: DIM, batch=1000, cache_bytes=2**20)

        async def same_as_fresh(query: str) -> list[tuple[str, float, str]]:
            fresh = ConversationSearch(store, word_embed, dim=lambda: DIM, batch=1000, cache_bytes=0)
            expected = await _results(fresh, ann.id, query)
            assert await _results(cached, ann.id, query) == expected
            return expected

        bread = await store.create_conversation(ann.id, "bread")
        await store.add_messages(ann.id, bread.id, [NewMessage("user", "sourdough starter flour water")])
        pods = await store.create_conversation(ann.id, "pods")
        await store.add_messages(ann.id, pods.id, [NewMessage("user", "kubernetes pod crash loop")])
        assert (await same_as_fresh("sourdough flour"))[0][0] == bread.id

        await store.add_messages(ann.id, pods.id, [NewMessage("assistant", "sourdough flour again")])
        top = (await same_as_fresh("sourdough flour again"))[0]
        assert top[0] == pods.id and top[2] == "sourdough flour again"

        await store.rename_conversation(ann.id, bread.id, "ski trip")
        assert (await same_as_fresh("ski trip"))[0][:2] == (bread.id, pytest.approx(1.0, abs=1e-5))

        await store.delete_conversation(ann.id, pods.id)
        assert [r[0] for r in await same_as_fresh("sourdough flour again")] == [bread.id]
        await store.close()

    asyncio.run(scenario())


def test_a_backlog_beyond_the_batch_is_pending_then_indexed_in_the_background(tmp_path):
    async def scenario() -> None:
        store = SQLiteStore(str(tmp_path / "gpt.db"))
        await store.open()
        ann = await store.create_user("ann@example.com", "h")
        for i in range(6):
            conversation = await store.create_conversation(ann.id, f"topic {i}")
            await store.add_messages(ann.id, conversation.id, [NewMessage("user", f"message {i}")])
        search = ConversationSearch(store, word_embed, dim=lambda: DIM, batch=4, cache_bytes=2**20)
        hits, pending = await search.search(ann.id, "topic", 10)
        assert pending == 4 and len(hits) == 2  # 2 chunks per conversation: 2 conversations indexed
        for _ in range(100):
            if not search._background:
                break
            await asyncio.sleep(0.01)
        hits, pending = await search.search(ann.id, "topic", 10)
        assert (pending, len(hits)) == (0, 6)
        await search.close()
        await store.close()

    asyncio.run(scenario())
