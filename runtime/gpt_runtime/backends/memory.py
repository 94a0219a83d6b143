"""In-process backends: the embedded default, and the fallback when Redis is unreachable."""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable

from gpt_runtime.backends import Delivery, WindowState
from gpt_runtime.backends.window import decide, window_state


class MemoryCache:
    """An LRU of bounded size with per-entry TTLs."""

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._entries[key] = (self.clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)

    async def delete_pattern(self, pattern: str) -> int:
        doomed = [key for key in self._entries if fnmatch.fnmatchcase(key, pattern)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()


class MemoryWindowCounter:
    """Sliding-window counters in a dict: one pod's view only."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._counts: dict[tuple[str, int, int], int] = {}
        self._lock = asyncio.Lock()

    def _windows(self, key: str, window_s: int) -> tuple[int, int, int, float]:
        now = self.clock()
        index = int(now // window_s)
        elapsed = now - index * window_s
        current = self._counts.get((key, window_s, index), 0)
        previous = self._counts.get((key, window_s, index - 1), 0)
        return index, current, previous, elapsed

    def _prune(self, window_s: int, index: int) -> None:
        if len(self._counts) > 50_000:
            for stale in [k for k in self._counts if k[1] == window_s and k[2] < index - 1]:
                del self._counts[stale]

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> WindowState:
        async with self._lock:
            index, current, previous, elapsed = self._windows(key, window_s)
            allowed = decide(current, previous, elapsed, window_s, limit, cost)
            if allowed:
                current += cost
                self._counts[(key, window_s, index)] = current
                self._prune(window_s, index)
            return window_state(current, previous, elapsed, window_s, limit, cost, allowed)

    async def add(self, key: str, window_s: int, amount: int) -> None:
        async with self._lock:
            index, current, _, _ = self._windows(key, window_s)
            self._counts[(key, window_s, index)] = current + amount

    async def peek(self, key: str, limit: int, window_s: int) -> WindowState:
        _, current, previous, elapsed = self._windows(key, window_s)
        allowed = decide(current, previous, elapsed, window_s, limit, 1)
        return window_state(current, previous, elapsed, window_s, limit, 1, allowed)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._counts.clear()


class MemoryJobQueue:
    """One process's job queue with visibility timeouts and a dead-letter list."""

    def __init__(self, visibility_timeout_s: float = 300.0, max_receives: int = 3):
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receives = max_receives
        self._ready: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._in_flight: dict[str, tuple[str, int, float]] = {}
        self._dead: list[str] = []
        self._receipts = itertools.count(1)

    async def enqueue(self, body: str) -> None:
        self._ready.put_nowait((body, 0))

    async def depth(self) -> int:
        """Messages waiting for a worker (not in flight)."""
        self._requeue_expired()
        return self._ready.qsize()

    def _requeue_expired(self) -> None:
        now = time.monotonic()
        for receipt, (body, count, deadline) in list(self._in_flight.items()):
            if deadline <= now:
                del self._in_flight[receipt]
                self._give_back(body, count)

    def _give_back(self, body: str, count: int) -> None:
        if count >= self.max_receives:
            self._dead.append(body)
        else:
            self._ready.put_nowait((body, count))

    async def receive(self, wait_s: float) -> Delivery | None:
        self._requeue_expired()
        try:
            body, count = await asyncio.wait_for(self._ready.get(), wait_s)
        except TimeoutError:
            return None
        receipt = str(next(self._receipts))
        self._in_flight[receipt] = (body, count + 1, time.monotonic() + self.visibility_timeout_s)
        return Delivery(body, receipt, count + 1)

    async def extend(self, delivery: Delivery) -> None:
        entry = self._in_flight.get(delivery.receipt)
        if entry is not None:
            self._in_flight[delivery.receipt] = (entry[0], entry[1], time.monotonic() + self.visibility_timeout_s)

    async def ack(self, delivery: Delivery) -> None:
        self._in_flight.pop(delivery.receipt, None)

    async def retry(self, delivery: Delivery) -> None:
        entry = self._in_flight.pop(delivery.receipt, None)
        if entry is not None:
            self._give_back(entry[0], entry[1])

    async def dead_letters(self) -> list[str]:
        return list(self._dead)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
