"""Async generation jobs: submit -> queue -> worker -> result stored with the conversation.

A job's conversation is created at submit time; its messages are written only when it succeeds, in
the same transaction that marks it finished (Store.finish_job), so a second delivery of the same job
writes nothing. While a job runs its worker renews the message's lease, so a job longer than the
visibility timeout is not delivered again; only a dead worker's job is. Queue errors never end the
worker's loops: each call is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import anyio

from gpt_runtime.backends import Delivery, JobQueue
from gpt_runtime.domain_errors import DomainError, Unavailable
from gpt_runtime.metrics import Metrics
from gpt_runtime.services.generation import GenerationService, title_from_prompt
from gpt_runtime.sse import usage_dict
from gpt_runtime.storage import Job, NewMessage, Store
from gpt_runtime.storage.base import ConversationGone

log = logging.getLogger("gpt_runtime.jobs")
QUEUE_RETRY_AFTER_S = 5


def backoff_s(failures: int, base_s: float = 0.5, cap_s: float = 10.0) -> float:
    """Seconds to wait after `failures` errors in a row: 0.5, 1, 2, 4, ... up to `cap_s`."""
    return min(cap_s, base_s * 2 ** max(0, failures - 1))


class PoisonMessage(Exception):
    """A queue message that can never be processed (malformed, or its job is gone)."""


class JobService:
    """Creates jobs and processes their queue messages."""

    def __init__(self, store: Store, queue: JobQueue, generation: GenerationService, metrics: Metrics):
        self.store = store
        self.queue = queue
        self.generation = generation
        self.metrics = metrics

    async def submit(self, user, request: dict) -> Job:
        """Validate like a synchronous request (4xx now, not later), then record and enqueue the job.

        When the queue refuses the message nothing stays behind (no job, no conversation made for it):
        the caller gets 503 `overloaded` with Retry-After.
        """
        await self.generation.prepare(
            user,
            request["prompt"],
            conversation_id=request.get("conversation_id"),
            system=request.get("system"),
            params=dict(request.get("params") or {}),
        )
        created = None
        if request.get("conversation_id") is None:
            created = await self.store.create_conversation(user.id, title_from_prompt(request["prompt"]))
            request = {**request, "conversation_id": created.id}
        job = await self.store.create_job(user.id, request)
        try:
            await self.queue.enqueue(json.dumps({"job_id": job.id, "user_id": user.id}))
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._forget(job, created.id if created else None)
            if not isinstance(exc, Exception):
                raise
            log.warning("job queue unavailable: job refused", extra={"error": type(exc).__name__})
            raise Unavailable(
                "the job queue is unavailable; retry shortly",
                code="overloaded",
                retry_after=QUEUE_RETRY_AFTER_S,
            ) from exc
        if created is not None:
            await self.generation.cache.invalidate_user(user.id)
        self.metrics.jobs.labels("queued").inc()
        return job

    async def _forget(self, job: Job, conversation_id: str | None) -> None:
        """Undo a submit whose message never reached the queue."""
        try:
            await self.store.delete_job(job.user_id, job.id)
            if conversation_id is not None:
                await self.store.delete_conversation(job.user_id, conversation_id)
        except Exception:
            log.exception("could not remove a job the queue refused", extra={"job_id": job.id})

    async def process(self, delivery: Delivery) -> None:
        """Run one delivered job to completion; raises to have it redelivered."""
        try:
            message = json.loads(delivery.body)
            job_id, user_id = message["job_id"], message["user_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PoisonMessage(f"malformed job message: {delivery.body[:100]!r}") from exc
        job = await self.store.get_job(user_id, job_id)
        user = await self.store.get_user(user_id)
        if job is None or user is None:
            raise PoisonMessage(f"job {job_id} no longer exists")
        if await self.store.update_job(user_id, job_id, status="running", attempts=delivery.receive_count) is None:
            return  # a duplicate delivery of finished work
        request = job.request
        try:
            generation = await self.generation.prepare(
                user,
                request["prompt"],
                conversation_id=request.get("conversation_id"),
                system=request.get("system"),
                params=dict(request.get("params") or {}),
                priority="low",
            )
        except DomainError as exc:  # e.g. the conversation was deleted meanwhile: final, not retried
            await self._fail(job, exc.message)
            return
        generation.persist = False  # written below, exactly once, with the job's completion
        await self.generation.start(generation)
        async with contextlib.aclosing(self.generation.events(generation, "job")) as events:
            async for _ in events:
                pass
        finished = generation.finished
        assert finished is not None
        if finished.finish_reason in ("error", "cancelled"):
            raise RuntimeError(f"generation ended with {finished.finish_reason}: {finished.error or ''}".strip())
        result = {
            "content": generation.content,
            "finish_reason": finished.finish_reason,
            "usage": usage_dict(finished.usage),
        }
        messages = [
            NewMessage("user", generation.prompt),
            NewMessage("assistant", generation.content, finished.usage.completion_tokens, finished.finish_reason),
        ]
        try:
            done = await self.store.finish_job(
                user_id,
                job_id,
                status="succeeded",
                conversation_id=generation.conversation_id,
                messages=messages,
                result=result,
            )
        except ConversationGone:
            await self._fail(job, "conversation not found")
            return
        if done is None:
            log.info("job already finished by another delivery; nothing written", extra={"job_id": job_id})
            return
        await self.generation.cache.invalidate_user(user_id)
        self.metrics.jobs.labels("succeeded").inc()

    async def _fail(self, job: Job, error: str) -> None:
        if await self.store.finish_job(job.user_id, job.id, status="failed", error=error) is not None:
            self.metrics.jobs.labels("failed").inc()

    async def handle(self, delivery: Delivery, max_receives: int) -> None:
        """Process a delivery under a renewed lease: ack on success; otherwise retry, and mark the job
        failed at the last try. Queue errors here are retried, then left to the lease's expiry."""
        heartbeat = asyncio.create_task(self._renew(delivery))
        try:
            await self.process(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            last = isinstance(exc, PoisonMessage) or delivery.receive_count >= max_receives
            log.warning(
                "job attempt failed",
                extra={"receive_count": delivery.receive_count, "error": str(exc)[:200], "final": last},
            )
            if last and not isinstance(exc, PoisonMessage):
                with contextlib.suppress(Exception):
                    message = json.loads(delivery.body)
                    job = await self.store.get_job(message["user_id"], message["job_id"])
                    if job is not None:
                        await self._fail(job, "generation failed after retries")
            await self._settle("retry", self.queue.retry, delivery)
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._settle("ack", self.queue.ack, delivery)

    async def _renew(self, delivery: Delivery) -> None:
        """Extend the lease every third of the visibility timeout until cancelled."""
        interval = max(0.05, self.queue.visibility_timeout_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.queue.extend(delivery)
            except Exception as exc:
                log.warning("could not extend a job's lease", extra={"error": type(exc).__name__})

    async def _settle(self, what: str, call: Callable[[Delivery], Awaitable[None]], delivery: Delivery) -> None:
        """Ack or retry, with backoff; if the queue stays down the lease expires and the job comes back
        (a finished job is then acknowledged without running again)."""
        for attempt in range(1, 6):
            try:
                await call(delivery)
                return
            except Exception as exc:
                log.warning(f"job {what} failed", extra={"attempt": attempt, "error": type(exc).__name__})
                await asyncio.sleep(backoff_s(attempt))
        log.error(f"job {what} abandoned; the message comes back when its lease expires")


class Worker:
    """Pulls deliveries and handles them, a few at a time, until stopped; no error ends a loop."""

    def __init__(self, jobs: JobService, queue: JobQueue, *, max_receives: int, concurrency: int = 2):
        self.jobs = jobs
        self.queue = queue
        self.max_receives = max_receives
        self.concurrency = concurrency
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._loops = [asyncio.create_task(self._loop(slot)) for slot in range(self.concurrency)]
        for loop in self._loops:
            loop.add_done_callback(self._ended)
        try:
            await asyncio.gather(*self._loops, return_exceptions=True)  # one loop's end leaves the others running
        finally:
            for loop in self._loops:
                loop.cancel()

    def _ended(self, loop: asyncio.Task[None]) -> None:
        if not self._stopping.is_set():
            error = None if loop.cancelled() else loop.exception()
            log.error("a job worker loop ended", exc_info=error, extra={"cancelled": loop.cancelled()})

    def problem(self) -> str | None:
        """Why this worker cannot take jobs (for /ready), or None while every loop runs."""
        if not self._loops:
            return None
        dead = sum(loop.done() for loop in self._loops)
        if dead and not self._stopping.is_set():
            return f"job worker: {dead} of {len(self._loops)} loops stopped"
        return None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _loop(self, slot: int) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                delivery = await self.queue.receive(wait_s=1.0)
            except Exception as exc:
                failures += 1
                log.warning(
                    "job queue unavailable", extra={"error": type(exc).__name__, "slot": slot, "failures": failures}
                )
                await self._pause(backoff_s(failures))
                continue
            failures = 0
            if delivery is None:
                continue
            try:
                await self.jobs.handle(delivery, self.max_receives)
            except Exception:
                log.exception("job handling failed; the message comes back when its lease expires")
