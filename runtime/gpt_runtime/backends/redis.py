"""Redis backends shared by every pod: cache, sliding-window counters and a reliable job queue.

Every call degrades instead of failing: when Redis is unreachable the cache misses, the counters
fall back to this pod's memory, and a circuit breaker skips Redis for a few seconds so requests do
not wait on timeouts. The job queue is the exception: it raises, and the API answers 503. Each failed call is reported
to `on_error(backend)` (the runtime counts them in redis_errors_total).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gpt_runtime.backends import Delivery, WindowState
from gpt_runtime.backends.memory import MemoryWindowCounter
from gpt_runtime.backends.window import window_state

log = logging.getLogger("gpt_runtime.redis")
T = TypeVar("T")
ErrorHook = Callable[[str], None]  # called with the backend's name (cache, limits, queue) when a Redis call fails

_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[4]
local index = math.floor(now / window)
local elapsed = now - index * window
local cur_key = KEYS[1] .. ':' .. index
local cur = tonumber(redis.call('GET', cur_key) or '0')
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (index - 1)) or '0')
local allowed = 0
if mode == 'add' then
  cur = redis.call('INCRBY', cur_key, cost)
  redis.call('EXPIRE', cur_key, window * 2)
  allowed = 1
elseif cur + prev * math.max(0, 1 - elapsed / window) + cost <= limit then
  allowed = 1
  if mode == 'hit' then
    cur = redis.call('INCRBY', cur_key, cost)
    redis.call('EXPIRE', cur_key, window * 2)
  end
end
return {allowed, cur, prev, tostring(elapsed)}
"""

_RECEIVE_LUA = """
local raw = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not raw then return false end
local id = cjson.decode(raw)['id']
redis.call('SET', KEYS[3] .. id, '1', 'PX', ARGV[1])
local count = redis.call('HINCRBY', KEYS[4], id, 1)
return {raw, count}
"""

# Give back every in-flight message whose lease expired (its worker died): to pending, or dead after max receives.
_REAP_LUA = """
local moved = 0
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local id = cjson.decode(raw)['id']
  if redis.call('EXISTS', KEYS[3] .. id) == 0 then
    redis.call('LREM', KEYS[2], 1, raw)
    local count = tonumber(redis.call('HGET', KEYS[4], id) or '0')
    if count >= tonumber(ARGV[1]) then
      redis.call('LPUSH', KEYS[5], raw)
      redis.call('HDEL', KEYS[4], id)
    else
      redis.call('RPUSH', KEYS[1], raw)
    end
    moved = moved + 1
  end
end
return moved
"""

# Renew a lease while the message is still in flight (not yet given back by a reaper).
_EXTEND_LUA = """
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""


def connect(url: str, timeout_s: float = 0.5) -> aioredis.Redis:
    """A client with short timeouts, so a dead Redis costs milliseconds, not seconds."""
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
    )


class CircuitBreaker:
    """Skips a failing dependency for `cooldown_s` after an error."""

    def __init__(
        self,
        name: str,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_error: ErrorHook | None = None,
    ):
        self.name = name
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_error = on_error
        self.open_until = 0.0

    @property
    def closed(self) -> bool:
        return self.clock() >= self.open_until

    async def call(self, operation: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        if not self.closed:
            return await fallback()
        try:
            return await operation()
        except (RedisError, OSError) as exc:
            if self.on_error is not None:
                self.on_error(self.name)
            if self.closed:
                log.warning("redis unavailable, degrading", extra={"backend": self.name, "error": type(exc).__name__})
            self.open_until = self.clock() + self.cooldown_s
            return await fallback()


class RedisBacked:
    """What every Redis backend shares: a client, a health check and closing it."""

    client: aioredis.Redis

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


async def _none() -> None:
    return None


class RedisCache(RedisBacked):
    """Cache in Redis; errors read as misses."""

    def __init__(self, client: aioredis.Redis, prefix: str = "gpt:cache:", on_error: ErrorHook | None = None):
        self.client = client
        self.prefix = prefix
        self.breaker = CircuitBreaker("cache", on_error=on_error)

    async def get(self, key: str) -> bytes | None:
        # redis' types allow str for any client; this one is made without decode_responses, so it answers bytes
        return await self.breaker.call(
            lambda: cast("Awaitable[bytes | None]", self.client.get(self.prefix + key)), _none
        )

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.breaker.call(lambda: self.client.set(self.prefix + key, value, ex=ttl_s), _none)

    async def delete(self, *keys: str) -> None:
        if keys:
            await self.breaker.call(lambda: self.client.unlink(*(self.prefix + k for k in keys)), _none)

    async def delete_pattern(self, pattern: str) -> int:
        async def scan_and_delete() -> int:
            deleted = 0
            batch: list[bytes] = []
            async for key in self.client.scan_iter(match=self.prefix + pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self.client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await self.client.unlink(*batch)
            return deleted

        async def zero() -> int:
            return 0

        return await self.breaker.call(scan_and_delete, zero)


class RedisWindowCounter(RedisBacked):
    """Sliding-window counters in Redis (one Lua script: atomic across pods), local memory when Redis is down."""

    def __init__(self, client: aioredis.Redis, prefix: str = "gpt:rl:", on_error: ErrorHook | None = None):
        self.client = client
        self.prefix = prefix
        self.fallback = MemoryWindowCounter()
        self.breaker = CircuitBreaker("limits", on_error=on_error)
        self._script = client.register_script(_WINDOW_LUA)

    async def _run(self, key: str, window_s: int, limit: int, cost: int, mode: str) -> WindowState:
        allowed, current, previous, elapsed = await self._script(
            keys=[f"{self.prefix}{{{key}}}:{window_s}"], args=[window_s, limit, cost, mode]
        )
        return window_state(int(current), int(previous), float(elapsed), window_s, limit, cost, bool(allowed))

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> WindowState:
        return await self.breaker.call(
            lambda: self._run(key, window_s, limit, cost, "hit"),
            lambda: self.fallback.hit(key, limit, window_s, cost),
        )

    async def add(self, key: str, window_s: int, amount: int) -> None:
        async def remote() -> None:
            await self._run(key, window_s, 0, amount, "add")

        await self.breaker.call(remote, lambda: self.fallback.add(key, window_s, amount))

    async def peek(self, key: str, limit: int, window_s: int) -> WindowState:
        return await self.breaker.call(
            lambda: self._run(key, window_s, limit, 1, "peek"),
            lambda: self.fallback.peek(key, limit, window_s),
        )


class RedisJobQueue(RedisBacked):
    """A reliable queue: a message moves to a processing list under a lease; if its worker dies the
    lease expires and any worker's reaper gives it back; after `max_receives` deliveries it goes dead."""

    def __init__(
        self,
        client: aioredis.Redis,
        name: str = "jobs",
        visibility_timeout_s: float = 300.0,
        max_receives: int = 3,
        poll_s: float = 0.2,
        on_error: ErrorHook | None = None,
    ):
        self.client = client
        self.on_error = on_error
        base = f"gpt:queue:{{{name}}}:"
        self.keys = {
            "pending": base + "pending",
            "processing": base + "processing",
            "lease": base + "lease:",
            "receives": base + "receives",
            "dead": base + "dead",
        }
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receives = max_receives
        self.poll_s = poll_s
        self._receive = client.register_script(_RECEIVE_LUA)
        self._reap = client.register_script(_REAP_LUA)
        self._extend = client.register_script(_EXTEND_LUA)
        self._last_reap = 0.0

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        """Report a failed call to on_error, then raise it (the queue does not degrade)."""
        try:
            yield
        except (RedisError, OSError):
            if self.on_error is not None:
                self.on_error("queue")
            raise

    async def enqueue(self, body: str) -> None:
        with self._counted():
            await self.client.lpush(self.keys["pending"], json.dumps({"id": uuid.uuid4().hex, "body": body}))

    async def depth(self) -> int:
        """LLEN of the pending list: messages waiting for a worker."""
        with self._counted():
            return int(await self.client.llen(self.keys["pending"]))

    async def reap(self) -> int:
        """Return expired in-flight messages to the queue (or the DLQ); how many moved."""
        k = self.keys
        keys = [k["pending"], k["processing"], k["lease"], k["receives"], k["dead"]]
        return int(await self._reap(keys=keys, args=[self.max_receives]))

    async def receive(self, wait_s: float) -> Delivery | None:
        with self._counted():
            return await self._do_receive(wait_s)

    async def _do_receive(self, wait_s: float) -> Delivery | None:
        deadline = time.monotonic() + wait_s
        k = self.keys
        while True:
            if time.monotonic() - self._last_reap >= 1.0:
                self._last_reap = time.monotonic()
                await self.reap()
            result = await self._receive(
                keys=[k["pending"], k["processing"], k["lease"], k["receives"]],
                args=[int(self.visibility_timeout_s * 1000)],
            )
            if result:
                raw, count = result
                raw = raw.decode() if isinstance(raw, bytes) else raw
                return Delivery(json.loads(raw)["body"], raw, int(count))
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))

    async def extend(self, delivery: Delivery) -> None:
        with self._counted():
            await self._do_extend(delivery)

    async def _do_extend(self, delivery: Delivery) -> None:
        """Renew the lease while the message is still in flight (one already given back stays given back)."""
        message_id = json.loads(delivery.receipt)["id"]
        await self._extend(
            keys=[self.keys["processing"], self.keys["lease"] + message_id],
            args=[delivery.receipt, int(self.visibility_timeout_s * 1000)],
        )

    async def ack(self, delivery: Delivery) -> None:
        with self._counted():
            await self._do_ack(delivery)

    async def _do_ack(self, delivery: Delivery) -> None:
        message_id = json.loads(delivery.receipt)["id"]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(self.keys["processing"], 1, delivery.receipt)
            pipe.delete(self.keys["lease"] + message_id)
            pipe.hdel(self.keys["receives"], message_id)
            await pipe.execute()

    async def retry(self, delivery: Delivery) -> None:
        with self._counted():
            await self._do_retry(delivery)

    async def _do_retry(self, delivery: Delivery) -> None:
        message_id = json.loads(delivery.receipt)["id"]
        dead = delivery.receive_count >= self.max_receives
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(self.keys["processing"], 1, delivery.receipt)
            pipe.delete(self.keys["lease"] + message_id)
            if dead:
                pipe.lpush(self.keys["dead"], delivery.receipt)
                pipe.hdel(self.keys["receives"], message_id)
            else:
                pipe.rpush(self.keys["pending"], delivery.receipt)
            await pipe.execute()

    async def dead_letters(self) -> list[str]:
        raws = await self.client.lrange(self.keys["dead"], 0, -1)
        return [json.loads(raw)["body"] for raw in raws]
