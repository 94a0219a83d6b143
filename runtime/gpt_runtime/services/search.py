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
bytes): a search reads from the store only the vectors of conversations whose index state changed since the
cached copy (all of them once per process). hack/bench_search.py has the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass

import numpy as np

from gpt_runtime.storage.base import IndexState, SearchChunk, Store, VectorRows

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


@dataclass
class _Vectors:
    """One user's vectors grouped by conversation: rows starts[i]:starts[i+1] belong to conversations[i]."""

    conversations: list[str]
    starts: np.ndarray
    keys: list[str]
    matrix: np.ndarray

    @classmethod
    def of(cls, blocks: dict[str, tuple[list[str], np.ndarray]], dim: int) -> _Vectors:
        """One matrix from per-conversation blocks (the blocks become views into it: no second copy)."""
        conversations = sorted(blocks)
        sizes = [len(blocks[c][0]) for c in conversations]
        starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64) if sizes else np.zeros(0, dtype=np.int64)
        matrix = np.empty((sum(sizes), dim), dtype=np.float32)
        keys: list[str] = []
        for conversation, start, size in zip(conversations, starts, sizes, strict=True):
            block_keys, block = blocks[conversation]
            matrix[start : start + size] = block
            blocks[conversation] = (block_keys, matrix[start : start + size])
            keys += block_keys
        return cls(conversations, starts, keys, matrix)

    def conversation_of(self, row: int) -> str:
        return self.conversations[int(np.searchsorted(self.starts, row, side="right")) - 1]


@dataclass
class _UserVectors:
    """A user's cached vectors: each conversation's block, loaded at the index state it had then."""

    states: dict[str, tuple[str | None, int]]
    blocks: dict[str, tuple[list[str], np.ndarray]]
    assembled: _Vectors | None = None

    @property
    def nbytes(self) -> int:
        return sum(block.nbytes for _, block in self.blocks.values())


def _blocks(rows: VectorRows, dim: int) -> dict[str, tuple[list[str], np.ndarray]]:
    matrix = np.frombuffer(rows.matrix, dtype="<f4").reshape(-1, dim)
    grouped: dict[str, list[int]] = {}
    for row, conversation_id in enumerate(rows.conversation_ids):
        grouped.setdefault(conversation_id, []).append(row)
    return {c: ([rows.keys[i] for i in idx], matrix[idx]) for c, idx in grouped.items()}


class ConversationSearch:
    """Index and search one store's conversations; one instance per process."""

    def __init__(self, store: Store, embed: Embed, *, dim: Callable[[], int], batch: int, cache_bytes: int):
        self.store = store
        self.embed = embed
        self.dim = dim
        self.batch = batch
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, _UserVectors] = OrderedDict()
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
        refs = [(vectors.conversation_of(row), vectors.keys[row]) for row, _ in ranked]
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
        """The user's vectors: from the cache, reading only conversations whose index state changed."""
        current = {s.conversation.id: (s.indexed_title, s.indexed_messages) for s in states}
        dim = self.dim()
        entry = self._cache.pop(user_id, None)
        if entry is None:
            blocks = _blocks(await self.store.search_vectors(user_id), dim)
            for conversation_id in set(blocks) - set(current):  # deleted while it was being indexed
                del blocks[conversation_id]
                await self.store.delete_search_chunks(user_id, conversation_id)
            entry = _UserVectors(current, blocks)
        else:
            changed = [c for c, state in current.items() if entry.states.get(c) != state]
            gone = set(entry.states) - set(current)
            if changed or gone:
                for conversation_id in [*changed, *gone]:
                    entry.blocks.pop(conversation_id, None)
                if changed:
                    entry.blocks |= _blocks(await self.store.search_vectors(user_id, changed), dim)
                entry.assembled = None
            entry.states = current
        if entry.assembled is None:
            entry.assembled = _Vectors.of(entry.blocks, dim)
        if entry.nbytes <= self.cache_bytes:
            self._cache[user_id] = entry
            while sum(e.nbytes for e in self._cache.values()) > self.cache_bytes:
                self._cache.popitem(last=False)
        return entry.assembled

    async def close(self) -> None:
        for task in list(self._background.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._cache.clear()


def rank(vectors: _Vectors, query: np.ndarray, live: Container[str], limit: int) -> list[tuple[int, float]]:
    """(row, score) of each live conversation's best chunk, best first, at most `limit`."""
    if not len(vectors.keys):
        return []
    scores = vectors.matrix @ query.astype(np.float32)
    best = np.maximum.reduceat(scores, vectors.starts)  # each conversation's best score
    best[[i for i, c in enumerate(vectors.conversations) if c not in live]] = -np.inf
    count = min(limit, int(np.isfinite(best).sum()))
    if count == 0:
        return []
    top = np.argpartition(-best, count - 1)[:count]
    top = top[np.argsort(-best[top], kind="stable")]
    ends = np.r_[vectors.starts[1:], len(scores)]
    rows = [int(vectors.starts[i] + np.argmax(scores[vectors.starts[i] : ends[i]])) for i in top]
    return [(row, float(scores[row])) for row in rows]
