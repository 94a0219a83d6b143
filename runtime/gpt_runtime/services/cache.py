"""Response and conversation caching on a Cache backend, with hit/miss accounting."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from gpt_model.protocol import ChatMessage, SamplingParams

from gpt_runtime.backends import Cache
from gpt_runtime.metrics import Metrics

log = logging.getLogger("gpt_runtime.cache")


def response_key(
    model_id: str, messages: Sequence[ChatMessage], params: SamplingParams, revision: str = "", *, user_id: str
) -> str:
    """sha256 of canonical JSON: the user, model and revision, every message, every sampling parameter.

    Scoped per user: another user's identical prompt is a miss, so a hit never tells one user what
    another asked.
    """
    payload = {
        "user": user_id,
        "model": model_id,
        "revision": revision,
        "messages": [[m.role, m.content] for m in messages],
        "params": {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "repetition_penalty": params.repetition_penalty,
            "seed": params.seed,
            "stop": list(params.stop),
        },
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "resp:" + hashlib.sha256(canonical.encode()).hexdigest()


def fallback_key(model_id: str, messages: Sequence[ChatMessage], *, user_id: str) -> str:
    """The user's last answer to these messages whatever the sampling: served only when their quota is exhausted."""
    canonical = json.dumps([user_id, model_id, [[m.role, m.content] for m in messages]], separators=(",", ":"))
    return "fallback:" + hashlib.sha256(canonical.encode()).hexdigest()


class UserVersions(Protocol):
    """Where the version of each user's data lives (the Store implements it)."""

    async def user_version(self, user_id: str) -> int: ...
    async def bump_user_version(self, user_id: str) -> None: ...


class CacheService:
    """JSON values by kind (responses, lists), counted as hits and misses.

    Cached conversation reads live under a per-user version that every write changes. With a shared
    cache (Redis) the version lives there; with a per-process cache (memory://) it lives in the store
    (`versions`), so a write by any process (a separate worker, another pod) reaches every reader.
    """

    def __init__(self, backend: Cache, metrics: Metrics, versions: UserVersions | None = None):
        self.backend = backend
        self.metrics = metrics
        self.versions = versions
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    async def get_raw(self, kind: str, key: str) -> bytes | None:
        """The stored bytes, counted as a hit or a miss of `kind`."""
        raw = await self.backend.get(key)
        if raw is None:
            self.misses[kind] = self.misses.get(kind, 0) + 1
            self.metrics.cache_misses.labels(kind).inc()
        else:
            self.hits[kind] = self.hits.get(kind, 0) + 1
            self.metrics.cache_hits.labels(kind).inc()
        return raw

    async def get(self, kind: str, key: str) -> dict | None:
        """A stored JSON object, or None (missing or unreadable)."""
        raw = await self.get_raw(kind, key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def set_raw(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.backend.set(key, value, ttl_s)

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        await self.backend.set(key, json.dumps(value, separators=(",", ":")).encode(), ttl_s)

    async def user_namespace(self, user_id: str) -> str | None:
        """Prefix of a user's conversation entries; it changes on every write, which invalidates them all.

        None when the version cannot be read (the store is failing): then nothing is read from or written
        to the cache for this request.
        """
        if self.versions is not None:
            try:
                return f"conv:{user_id}:s{await self.versions.user_version(user_id)}:"
            except Exception:
                log.warning("user data version unavailable; conversation cache skipped", exc_info=True)
                return None
        version = await self.backend.get(f"ver:{user_id}")
        return f"conv:{user_id}:{version.decode() if version else '0'}:"

    async def invalidate_user(self, user_id: str) -> None:
        """Drop a user's cached conversation lists and details (after any write to them): O(1), no scan.

        Never raises: the write it follows has happened (a failed bump leaves entries to their TTL).
        """
        if self.versions is not None:
            try:
                await self.versions.bump_user_version(user_id)
            except Exception:
                log.error("could not bump a user's data version; cached reads may lag", exc_info=True)
            return
        await self.backend.set(f"ver:{user_id}", uuid.uuid4().hex[:12].encode(), 7 * 86_400)

    async def invalidate(self, pattern: str) -> int:
        return await self.backend.delete_pattern(pattern)

    def stats(self) -> dict:
        kinds = sorted(set(self.hits) | set(self.misses))
        by_kind = {}
        for kind in kinds:
            hits, misses = self.hits.get(kind, 0), self.misses.get(kind, 0)
            by_kind[kind] = {"hits": hits, "misses": misses, "hit_rate": round(hits / (hits + misses), 4)}
        hits, misses = sum(self.hits.values()), sum(self.misses.values())
        total = hits + misses
        return {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / total, 4) if total else 0.0,
            "by_kind": by_kind,
        }
