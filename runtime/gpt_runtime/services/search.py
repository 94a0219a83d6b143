"""Conversation search by meaning: an index kept per user in the store, caught up at search time, and a
brute-force cosine ranking over the caller's own vectors.

What is indexed: each conversation's title and every message, cut into chunks of at most CHUNK_CHARS
characters (about the embedding model's 256-token window; at most MAX_CHUNKS per message). A conversation
scores by its best chunk; the snippet is that chunk's start.

When: lazily. A search first embeds what changed since the last one (conversations whose title or message
count differ from what the index records: Store.index_states), at most `batch` chunks before it answers; the
rest is indexed in the background and the answer says how many conversations are still `pending`. So the
generation path never waits for an embedding, and a separate worker process needs no embedding model.
Deleting a conversation deletes its vectors with it (SQLite: ON DELETE CASCADE; DynamoDB: in delete), and
results only ever name conversations that exist now.

Ranking is a matrix product over all of the user's vectors, kept per process in an LRU cache (bounded in
bytes) that is valid while the user's index states are unchanged; see hack/bench_search.py for the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from gpt_runtime.storage.base import IndexState, SearchChunk, Store

log = logging.getLogger("gpt_runtime.search")
CHUNK_CHARS = 1000
MAX_CHUNKS = 8  # per message: the rest of a very long message is not searchable
SNIPPET_CHARS = 200
TITLE_KEY = "title"

Embed = Callable[[list[str]], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class SearchHit:
    conversation_id: str
    title: str
    score: float
    snippet: str


def chunk_text(text: str, size: int = CHUNK_CHARS, limit: int = MAX_CHUNKS) -> list[str]:
    """Whitespace-normalized pieces of at most `size` characters, cut between words where one fits."""
    words = text.split()
    chunks: list[str] = []
    current = ""
    for word in words:
        while len(word) > size:  # a "word" longer than a chunk (a URL, base64): cut it
            if current:
                chunks.append(current)
                current = ""
            chunks.append(word[:size])
            word = word[size:]
        if current and len(current) + 1 + len(word) > size:
            chunks.append(current)
            current = ""
        current = f"{current} {word}" if current else word
    if current:
        chunks.append(current)
    return chunks[:limit]


def _fingerprint(states: list[IndexState]) -> str:
    """Changes whenever the set of a user's indexed vectors can have changed."""
    digest = hashlib.sha256()
    for state in sorted(states, key=lambda s: s.conversation.id):
        digest.update(f"{state.conversation.id}\0{state.indexed_title}\0{state.indexed_messages}\n".encode())
    return digest.hexdigest()


@dataclass
class _Vectors:
    """One user's vectors as loaded: row i belongs to conversations[conv_index[i]] and is keys[i]."""

    fingerprint: str
    conversations: list[str]
    conv_index: np.ndarray
    keys: list[str]
    matrix: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + self.conv_index.nbytes


class ConversationSearch:
    """Index and search one store's conversations; one instance per process."""

    def __init__(self, store: Store, embed: Embed, *, dim: Callable[[], int], batch: int, cache_bytes: int):
        self.store = store
        self.embed = embed
        self.dim = dim
        self.batch = batch
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, _Vectors] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._background: dict[str, asyncio.Task] = {}

    def _lock(self, user_id: str) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        return lock

    async def search(self, user_id: str, query: str, limit: int) -> tuple[list[SearchHit], int]:
        """The user's conversations ranked by meaning for `query`, best first, and how many are pending."""
        states, pending = await self.catch_up(user_id)
        if pending:
            self._continue_in_background(user_id)
        query_vector = (await self.embed([query]))[0]
        live = {state.conversation.id: state.conversation for state in states}
        vectors = await self._vectors(user_id, states)
        ranked = rank(vectors, query_vector, live, limit)
        gone = sorted(set(vectors.conversations) - set(live))
        for conversation_id in gone:  # vectors of a conversation deleted while it was being indexed
            await self.store.delete_search_chunks(user_id, conversation_id)
        refs = [(vectors.conversations[vectors.conv_index[row]], vectors.keys[row]) for row, _ in ranked]
        snippets = await self.store.search_snippets(user_id, refs) if refs else {}
        hits = [
            SearchHit(ref[0], live[ref[0]].title, round(score, 4), snippets.get(ref, ""))
            for ref, (_, score) in zip(refs, ranked, strict=True)
        ]
        return hits, pending

    async def catch_up(self, user_id: str) -> tuple[list[IndexState], int]:
        """Embed up to `batch` chunks of what changed; the user's index states after, and how many are stale."""
        async with self._lock(user_id):
            states = await self.store.index_states(user_id)
            stale = sorted((s for s in states if s.stale), key=lambda s: -s.conversation.updated_at)
            if not stale:
                return states, 0
            budget = self.batch
            for state in stale:
                if budget <= 0:
                    break
                budget -= await self._index(user_id, state, budget)
            states = await self.store.index_states(user_id)
            return states, sum(1 for s in states if s.stale)

    async def _index(self, user_id: str, state: IndexState, budget: int) -> int:
        """Index one conversation's new title and messages (at most `budget` chunks); the chunks embedded."""
        conversation = state.conversation
        messages = await self.store.list_messages(user_id, conversation.id)
        if messages is None:
            return 0
        start = state.indexed_messages if state.indexed_messages <= len(messages) else 0
        texts: list[str] = []
        keys: list[str] = []
        if state.indexed_title != conversation.title:
            texts.append(" ".join(conversation.title.split()) or conversation.title)
            keys.append(TITLE_KEY)
        done = start
        for message in messages[start:]:
            pieces = chunk_text(message.content)
            if keys and len(keys) + len(pieces) > budget:
                break
            texts += pieces
            keys += [f"{message.id}.{n}" for n in range(len(pieces))]
            done += 1
        if texts:
            vectors = await self.embed(texts)
            chunks = [
                SearchChunk(key, text[:SNIPPET_CHARS], vector.astype("<f4").tobytes())
                for key, text, vector in zip(keys, texts, vectors, strict=True)
            ]
        else:
            chunks = []
        await self.store.put_search_chunks(user_id, conversation.id, chunks, title=conversation.title, messages=done)
        return max(len(chunks), 1)

    def _continue_in_background(self, user_id: str) -> None:
        """Index the rest of the user's backlog after answering (one task per user)."""
        if user_id in self._background:
            return

        async def run() -> None:
            try:
                pending = 1
                while pending:
                    _, pending = await self.catch_up(user_id)
            except Exception:
                log.exception("background search indexing failed")
            finally:
                self._background.pop(user_id, None)

        self._background[user_id] = asyncio.create_task(run())

    async def _vectors(self, user_id: str, states: list[IndexState]) -> _Vectors:
        fingerprint = _fingerprint(states)
        cached = self._cache.get(user_id)
        if cached is not None and cached.fingerprint == fingerprint:
            self._cache.move_to_end(user_id)
            return cached
        rows = await self.store.search_vectors(user_id)
        matrix = np.frombuffer(rows.matrix, dtype="<f4").reshape(-1, self.dim())
        conversations, conv_index = np.unique(np.array(rows.conversation_ids, dtype=object), return_inverse=True)
        vectors = _Vectors(fingerprint, list(conversations), conv_index.astype(np.int64), rows.keys, matrix)
        self._cache.pop(user_id, None)
        if vectors.nbytes <= self.cache_bytes:
            self._cache[user_id] = vectors
            while sum(v.nbytes for v in self._cache.values()) > self.cache_bytes:
                self._cache.popitem(last=False)
        return vectors

    async def close(self) -> None:
        for task in list(self._background.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._cache.clear()


def rank(vectors: _Vectors, query: np.ndarray, live: dict[str, object], limit: int) -> list[tuple[int, float]]:
    """(row, score) of each live conversation's best chunk, best first, at most `limit`."""
    if not len(vectors.keys):
        return []
    scores = vectors.matrix @ query.astype(np.float32)
    alive = np.array([c in live for c in vectors.conversations], dtype=bool)[vectors.conv_index]
    rows = np.flatnonzero(alive)
    if not len(rows):
        return []
    order = rows[np.argsort(-scores[rows], kind="stable")]
    _, first = np.unique(vectors.conv_index[order], return_index=True)  # each conversation's best row
    best = order[np.sort(first)][:limit]
    return [(int(row), float(scores[row])) for row in best]
