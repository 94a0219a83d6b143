"""A priority waiting room in front of the engine: critical, high, medium, low; FIFO within a level."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from gpt_runtime.domain_errors import Unavailable
from gpt_runtime.metrics import Metrics

PRIORITIES = ("critical", "high", "medium", "low")
_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}


class AdmissionGate:
    """At most `max_running` generations at once; up to `max_waiting` wait, best priority first."""

    def __init__(
        self,
        max_running: int,
        max_waiting: int,
        metrics: Metrics | None = None,
        *,
        busy: str = "the server is at capacity",
        waited_for: str = "a free slot",
        full_retry_after: int = 2,
    ):
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.busy = busy  # the 503 when the room is full, and its Retry-After
        self.full_retry_after = full_retry_after
        self.waited_for = waited_for  # what a timed-out wait says it waited for
        self.running = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiting if not future.done())

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.running_generations.set(self.running)

    async def acquire(self, priority: str, timeout_s: float) -> None:
        """Take a slot, waiting up to `timeout_s`; 503 when the room is full or the wait times out."""
        if self.running < self.max_running and not self.waiting:
            self.running += 1
            self._gauge()
            return
        if self.waiting >= self.max_waiting:
            raise Unavailable(f"{self.busy}; retry shortly", code="queue_full", retry_after=self.full_retry_after)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (_RANK[priority], next(self._sequence), future))
        self._gauge()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            if future.done() and not future.cancelled():
                return  # granted just as the wait ran out: keep the slot
            future.cancel()
            raise Unavailable(
                f"waited {timeout_s:g}s for {self.waited_for}; retry shortly",
                code="queue_timeout",
                retry_after=5,
            ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()
            else:
                future.cancel()
            raise
        finally:
            self._gauge()

    def release(self) -> None:
        """Free a slot and hand it to the best waiter, if any."""
        self.running -= 1
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                self.running += 1
                break
        self._gauge()
