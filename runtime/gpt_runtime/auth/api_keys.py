"""Long-lived API keys for OpenAI-style clients: `Authorization: Bearer sk-gpt-…`.

A key is 32 random bytes (URL-safe base64) after the `sk-gpt-` prefix. The store keeps only its SHA-256
(a fast hash is enough for a high-entropy secret) and the first characters to recognise it by. A key acts
as its owner: the same role, rate limits and quotas. Keys can be revoked one by one, and all of them go
when the owner resets a forgotten password (account recovery ends every credential an intruder made).

Lookups are remembered for KEY_CACHE_TTL_S per process: a revocation through this pod holds at once,
through another pod within that time. `last_used_at` is written at most once per TOUCH_INTERVAL_S.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from gpt_runtime.domain_errors import Forbidden, NotFound, Unauthenticated
from gpt_runtime.storage import ApiKey, Store, User
from gpt_runtime.storage.base import now_us

log = logging.getLogger("gpt_runtime.auth")

API_KEY_PREFIX = "sk-gpt-"
SHOWN_PREFIX_CHARS = len(API_KEY_PREFIX) + 6
KEY_CACHE_TTL_S = 5.0
TOUCH_INTERVAL_S = 60.0
_MAX_CACHED = 10_000


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeys:
    """Create, list and revoke a user's keys; turn a presented key into its owner."""

    def __init__(self, store: Store, *, max_per_user: int = 20):
        self.store = store
        self.max_per_user = max_per_user
        self._cache: dict[str, tuple[float, ApiKey, User]] = {}  # key hash -> (expires, key, owner)

    async def create(self, user: User, name: str) -> tuple[ApiKey, str]:
        """A new key for `user`: its record and the full key, which is never shown again."""
        if len(await self.store.list_api_keys(user.id)) >= self.max_per_user:
            raise Forbidden(
                f"at most {self.max_per_user} API keys per account; revoke one first", code="too_many_api_keys"
            )
        key = new_api_key()
        record = await self.store.create_api_key(user.id, name, key[:SHOWN_PREFIX_CHARS], hash_api_key(key))
        return record, key

    async def list(self, user_id: str) -> list[ApiKey]:
        return await self.store.list_api_keys(user_id)

    async def revoke(self, user_id: str, key_id: str) -> None:
        """Delete one of the user's keys; 404 for a key that is not theirs (or not at all)."""
        if not await self.store.delete_api_key(user_id, key_id):
            raise NotFound("API key not found", param="key_id", code="api_key_not_found")
        self.forget_user(user_id)

    async def revoke_all(self, user_id: str) -> int:
        keys = await self.store.list_api_keys(user_id)
        for key in keys:
            await self.store.delete_api_key(user_id, key.id)
        self.forget_user(user_id)
        return len(keys)

    def forget_user(self, user_id: str) -> None:
        """Drop remembered lookups of a user whose keys or record changed."""
        for digest in [d for d, (_, _, owner) in self._cache.items() if owner.id == user_id]:
            del self._cache[digest]

    async def authenticate(self, key: str) -> User:
        digest = hash_api_key(key)
        now = time.monotonic()
        entry = self._cache.get(digest)
        if entry is None or entry[0] <= now:
            record = await self.store.get_api_key_by_hash(digest)
            owner = await self.store.get_user(record.user_id) if record else None
            if record is None or owner is None:
                self._cache.pop(digest, None)
                raise Unauthenticated("API key is invalid or was revoked", code="invalid_api_key")
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            entry = self._cache[digest] = (now + KEY_CACHE_TTL_S, record, owner)
        _, record, owner = entry
        used_us = now_us()
        if record.last_used_at is None or used_us - record.last_used_at > TOUCH_INTERVAL_S * 1_000_000:
            self._cache[digest] = (entry[0], _with_use(record, used_us), owner)
            try:
                await self.store.touch_api_key(owner.id, record.id, used_us)
            except Exception:  # bookkeeping: a failed write must not fail the request
                log.warning("could not record an API key's use", exc_info=True)
        return owner


def _with_use(record: ApiKey, used_us: int) -> ApiKey:
    return ApiKey(record.id, record.user_id, record.name, record.prefix, record.key_hash, record.created_at, used_us)
