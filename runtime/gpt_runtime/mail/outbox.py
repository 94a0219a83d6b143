"""Background delivery of account mail.

A request hands the Outbox a `compose` coroutine (look the account up, issue the token, write the mail)
and answers at once. So the answer is the same, and takes the same time, whether the account exists
(forgot-password cannot probe emails), and a slow or broken mail server fails no request. The queue is
bounded: past `max_queued` waiting mails new ones are dropped with a warning. A crash loses what waits in
the queue; the user asks again.

Work starts a random 50-150 ms after the request queued it: by then its answer is on the wire, so the lookup
and the mail (done only for real accounts) never share the event loop with the request that asked for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from gpt_runtime.mail import Email, EmailSender

log = logging.getLogger("gpt_runtime.mail")

Compose = Callable[[], Awaitable[Email | None]]


class Outbox:
    """A bounded queue of mails to compose and send, worked off by a few background tasks."""

    def __init__(
        self,
        sender: EmailSender,
        *,
        max_queued: int = 1000,
        workers: int = 2,
        attempts: int = 3,
        retry_base_s: float = 1.0,
        delay_s: tuple[float, float] = (0.05, 0.15),
    ):
        self.sender = sender
        self.max_queued = max_queued
        self.workers = workers
        self.attempts = attempts
        self.retry_base_s = retry_base_s
        self.delay_s = delay_s
        self._queue: asyncio.Queue[tuple[float, Compose]] | None = None
        self._tasks: list[asyncio.Task] = []
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, compose: Compose) -> None:
        """Queue a mail; never waits and never raises (a full queue drops it with a warning)."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.max_queued)
            self._tasks = [asyncio.create_task(self._work(), name=f"mail-{i}") for i in range(self.workers)]
        try:
            self._queue.put_nowait((time.monotonic() + random.uniform(*self.delay_s), compose))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("mail queue is full: a mail was dropped", extra={"max_queued": self.max_queued})

    async def drain(self) -> None:
        """Wait until every queued mail is sent or given up (tests, shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Give queued mails `timeout_s` to go out, then stop the workers."""
        if self._queue is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queue, self._tasks = None, []

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            not_before, compose = await queue.get()
            try:
                await asyncio.sleep(max(0.0, not_before - time.monotonic()))
                await self._deliver(compose)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("composing a mail failed")
            finally:
                queue.task_done()

    async def _deliver(self, compose: Compose) -> None:
        email = await compose()
        if email is None:
            return
        domain = email.to.rpartition("@")[2]
        for attempt in range(1, self.attempts + 1):
            try:
                await self.sender.send(email.to, email.subject, email.body)
            except Exception as exc:  # the transport's errors vary (smtplib, OSError, botocore)
                if attempt == self.attempts:
                    self.failed += 1
                    log.error(
                        "mail could not be sent",
                        extra={"to_domain": domain, "subject": email.subject, "error": type(exc).__name__},
                    )
                    return
                await asyncio.sleep(self.retry_base_s * 2 ** (attempt - 1))
            else:
                self.sent += 1
                log.info("mail sent", extra={"to_domain": domain, "subject": email.subject})
                return
