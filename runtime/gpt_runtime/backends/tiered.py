"""A small in-process LRU in front of a shared cache: hot keys skip the network."""

from __future__ import annotations

from gpt_runtime.backends import Cache
from gpt_runtime.backends.memory import MemoryCache


class TieredCache:
    """Reads local first, then remote (filling local); writes and invalidations go to both.

    Local entries live at most `local_ttl_s`, which bounds how long another pod's invalidation
    can go unseen here. Keys under `shared_prefixes` (version stamps) always go to the remote.
    """

    shared_prefixes = ("ver:",)

    def __init__(self, remote: Cache, local: MemoryCache | None = None, local_ttl_s: int = 5):
        self.remote = remote
        self.local = local or MemoryCache(max_entries=2_000)
        self.local_ttl_s = local_ttl_s

    async def get(self, key: str) -> bytes | None:
        if key.startswith(self.shared_prefixes):
            return await self.remote.get(key)
        value = await self.local.get(key)
        if value is None:
            value = await self.remote.get(key)
            if value is not None:
                await self.local.set(key, value, self.local_ttl_s)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if not key.startswith(self.shared_prefixes):
            await self.local.set(key, value, min(ttl_s, self.local_ttl_s))
        await self.remote.set(key, value, ttl_s)

    async def delete(self, *keys: str) -> None:
        await self.local.delete(*keys)
        await self.remote.delete(*keys)

    async def delete_pattern(self, pattern: str) -> int:
        local = await self.local.delete_pattern(pattern)
        remote = await self.remote.delete_pattern(pattern)
        return max(local, remote)

    async def ping(self) -> bool:
        return await self.remote.ping()

    async def close(self) -> None:
        await self.local.close()
        await self.remote.close()
