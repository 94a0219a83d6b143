"""Generation: conversation context -> engine -> stored messages, for every transport."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineClient,
    EngineOverloaded,
    Finished,
    GenerationRequest,
    SamplingParams,
    StreamEvent,
    TextDelta,
    Usage,
)

from gpt_runtime.errors import BadRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from gpt_runtime.metrics import Metrics
from gpt_runtime.services.context import fit_context
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import Conversation, Message, NewMessage, Store, User

log = logging.getLogger("gpt_runtime.generation")
TITLE_CHARS = 60


def title_from_prompt(prompt: str) -> str:
    """A conversation title from its first prompt: one line, at most TITLE_CHARS characters."""
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


@dataclass
class Generation:
    """One generation in flight: its request, and once done its stored reply."""

    user: User
    conversation: Conversation | None
    request: GenerationRequest
    prompt: str
    text: list[str] = field(default_factory=list)
    finished: Finished | None = None
    reply: Message | None = None

    @property
    def conversation_id(self) -> str:
        assert self.conversation is not None
        return self.conversation.id

    @property
    def content(self) -> str:
        return "".join(self.text)


class GenerationService:
    """Prepares a generation from a prompt and a conversation, runs it, and stores both messages."""

    def __init__(self, store: Store, engine: EngineClient, metrics: Metrics, settings: RuntimeSettings):
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.settings = settings

    @property
    def context_window(self) -> int:
        limit = self.settings.max_context_tokens
        return min(self.engine.context_window, limit) if limit else self.engine.context_window

    async def prepare(
        self,
        user: User,
        prompt: str,
        *,
        conversation_id: str | None = None,
        system: str | None = None,
        params: dict | None = None,
    ) -> Generation:
        """Check the input, load context and fit it to the window. Nothing is stored yet."""
        if len(prompt) > self.settings.max_prompt_chars:
            raise PayloadTooLarge(
                f"prompt is {len(prompt)} characters; the limit is {self.settings.max_prompt_chars}",
                param="prompt",
                code="prompt_too_large",
            )
        history: list[ChatMessage] = []
        conversation = None
        if conversation_id is not None:
            conversation = await self.store.get_conversation(user.id, conversation_id)
            messages = await self.store.list_messages(user.id, conversation_id) if conversation else None
            if conversation is None or messages is None:
                raise NotFound("conversation not found", param="conversation_id", code="conversation_not_found")
            history = [ChatMessage(m.role, m.content) for m in messages if m.content]
        context = ([ChatMessage("system", system)] if system else []) + history + [ChatMessage("user", prompt)]
        params = dict(params or {})
        wanted = min(params.pop("max_tokens", None) or self.settings.default_max_tokens, self.settings.max_new_tokens)
        try:
            kept, budget = fit_context(context, self.engine.count_prompt_tokens, self.context_window, wanted)
        except ContextTooLong as exc:
            raise BadRequest(str(exc), param="prompt", code="context_length_exceeded") from exc
        params["stop"] = tuple(params.get("stop") or ())
        sampling = SamplingParams(max_tokens=budget, **params)
        request = GenerationRequest(f"gen-{uuid.uuid4().hex}", tuple(kept), sampling)
        return Generation(user, conversation, request, prompt)

    async def start(self, generation: Generation) -> None:
        """Submit to the engine, then create the conversation if new and store the prompt.

        Raises APIErrors (503 overloaded, 400 context) before anything is stored, so a
        transport can still answer with a plain HTTP error. Follow with `events()`.
        """
        try:
            await self.engine.submit(generation.request)
        except EngineOverloaded as exc:
            raise ServiceUnavailable(
                "the model is overloaded; retry shortly", code="overloaded", headers={"Retry-After": "1"}
            ) from exc
        except ContextTooLong as exc:
            raise BadRequest(str(exc), param="prompt", code="context_length_exceeded") from exc
        try:
            if generation.conversation is None:
                generation.conversation = await self.store.create_conversation(
                    generation.user.id, title_from_prompt(generation.prompt)
                )
            await self.store.add_messages(
                generation.user.id, generation.conversation.id, [NewMessage("user", generation.prompt)]
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.engine.cancel(generation.request.request_id)
            raise

    async def events(self, generation: Generation, transport: str) -> AsyncIterator[StreamEvent]:
        """Stream a started generation; the reply is stored when it ends, also a partial one on cancel."""
        self.metrics.active_streams.inc()
        try:
            async for event in self.engine.stream(generation.request.request_id):
                if isinstance(event, TextDelta):
                    generation.text.append(event.text)
                else:
                    generation.finished = event
                    await self._record(generation, transport)
                yield event
        finally:
            self.metrics.active_streams.dec()
            await self.abort(generation, transport)

    async def abort(self, generation: Generation, transport: str) -> None:
        """End a started generation nobody will read further: free its engine slot, keep what was said.

        Idempotent, and safe to call whether or not its events were ever iterated; every
        transport calls it when its client goes away.
        """
        if generation.finished is not None:
            return
        with anyio.CancelScope(shield=True):
            await self.engine.cancel(generation.request.request_id)
            prompt_tokens = self.engine.count_prompt_tokens(generation.request.messages)
            generation.finished = Finished("cancelled", Usage(prompt_tokens, len(generation.text)))
            await self._record(generation, transport)

    async def cancel(self, generation: Generation) -> None:
        """Ask the engine to stop; the stream then ends with finish_reason "cancelled"."""
        await self.engine.cancel(generation.request.request_id)

    async def _record(self, generation: Generation, transport: str) -> None:
        """Count the finished generation and store its reply (unless it is empty and cancelled)."""
        finished = generation.finished
        assert finished is not None and generation.conversation is not None
        self.metrics.generations.labels(transport, finished.finish_reason).inc()
        self.metrics.generation_tokens.labels("prompt").inc(finished.usage.prompt_tokens)
        self.metrics.generation_tokens.labels("completion").inc(finished.usage.completion_tokens)
        if finished.finish_reason == "cancelled" and not generation.content:
            return
        stored = await self.store.add_messages(
            generation.user.id,
            generation.conversation.id,
            [NewMessage("assistant", generation.content, finished.usage.completion_tokens, finished.finish_reason)],
        )
        generation.reply = stored[0] if stored else None
        log.info(
            "generation finished",
            extra={
                "conversation_id": generation.conversation.id,
                "finish_reason": finished.finish_reason,
                "prompt_tokens": finished.usage.prompt_tokens,
                "completion_tokens": finished.usage.completion_tokens,
            },
        )
