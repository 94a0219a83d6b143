"""Running an event stream in its own task, so waiting for it can time out safely."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

import anyio

T = TypeVar("T")
_END = object()


async def with_heartbeats(source: AsyncIterator[T], interval_s: float) -> AsyncGenerator[T | None, None]:
    """Yield items of `source`, and None after every `interval_s` seconds without one.

    `source` runs in a task of its own: a heartbeat timeout never interrupts it mid-step,
    and closing this iterator cancels it (its `finally` blocks run).
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:
            await queue.put(exc)
        else:
            await queue.put(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), interval_s)
            except TimeoutError:
                yield None
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        task.cancel()
        with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
            await task
