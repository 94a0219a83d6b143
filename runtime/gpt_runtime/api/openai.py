"""OpenAI-compatible routes, so existing clients and SDKs work: GET /v1/models, POST /v1/chat/completions,
POST /v1/completions (legacy text completions).

The caller's access token is the API key. Requests carry their own history and are not stored as
conversations; limits, quotas, the response cache and the waiting room apply as for /generate.
Which of OpenAI's fields are honoured, and which are refused with a 400 naming them: openai_schemas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from gpt_model.protocol import Finished, TextDelta
from starlette.background import BackgroundTask

from gpt_runtime import sse
from gpt_runtime.api.generate import (
    PING_INTERVAL_S,
    cache_headers,
    collect_events,
    finished_unless_disconnected,
    raise_if_failed,
    stream_sse,
)
from gpt_runtime.api.openai_schemas import ChatCompletionIn, CompletionIn, SamplingIn
from gpt_runtime.api.responses import EVENT_STREAM, errors
from gpt_runtime.deps import CurrentUser, RuntimeDep, set_response_headers
from gpt_runtime.domain_errors import ModelFailed, NotFound
from gpt_runtime.errors import error_body, http_error
from gpt_runtime.services.generation import Generation, GenerationService
from gpt_runtime.services.streaming import with_heartbeats

log = logging.getLogger("gpt_runtime.openai")
router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def models(_: CurrentUser, runtime: RuntimeDep) -> dict:
    return {
        "object": "list",
        "data": [{"id": runtime.engine.model_id, "object": "model", "created": 0, "owned_by": "gpt-operator"}],
    }


def _check(body: SamplingIn, runtime) -> str:
    """The served model's id, after the checks every /v1 generation shares."""
    model = runtime.engine.model_id
    if body.model != model:
        raise NotFound(
            f"the model {body.model!r} does not exist; this server serves {model!r}",
            param="model",
            code="model_not_found",
        )
    body.check_fields()
    return model


@router.post("/chat/completions", responses=EVENT_STREAM | errors(400, 404, 500, 502, 503))
async def chat_completions(body: ChatCompletionIn, request: Request, user: CurrentUser, runtime: RuntimeDep):
    model = _check(body, runtime)
    messages, params = body.chat_messages(), body.sampling()
    service = runtime.generation
    generation = service.prepare_chat(user, messages, params)
    await service.start(generation)
    set_response_headers(request, generation.headers | cache_headers(generation))
    if body.stream:
        include_usage = body.stream_options.include_usage if body.stream_options else False
        return StreamingResponse(
            stream_sse(service, generation, model, include_usage, "openai"),
            media_type="text/event-stream",
            headers=sse.SSE_HEADERS,
            background=BackgroundTask(service.abort, generation, "openai"),
        )
    closed = await _run_to_end(service, generation, request)
    if closed is not None:
        return closed
    finished = generation.finished
    assert finished is not None
    return {
        "id": generation.request.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": generation.content, "refusal": None},
                "logprobs": sse.chat_logprobs(generation.logprobs) if params["logprobs"] is not None else None,
                "finish_reason": finished.finish_reason,
            }
        ],
        "usage": sse.usage_dict(finished.usage),
    }


@router.post("/completions", responses=EVENT_STREAM | errors(400, 404, 500, 502, 503))
async def completions(body: CompletionIn, request: Request, user: CurrentUser, runtime: RuntimeDep):
    """OpenAI's legacy text completions: each prompt is continued as is, without a chat template.

    Several prompts give one choice each (index = the prompt's place); they are admitted together
    (quota and waiting room per prompt, all or none) and generated side by side.
    """
    model = _check(body, runtime)
    prompts, params = body.prompt_texts(), body.sampling()
    service = runtime.generation
    generations = [service.prepare_completion(user, prompt, params) for prompt in prompts]
    started: list[Generation] = []
    try:
        for generation in generations:
            await service.start(generation)
            started.append(generation)
    except BaseException:
        for generation in started:
            await service.abort(generation, "openai")
        raise
    set_response_headers(request, generations[-1].headers | cache_headers(generations[-1]))
    want_logprobs = params["logprobs"] is not None
    offsets = [len(prompt) for prompt in prompts]
    if body.stream:
        include_usage = body.stream_options.include_usage if body.stream_options else False
        return StreamingResponse(
            _stream_completions(service, generations, model, include_usage, want_logprobs, offsets),
            media_type="text/event-stream",
            headers=sse.SSE_HEADERS,
            background=BackgroundTask(_abort_all, service, generations),
        )
    closed = await _run_all_to_end(service, generations, request)
    if closed is not None:
        return closed
    choices = []
    for index, (generation, offset) in enumerate(zip(generations, offsets, strict=True)):
        finished = generation.finished
        assert finished is not None
        choices.append(
            {
                "text": generation.content,
                "index": index,
                "logprobs": sse.completion_logprobs(generation.logprobs, offset) if want_logprobs else None,
                "finish_reason": finished.finish_reason,
            }
        )
    completion = _completion(generations[0].request.request_id, model, int(time.time()), choices)
    return completion | {"usage": _usage_sum(generations)}


async def _run_to_end(service: GenerationService, generation: Generation, request: Request) -> JSONResponse | None:
    """Run a started generation to its end; a 499 answer when the client left first (500 if the engine failed)."""
    task = asyncio.create_task(collect_events(service, generation, "openai"))
    if not await finished_unless_disconnected(request, task):
        await service.abort(generation, "openai")
        return JSONResponse(
            error_body("client closed the request", "invalid_request_error", None, "client_closed_request"), 499
        )
    raise_if_failed(generation)
    return None


async def _run_all_to_end(
    service: GenerationService, generations: list[Generation], request: Request
) -> JSONResponse | None:
    """Run started generations to their ends together; a 499 answer when the client left first."""

    async def collect_all() -> None:
        await asyncio.gather(*(collect_events(service, g, "openai") for g in generations))

    if not await finished_unless_disconnected(request, asyncio.create_task(collect_all())):
        await _abort_all(service, generations)
        return JSONResponse(
            error_body("client closed the request", "invalid_request_error", None, "client_closed_request"), 499
        )
    for generation in generations:
        raise_if_failed(generation)
    return None


async def _abort_all(service: GenerationService, generations: list[Generation]) -> None:
    for generation in generations:
        await service.abort(generation, "openai")


def _usage_sum(generations: list[Generation]) -> dict[str, int]:
    usages = [g.finished.usage for g in generations if g.finished is not None]
    prompt, completion = sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(completion_id: str, model: str, created: int, choices: list[dict]) -> dict:
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model, "choices": choices}


async def _stream_completions(
    service: GenerationService,
    generations: list[Generation],
    model: str,
    include_usage: bool,
    want_logprobs: bool,
    offsets: list[int],
) -> AsyncIterator[str]:
    """Started text completions as server-sent text_completion chunks (one prompt after the other;
    the engine generates them side by side), an optional usage chunk, then [DONE]."""
    created = int(time.time())
    gen_id = generations[0].request.request_id
    for index, (generation, offset) in enumerate(zip(generations, offsets, strict=True)):
        events = with_heartbeats(service.events(generation, "openai"), PING_INTERVAL_S)
        try:
            async for event in events:
                if event is None:
                    yield sse.PING
                elif isinstance(event, TextDelta):
                    logprobs = sse.completion_logprobs(event.logprobs, offset) if want_logprobs else None
                    offset += len(event.text)
                    choice = {"text": event.text, "index": index, "logprobs": logprobs, "finish_reason": None}
                    yield sse.sse_data(_completion(gen_id, model, created, [choice]))
                elif isinstance(event, Finished):
                    if event.finish_reason == "error":
                        yield sse.sse_data(http_error(ModelFailed()).body)
                        yield sse.DONE
                        return
                    choice = {"text": "", "index": index, "logprobs": None, "finish_reason": event.finish_reason}
                    yield sse.sse_data(_completion(gen_id, model, created, [choice]))
        except Exception:
            log.exception("completion stream failed")
            yield sse.sse_data(error_body("generation failed", "api_error", None, "internal_error"))
            yield sse.DONE
            return
        finally:
            await events.aclose()
    if include_usage:
        yield sse.sse_data(_completion(gen_id, model, created, []) | {"usage": _usage_sum(generations)})
    yield sse.DONE
