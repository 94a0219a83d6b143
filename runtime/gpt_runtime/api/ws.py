"""WS /ws/generate: several generations per socket, streamed as JSON frames, cancellable by id.

Client frames: {"type":"generate","request_id","conversation_id","content","params"} and
{"type":"cancel","request_id"}. Server frames: {"type":"delta","request_id","content"}, then
{"type":"done","request_id","conversation_id","message_id","finish_reason","usage"} or
{"type":"error","request_id","error":{...}}. Auth failure closes with 1008, a rate-limited
connection with 4429; a rate-limited or over-quota generation gets an error frame (type requests,
tokens or insufficient_quota).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from gpt_model.protocol import Finished, TextDelta
from pydantic import Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnected

from gpt_runtime import sse
from gpt_runtime.auth.bearer import websocket_token
from gpt_runtime.deps import Runtime
from gpt_runtime.domain_errors import DomainError, InvalidInput, ModelFailed, RateLimited, Unauthenticated
from gpt_runtime.errors import http_error
from gpt_runtime.schemas import GenerationParamsIn, Strict
from gpt_runtime.services.generation import Generation
from gpt_runtime.storage import User

log = logging.getLogger("gpt_runtime.ws")
router = APIRouter(tags=["generation"])
POLICY_VIOLATION = 1008
RATE_LIMITED = 4429
INTERNAL_ERROR = 1011


class GenerateFrame(Strict):
    type: Literal["generate"]
    request_id: str = Field(min_length=1, max_length=128)
    content: str = Field(min_length=1)
    conversation_id: str | None = Field(default=None, max_length=64)
    system: str | None = Field(default=None, max_length=8000)
    params: GenerationParamsIn = Field(default_factory=GenerationParamsIn)


class CancelFrame(Strict):
    type: Literal["cancel"]
    request_id: str = Field(min_length=1, max_length=128)


ClientFrame: TypeAdapter[GenerateFrame | CancelFrame] = TypeAdapter(
    Annotated[GenerateFrame | CancelFrame, Field(discriminator="type")]
)


def _request_id_of(raw: str) -> str | None:
    """The request_id of a frame that failed validation, when it has a usable one: the client can then tell
    which of its requests the error answers."""
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    request_id = frame.get("request_id") if isinstance(frame, dict) else None
    return request_id if isinstance(request_id, str) and 0 < len(request_id) <= 128 else None


class Session:
    """One socket: its user, its generations in flight, and one lock so frames never interleave."""

    def __init__(self, websocket: WebSocket, runtime: Runtime, user: User):
        self.websocket = websocket
        self.runtime = runtime
        self.user = user
        self.running: dict[str, tuple[Generation, asyncio.Task[None]]] = {}
        self._send_lock = asyncio.Lock()

    async def send(self, frame: dict) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(frame, ensure_ascii=False))

    async def error(self, request_id: str | None, exc: DomainError) -> None:
        await self.send({"type": "error", "request_id": request_id} | http_error(exc).body)

    async def handle(self, raw: str) -> None:
        try:
            frame = ClientFrame.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "frame"
            await self.error(_request_id_of(raw), InvalidInput(f"{where}: {first['msg']}", code=first["type"]))
            return
        if isinstance(frame, CancelFrame):
            entry = self.running.get(frame.request_id)
            if entry is not None:
                await self.runtime.generation.cancel(entry[0])
            return
        if frame.request_id in self.running:
            await self.error(
                frame.request_id,
                InvalidInput("request_id is already running", param="request_id", code="duplicate_request_id"),
            )
            return
        service = self.runtime.generation
        try:
            await self.runtime.limits.check_user(self.user)  # each generation counts as a request
            generation = await service.prepare(
                self.user,
                frame.content,
                conversation_id=frame.conversation_id,
                system=frame.system,
                params=frame.params.model_dump(),
            )
            await service.start(generation)
        except DomainError as exc:
            await self.error(frame.request_id, exc)
            return
        task = asyncio.create_task(self._stream(frame.request_id, generation))
        self.running[frame.request_id] = (generation, task)
        task.add_done_callback(lambda _: self.running.pop(frame.request_id, None))

    async def _stream(self, request_id: str, generation: Generation) -> None:
        with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected):
            await self._relay(request_id, generation)

    async def _relay(self, request_id: str, generation: Generation) -> None:
        async with contextlib.aclosing(self.runtime.generation.events(generation, "websocket")) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    await self.send({"type": "delta", "request_id": request_id, "content": event.text})
                elif isinstance(event, Finished) and event.finish_reason == "error":
                    await self.error(request_id, ModelFailed())
                elif isinstance(event, Finished):
                    await self.send(
                        {
                            "type": "done",
                            "request_id": request_id,
                            "conversation_id": generation.conversation_id,
                            "message_id": generation.reply.id if generation.reply else None,
                            "finish_reason": event.finish_reason,
                            "usage": sse.usage_dict(event.usage),
                        }
                    )

    async def close(self) -> None:
        """Cancel every generation still running (the client left): frees their engine slots."""
        running = list(self.running.values())
        for _, task in running:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*(task for _, task in running), return_exceptions=True)
            for generation, _ in running:
                await self.runtime.generation.abort(generation, "websocket")


@router.websocket("/ws/generate")
async def ws_generate(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    await websocket.accept()
    token = websocket_token(websocket.headers.get("authorization"), websocket.query_params.get("access_token"))
    try:
        if not token:
            raise Unauthenticated("missing access token")
        user = await runtime.auth.authenticate(token)
    except DomainError:
        await websocket.close(POLICY_VIOLATION, "authentication failed")
        return
    try:
        await runtime.limits.check_user(user)
    except RateLimited as exc:
        await websocket.close(RATE_LIMITED, f"rate limited; retry in {exc.retry_after}s")
        return
    session = Session(websocket, runtime, user)
    try:
        while True:
            await session.handle(await websocket.receive_text())
    except (WebSocketDisconnect, WebSocketDisconnected):
        pass  # the client left (seen by the reader, or by a stream that failed to send)
    except Exception:
        log.exception("websocket session failed")
        with contextlib.suppress(Exception):
            await websocket.close(INTERNAL_ERROR, "internal error")
    finally:
        await session.close()
