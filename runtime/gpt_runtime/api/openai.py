"""OpenAI-compatible routes, so existing clients and SDKs work: GET /v1/models, POST /v1/chat/completions.

The caller's access token is the API key. Requests carry their own history and are not stored as
conversations; limits, quotas, the response cache and the waiting room apply as for /generate.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from gpt_model.protocol import ChatMessage
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from gpt_runtime import sse
from gpt_runtime.api.generate import cache_headers, collect_events, finished_unless_disconnected, stream_sse
from gpt_runtime.api.responses import EVENT_STREAM, errors
from gpt_runtime.deps import CurrentUser, RuntimeDep, set_response_headers
from gpt_runtime.errors import BadRequest, NotFound, error_body

router = APIRouter(prefix="/v1", tags=["openai"])


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def plain(self) -> ChatMessage:
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return ChatMessage("system" if self.role == "developer" else self.role, text)


class StreamOptionsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """The fields of OpenAI's request that this server honours; others (penalties, user, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptionsIn | None = None


@router.get("/models")
async def models(_: CurrentUser, runtime: RuntimeDep) -> dict:
    return {
        "object": "list",
        "data": [{"id": runtime.engine.model_id, "object": "model", "created": 0, "owned_by": "gpt-operator"}],
    }


@router.post("/chat/completions", responses=EVENT_STREAM | errors(404, 500, 503))
async def chat_completions(body: ChatCompletionIn, request: Request, user: CurrentUser, runtime: RuntimeDep):
    model = runtime.engine.model_id
    if body.model != model:
        raise NotFound(
            f"the model {body.model!r} does not exist; this server serves {model!r}",
            param="model",
            code="model_not_found",
        )
    if body.n != 1:
        raise BadRequest("only n=1 is supported", param="n", code="unsupported_parameter")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise BadRequest("at most 4 stop sequences", param="stop", code="too_many_stop_sequences")
    service = runtime.generation
    generation = service.prepare_chat(
        user,
        [message.plain() for message in body.messages],
        {
            "max_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
            "stop": stop,
        },
    )
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
    task = asyncio.create_task(collect_events(service, generation, "openai"))
    if not await finished_unless_disconnected(request, task):
        await service.abort(generation, "openai")
        return JSONResponse(
            error_body("client closed the request", "invalid_request_error", None, "client_closed_request"), 499
        )
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
                "message": {"role": "assistant", "content": generation.content},
                "finish_reason": finished.finish_reason,
            }
        ],
        "usage": sse.usage_dict(finished.usage),
    }
