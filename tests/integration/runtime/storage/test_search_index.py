"""The search index's part of the Store contract, on SQLite and on DynamoDB (moto's server over HTTP):
vectors kept with their owner, index states that follow renames and appends, deletes that take the vectors."""

from __future__ import annotations

import numpy as np
import pytest
from gpt_runtime.storage import NewMessage
from gpt_runtime.storage.base import SearchChunk

from .conftest import Backend

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
DIM = 384


def _vector(seed: int) -> bytes:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype("<f4")
    return (vector / np.linalg.norm(vector)).astype("<f4").tobytes()


def _chunk(key: str, seed: int) -> SearchChunk:
    return SearchChunk(key, f"snippet of {key}", _vector(seed))


async def _states(backend: Backend, user_id: str) -> dict[str, tuple[str | None, int, bool]]:
    return {
        s.conversation.id: (s.indexed_title, s.indexed_messages, s.stale)
        for s in await backend.store.index_states(user_id)
    }


async def test_a_new_conversation_is_stale_until_indexed_and_again_after_a_rename_or_append(backend: Backend):
    store = backend.store
    ann = await store.create_user("ann@example.com", "h")
    conversation = await store.create_conversation(ann.id, "Sourdough")
    await store.add_messages(ann.id, conversation.id, [NewMessage("user", "proofing times?")])
    assert await _states(backend, ann.id) == {conversation.id: (None, 0, True)}

    stored = await store.put_search_chunks(
        ann.id, conversation.id, [_chunk("title", 1), _chunk("m1.0", 2)], title="Sourdough", messages=1
    )
    assert stored is True
    assert await _states(backend, ann.id) == {conversation.id: ("Sourdough", 1, False)}

    await store.rename_conversation(ann.id, conversation.id, "Bread")
    assert await _states(backend, ann.id) == {conversation.id: ("Sourdough", 1, True)}
    await store.put_search_chunks(ann.id, conversation.id, [_chunk("title", 3)], title="Bread", messages=1)
    await store.add_messages(ann.id, conversation.id, [NewMessage("assistant", "about four hours")])
    assert await _states(backend, ann.id) == {conversation.id: ("Bread", 1, True)}

    rows = await store.search_vectors(ann.id)
    assert sorted(zip(rows.conversation_ids, rows.keys, strict=True)) == [
        (conversation.id, "m1.0"),
        (conversation.id, "title"),
    ]
    matrix = np.frombuffer(rows.matrix, dtype="<f4").reshape(-1, DIM)
    title_row = rows.keys.index("title")
    assert matrix[title_row].tobytes() == _vector(3)  # replaced by key: the renamed title's vector
    other = await store.create_conversation(ann.id, "other")
    await store.put_search_chunks(ann.id, other.id, [_chunk("title", 4)], title="other", messages=0)
    some = await store.search_vectors(ann.id, [other.id])
    assert (some.conversation_ids, some.keys, some.matrix) == ([other.id], ["title"], _vector(4))
    assert (await store.search_vectors(ann.id, [])).keys == []
    assert len((await store.search_vectors(ann.id)).keys) == 3
    assert await store.search_snippets(ann.id, [(conversation.id, "title"), (conversation.id, "nope")]) == {
        (conversation.id, "title"): "snippet of title"
    }


async def test_vectors_are_reachable_only_by_their_owner(backend: Backend):
    store = backend.store
    ann = await store.create_user("ann@example.com", "h")
    bob = await store.create_user("bob@example.com", "h")
    anns = await store.create_conversation(ann.id, "Ann's")
    await store.put_search_chunks(ann.id, anns.id, [_chunk("title", 1)], title="Ann's", messages=0)

    assert await store.put_search_chunks(bob.id, anns.id, [_chunk("title", 2)], title="x", messages=0) is False
    bobs_rows = await store.search_vectors(bob.id)
    assert (bobs_rows.conversation_ids, bobs_rows.keys, bobs_rows.matrix) == ([], [], b"")
    assert await store.search_snippets(bob.id, [(anns.id, "title")]) == {}
    assert (await store.search_vectors(bob.id, [anns.id])).keys == []
    assert await _states(backend, bob.id) == {}
    await store.delete_search_chunks(bob.id, anns.id)  # not bob's: nothing happens
    assert (await store.search_vectors(ann.id)).keys == ["title"]
    assert np.frombuffer((await store.search_vectors(ann.id)).matrix, dtype="<f4").tobytes() == _vector(1)


async def test_deleting_a_conversation_deletes_its_vectors_and_state(backend: Backend):
    store = backend.store
    ann = await store.create_user("ann@example.com", "h")
    kept = await store.create_conversation(ann.id, "kept")
    gone = await store.create_conversation(ann.id, "gone")
    await store.put_search_chunks(ann.id, kept.id, [_chunk("title", 1)], title="kept", messages=0)
    many = [_chunk(f"m{i}.0", i) for i in range(60)]  # more than one batch write
    await store.put_search_chunks(ann.id, gone.id, many, title="gone", messages=60)

    assert await store.delete_conversation(ann.id, gone.id)
    rows = await store.search_vectors(ann.id)
    assert set(rows.conversation_ids) == {kept.id}
    assert await store.search_snippets(ann.id, [(gone.id, "m0.0")]) == {}
    assert set(await _states(backend, ann.id)) == {kept.id}
    # a late indexer (it read the conversation before the delete) keeps nothing
    assert await store.put_search_chunks(ann.id, gone.id, [_chunk("title", 5)], title="gone", messages=0) is False
    assert set((await store.search_vectors(ann.id)).conversation_ids) == {kept.id}


async def test_delete_search_chunks_resets_a_conversations_index(backend: Backend):
    store = backend.store
    ann = await store.create_user("ann@example.com", "h")
    conversation = await store.create_conversation(ann.id, "t")
    await store.put_search_chunks(ann.id, conversation.id, [_chunk("title", 1)], title="t", messages=0)
    await store.delete_search_chunks(ann.id, conversation.id)
    assert (await store.search_vectors(ann.id)).keys == []
    assert await _states(backend, ann.id) == {conversation.id: (None, 0, True)}
