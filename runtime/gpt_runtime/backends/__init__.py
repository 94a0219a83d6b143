"""Shared-state backends behind small protocols; a URL picks each one (memory:// or redis://, sqs://)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class WindowState:
    """A counter's view of one window: how much is used and when the window frees up."""

    allowed: bool
    limit: int
    used: int
    reset_s: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class Cache(Protocol):
    """Bytes by key with a TTL. Failures never raise: a broken cache is an empty cache."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def delete(self, *keys: str) -> None: ...
    async def delete_pattern(self, pattern: str) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class WindowCounter(Protocol):
    """Sliding-window counters for rate limits and quotas, shared by all pods when remote."""

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> WindowState:
        """Add `cost` if it fits under `limit` in the window; say whether it did (atomic)."""
        ...

    async def add(self, key: str, window_s: int, amount: int) -> None:
        """Charge `amount` without a check (token usage known after generation)."""
        ...

    async def peek(self, key: str, limit: int, window_s: int) -> WindowState:
        """The window's state without changing it."""
        ...

    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """A job message handed to a worker; `receipt` acknowledges it, `receive_count` counts deliveries."""

    body: str
    receipt: str
    receive_count: int


class JobQueue(Protocol):
    """At-least-once delivery of job messages with a visibility timeout and a dead-letter queue.

    A received message is leased for `visibility_timeout_s`; a worker that is still on it calls
    `extend` well before the lease ends, so only a dead worker's message is delivered again.
    """

    @property
    def visibility_timeout_s(self) -> float: ...

    async def enqueue(self, body: str) -> None: ...
    async def receive(self, wait_s: float) -> Delivery | None: ...
    async def extend(self, delivery: Delivery) -> None:
        """Renew the lease for another `visibility_timeout_s` (a no-op once the message is gone)."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...
    async def retry(self, delivery: Delivery) -> None:
        """Give the message back for another delivery (or to the DLQ after max receives)."""
        ...

    async def dead_letters(self) -> list[str]: ...
    async def depth(self) -> int | None:
        """Messages waiting for a worker (not in flight, not dead); None when the backend cannot tell cheaply."""
        ...

    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
