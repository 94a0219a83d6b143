"""POST /generate: a reply as JSON, or as server-sent events with "stream": true."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from gpt_model.protocol import Finished, TextDelta
from starlette.background import BackgroundTask

from gpt_runtime import sse
from gpt_runtime.api.responses import EVENT_STREAM, errors
from gpt_runtime.deps import CurrentUser, RuntimeDep, set_response_headers
from gpt_runtime.domain_errors import InvalidInput, ModelFailed
from gpt_runtime.errors import error_body, http_error
from gpt_runtime.schemas import GenerateIn, GenerateOut, JobAcceptedOut, MessageOut, UsageOut
from gpt_runtime.services.generation import Generation, GenerationService
from gpt_runtime.services.streaming import with_heartbeats

log = logging.getLogger("gpt_runtime.generate")
router = APIRouter(tags=["generation"])
PING_INTERVAL_S = 15.0
DISCONNECT_POLL_S = 0.25
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop")


@router.post(
    "/generate",
    response_model=GenerateOut,
    responses=EVENT_STREAM | {202: {"model": JobAcceptedOut}} | errors(404, 500, 502, 503),
)
async def generate(body: GenerateIn, request: Request, user: CurrentUser, runtime: RuntimeDep):
    """Generate a reply to `prompt`, continuing `conversation_id` when given (a new one otherwise)."""
    service = runtime.generation
    if body.run_async:
        if body.stream:
            raise InvalidInput("a request cannot be both async and streamed", param="stream", code="async_stream")
        request_body = body.model_dump(include={"prompt", "conversation_id", "system"})
        request_body["params"] = body.model_dump(include=set(SAMPLING_FIELDS))
        job = await runtime.jobs.submit(user, request_body)
        location = f"/jobs/{job.id}"
        return JSONResponse(
            JobAcceptedOut(
                job_id=job.id, status=job.status, conversation_id=job.conversation_id, location=location
            ).model_dump(),
            status_code=202,
            headers={"Location": location},
        )
    generation = await service.prepare(
        user,
        body.prompt,
        conversation_id=body.conversation_id,
        system=body.system,
        params=body.model_dump(include=set(SAMPLING_FIELDS)),
    )
    await service.start(generation)
    set_response_headers(request, generation.headers | cache_headers(generation))
    if body.stream:
        include_usage = body.stream_options.include_usage if body.stream_options else True
        return StreamingResponse(
            stream_sse(service, generation, runtime.engine.model_id, include_usage, "sse"),
            media_type="text/event-stream",
            headers=sse.SSE_HEADERS,
            # Runs also when the client left before the first event: the engine slot is freed either way.
            background=BackgroundTask(service.abort, generation, "sse"),
        )
    task = asyncio.create_task(collect_events(service, generation))
    if not await finished_unless_disconnected(request, task):
        await service.abort(generation, "rest")
        return JSONResponse(
            error_body("client closed the request", "invalid_request_error", None, "client_closed_request"),
            status_code=499,
        )
    raise_if_failed(generation)
    return _reply(generation, runtime.engine.model_id)


def raise_if_failed(generation: Generation) -> None:
    """An engine failure answers 500 with the JSON error body (nothing was stored for it)."""
    if generation.finished is not None and generation.finished.finish_reason == "error":
        raise ModelFailed()


async def collect_events(service: GenerationService, generation: Generation, transport: str = "rest") -> None:
    """Run a started generation to its end (the reply accumulates on `generation`)."""
    async with contextlib.aclosing(service.events(generation, transport)) as events:
        async for _ in events:
            pass


async def finished_unless_disconnected(request: Request, task: asyncio.Task[None]) -> bool:
    """Wait for `task`; cancel it (freeing its engine slot) if the client goes away first."""
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not done and await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
    task.result()
    return True


def cache_headers(generation: Generation) -> dict[str, str]:
    """X-Cache: HIT when the answer came from the cache (X-Quota-Fallback when only because of a quota)."""
    if generation.cached is None:
        return {"X-Cache": "MISS"}
    headers = {"X-Cache": "HIT"}
    if generation.cache_source == "quota-fallback":
        headers["X-Quota-Fallback"] = "true"
    return headers


def _reply(generation: Generation, model: str) -> GenerateOut:
    finished = generation.finished
    assert finished is not None
    usage = finished.usage
    return GenerateOut(
        id=generation.request.request_id,
        model=model,
        conversation_id=generation.conversation_id,
        message=MessageOut.of(generation.reply) if generation.reply else None,
        content=generation.content,
        finish_reason=finished.finish_reason,
        usage=UsageOut(**sse.usage_dict(usage)),
    )


async def stream_sse(
    service: GenerationService, generation: Generation, model: str, include_usage: bool, transport: str
) -> AsyncIterator[str]:
    """A started generation as chat.completion.chunk events (conversation ids added when it is stored)."""
    created = int(time.time())
    gen_id = generation.request.request_id
    extra = {"conversation_id": generation.conversation_id} if generation.persist else {}
    yield sse.sse_data(sse.chunk(gen_id, model, created, delta={"role": "assistant", "content": ""}, extra=extra))
    events = with_heartbeats(service.events(generation, transport), PING_INTERVAL_S)
    try:
        async for event in events:
            if event is None:
                yield sse.PING
            elif isinstance(event, TextDelta):
                delta = {"content": event.text}
                yield sse.sse_data(sse.chunk(gen_id, model, created, delta=delta, extra=extra, logprobs=event.logprobs))
            elif isinstance(event, Finished):
                if event.finish_reason == "error":
                    yield sse.sse_data(http_error(ModelFailed()).body)
                    break
                reply_extra = extra | (
                    {"message_id": generation.reply.id if generation.reply else None} if extra else {}
                )
                yield sse.sse_data(
                    sse.chunk(gen_id, model, created, finish_reason=event.finish_reason, extra=reply_extra)
                )
                if include_usage:
                    yield sse.sse_data(sse.chunk(gen_id, model, created, usage=event.usage, extra=extra))
    except Exception:
        log.exception("stream failed")
        yield sse.sse_data(error_body("generation failed", "api_error", None, "internal_error"))
    finally:
        await events.aclose()
    yield sse.DONE
