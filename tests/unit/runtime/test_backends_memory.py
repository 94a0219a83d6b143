from __future__ import annotations

import asyncio

import pytest
from gpt_runtime.backends.memory import MemoryCache, MemoryJobQueue, MemoryWindowCounter
from gpt_runtime.backends.window import decide, weighted_usage, window_state

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_weighted_usage_blends_the_previous_window():
    assert weighted_usage(current=3, previous=10, elapsed_s=15, window_s=60) == 3 + 10 * 0.75
    assert decide(3, 10, 15, 60, limit=12, cost=1) is True
    assert decide(3, 10, 15, 60, limit=11, cost=1) is False


def test_denied_state_says_when_to_retry():
    # The current window alone is full: wait for it to roll over.
    state = window_state(10, 0, 20, 60, limit=10, cost=1, allowed=False)
    assert state.remaining == 0 and state.reset_s == pytest.approx(40)
    # Only the previous window's share is in the way: it decays, so less waiting.
    state = window_state(2, 10, 30, 60, limit=7, cost=1, allowed=False)
    assert 0 < state.reset_s < 30


def test_counter_limits_then_recovers_with_time():
    async def main():
        clock = Clock(60.0 * 1000)
        counter = MemoryWindowCounter(clock)
        states = [await counter.hit("u", limit=3, window_s=60) for _ in range(4)]
        assert [s.allowed for s in states] == [True, True, True, False]
        assert [s.remaining for s in states[:3]] == [2, 1, 0]
        clock.now += 60  # a new window; the old one still weighs fully at its start
        assert not (await counter.hit("u", 3, 60)).allowed
        clock.now += 45  # three quarters through: 3 * 0.25 = 0.75 of the old window remains
        assert (await counter.hit("u", 3, 60)).allowed
        assert (await counter.hit("other", 3, 60)).allowed  # keys are independent

    asyncio.run(main())


def test_add_charges_without_checking_and_peek_reads():
    async def main():
        counter = MemoryWindowCounter(Clock(600.0))
        await counter.add("t", 60, 900)
        assert (await counter.peek("t", 1000, 60)).used == 900
        await counter.add("t", 60, 200)
        state = await counter.peek("t", 1000, 60)
        assert not state.allowed and state.used == 1100 and state.remaining == 0

    asyncio.run(main())


def test_lru_cache_evicts_least_recent_and_expires():
    async def main():
        clock = Clock(0.0)
        cache = MemoryCache(max_entries=2, clock=clock)
        await cache.set("a", b"1", 10)
        await cache.set("b", b"2", 10)
        assert await cache.get("a") == b"1"  # a is now most recent
        await cache.set("c", b"3", 10)
        assert await cache.get("b") is None and await cache.get("a") == b"1"
        clock.now = 11
        assert await cache.get("a") is None
        await cache.set("conv:u1:x", b"", 10)
        await cache.set("conv:u2:x", b"", 10)
        assert await cache.delete_pattern("conv:u1:*") == 1
        assert await cache.get("conv:u2:x") == b""

    asyncio.run(main())


def test_memory_queue_redelivers_and_dead_letters():
    async def main():
        queue = MemoryJobQueue(visibility_timeout_s=0.05, max_receives=2)
        await queue.enqueue("job")
        first = await queue.receive(0.1)
        assert first.body == "job" and first.receive_count == 1
        assert await queue.receive(0.01) is None  # invisible while in flight
        await asyncio.sleep(0.06)  # the lease expires: the worker is presumed dead
        second = await queue.receive(0.1)
        assert second.receive_count == 2
        await queue.retry(second)  # second failure: dead
        assert await queue.receive(0.01) is None
        assert await queue.dead_letters() == ["job"]
        await queue.enqueue("ok")
        delivery = await queue.receive(0.1)
        await queue.ack(delivery)
        await asyncio.sleep(0.06)
        assert await queue.receive(0.01) is None  # acknowledged: never again

    asyncio.run(main())
