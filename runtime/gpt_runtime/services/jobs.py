"""Async generation jobs: submit -> queue -> worker -> result stored with the conversation.

A job's conversation is created at submit time and its messages are written only when it
succeeds, so a job redelivered after a worker died never duplicates anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from gpt_runtime.backends import Delivery, JobQueue
from gpt_runtime.errors import APIError
from gpt_runtime.metrics import Metrics
from gpt_runtime.services.generation import GenerationService, title_from_prompt
from gpt_runtime.sse import usage_dict
from gpt_runtime.storage import Job, Store

log = logging.getLogger("gpt_runtime.jobs")


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
        """Validate like a synchronous request (4xx now, not later), then record and enqueue the job."""
        await self.generation.prepare(
            user,
            request["prompt"],
            conversation_id=request.get("conversation_id"),
            system=request.get("system"),
            params=dict(request.get("params") or {}),
        )
        if request.get("conversation_id") is None:
            conversation = await self.generation.store.create_conversation(
                user.id, title_from_prompt(request["prompt"])
            )
            request = {**request, "conversation_id": conversation.id}
            await self.generation.cache.invalidate_user(user.id)
        job = await self.store.create_job(user.id, request)
        await self.queue.enqueue(json.dumps({"job_id": job.id, "user_id": user.id}))
        self.metrics.jobs.labels("queued").inc()
        return job

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
        if job.status in ("succeeded", "failed"):
            return  # a duplicate delivery of finished work
        await self.store.update_job(user_id, job_id, status="running", attempts=delivery.receive_count)
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
        except APIError as exc:  # e.g. the conversation was deleted meanwhile: final, not retried
            await self._fail(job, exc.message)
            return
        generation.store_prompt_first = False
        await self.generation.start(generation)
        async with contextlib.aclosing(self.generation.events(generation, "job")) as events:
            async for _ in events:
                pass
        finished = generation.finished
        assert finished is not None
        result = {
            "content": generation.content,
            "finish_reason": finished.finish_reason,
            "usage": usage_dict(finished.usage),
            "message_id": generation.reply.id if generation.reply else None,
        }
        await self.store.update_job(
            user_id, job_id, status="succeeded", conversation_id=generation.conversation_id, result=result
        )
        self.metrics.jobs.labels("succeeded").inc()

    async def _fail(self, job: Job, error: str) -> None:
        await self.store.update_job(job.user_id, job.id, status="failed", error=error)
        self.metrics.jobs.labels("failed").inc()

    async def handle(self, delivery: Delivery, max_receives: int) -> None:
        """Process a delivery: ack on success; otherwise retry, and mark the job failed at the last try."""
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
            await self.queue.retry(delivery)
            return
        await self.queue.ack(delivery)


class Worker:
    """Pulls deliveries and handles them, a few at a time, until stopped."""

    def __init__(self, jobs: JobService, queue: JobQueue, *, max_receives: int, concurrency: int = 2):
        self.jobs = jobs
        self.queue = queue
        self.max_receives = max_receives
        self.concurrency = concurrency
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop() for _ in range(self.concurrency)))

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                delivery = await self.queue.receive(wait_s=1.0)
            except Exception as exc:
                log.warning("job queue unavailable", extra={"error": type(exc).__name__})
                await asyncio.sleep(1.0)
                continue
            if delivery is not None:
                await self.jobs.handle(delivery, self.max_receives)
