"""Generation for every transport: quota -> cache -> admission -> engine -> store -> charge.

`prepare` checks the input and fits the context; `start` applies the quota, answers from the
cache when it can, otherwise waits for an engine slot and submits; `events` streams and stores;
`abort` ends a generation whose client went away. Nothing is stored before `start` succeeds; the
prompt and its reply are stored together when the generation ends (a cancelled one keeps what was
said). When the engine fails nothing of the exchange is stored, and a conversation `start` made for
it is removed again. Cached answers are per user: one user's prompts never show in another's timing.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineClient,
    EngineOverloaded,
    EngineUnavailable,
    Finished,
    GenerationRequest,
    InvalidParameter,
    SamplingParams,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    UpstreamError,
    Usage,
)

from gpt_runtime.domain_errors import InvalidInput, NotFound, RateLimited, TooLarge, Unavailable, UpstreamFailed
from gpt_runtime.metrics import Metrics, StreamTimer
from gpt_runtime.services.admission import AdmissionGate
from gpt_runtime.services.cache import CacheService, fallback_key, response_key
from gpt_runtime.services.context import fit_context
from gpt_runtime.services.limits import PRIORITY_BY_ROLE, Limits
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.sse import usage_dict
from gpt_runtime.storage import Conversation, Message, NewMessage, Store, User

log = logging.getLogger("gpt_runtime.generation")
TITLE_CHARS = 60


def title_from_prompt(prompt: str) -> str:
    """A conversation title from its first prompt: one line, at most TITLE_CHARS characters."""
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


@dataclass
class Generation:
    """One generation in flight: its request, where its answer comes from, and once done its stored reply."""

    user: User
    conversation: Conversation | None
    request: GenerationRequest
    prompt: str
    priority: str = "medium"
    persist: bool = True  # False: nothing is stored (OpenAI-style history in the request, or a job)
    created_conversation: bool = False  # start() made the conversation: removed again if the engine fails
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # when the request asked for them
    finished: Finished | None = None
    reply: Message | None = None
    cached: dict | None = None  # an answer from the cache: {"content", "finish_reason", "usage"}
    cache_source: str | None = None  # "cache" or "quota-fallback"
    headers: dict[str, str] = field(default_factory=dict)
    release: Callable[[], None] | None = None
    timer: StreamTimer = field(default_factory=lambda: StreamTimer(time.monotonic()))  # arrival: when prepared

    @property
    def conversation_id(self) -> str:
        assert self.conversation is not None
        return self.conversation.id

    @property
    def content(self) -> str:
        return "".join(self.text)


def cacheable(request: GenerationRequest) -> bool:
    """Only plain chat answers are cached: a cached answer has no logprobs, and keys do not carry
    response formats, penalties, biases or the raw/chat distinction."""
    return request.params.plain and not request.raw


class GenerationService:
    """Prepares, runs and records generations; every transport (REST, SSE, WS, jobs) goes through it."""

    def __init__(
        self,
        store: Store,
        engine: EngineClient,
        metrics: Metrics,
        settings: RuntimeSettings,
        *,
        limits: Limits,
        cache: CacheService,
        gate: AdmissionGate,
    ):
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.settings = settings
        self.limits = limits
        self.cache = cache
        self.gate = gate

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
        priority: str | None = None,
    ) -> Generation:
        """Check the input, load context and fit it to the window. Nothing is stored yet."""
        if len(prompt) > self.settings.max_prompt_chars:
            raise TooLarge(
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
        request = self._request(context, params, param="prompt")
        return Generation(user, conversation, request, prompt, priority or PRIORITY_BY_ROLE.get(user.role, "medium"))

    def prepare_chat(self, user: User, messages: list[ChatMessage], params: dict | None = None) -> Generation:
        """A stateless chat (OpenAI-style): the caller sends the whole history; nothing is stored."""
        if sum(len(m.content) for m in messages) > self.settings.max_prompt_chars:
            raise TooLarge(
                f"messages exceed {self.settings.max_prompt_chars} characters",
                param="messages",
                code="prompt_too_large",
            )
        request = self._request(messages, params, param="messages")
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        generation = Generation(user, None, request, last_user, PRIORITY_BY_ROLE.get(user.role, "medium"))
        generation.persist = False
        return generation

    def prepare_completion(self, user: User, prompt: str, params: dict | None = None) -> Generation:
        """A stateless text completion (OpenAI's /v1/completions): the prompt as is, no chat template."""
        if len(prompt) > self.settings.max_prompt_chars:
            raise TooLarge(
                f"prompt is {len(prompt)} characters; the limit is {self.settings.max_prompt_chars}",
                param="prompt",
                code="prompt_too_large",
            )
        params = dict(params or {})
        wanted = min(params.pop("max_tokens", None) or self.settings.default_max_tokens, self.settings.max_new_tokens)
        used = self.engine.count_text_tokens(prompt)
        if used >= self.context_window:
            raise InvalidInput(
                f"the prompt takes {used} tokens; the model's context window is {self.context_window}",
                param="prompt",
                code="context_length_exceeded",
            )
        params["stop"] = tuple(params.get("stop") or ())
        sampling = SamplingParams(max_tokens=min(wanted, self.context_window - used), **params)
        request = GenerationRequest(f"cmpl-{uuid.uuid4().hex}", (ChatMessage("user", prompt),), sampling, raw=True)
        generation = Generation(user, None, request, prompt, PRIORITY_BY_ROLE.get(user.role, "medium"))
        generation.persist = False
        return generation

    def _request(self, context: list[ChatMessage], params: dict | None, *, param: str) -> GenerationRequest:
        """Fit the context to the window (oldest turns first) and clip max_tokens to the room left."""
        params = dict(params or {})
        wanted = min(params.pop("max_tokens", None) or self.settings.default_max_tokens, self.settings.max_new_tokens)
        try:
            kept, budget = fit_context(context, self.engine.count_prompt_tokens, self.context_window, wanted)
        except ContextTooLong as exc:
            raise InvalidInput(str(exc), param=param, code="context_length_exceeded") from exc
        params["stop"] = tuple(params.get("stop") or ())
        return GenerationRequest(f"gen-{uuid.uuid4().hex}", tuple(kept), SamplingParams(max_tokens=budget, **params))

    async def start(self, generation: Generation) -> None:
        """Quota, then the cache, then an engine slot; then create the conversation and store the prompt.

        Raises domain errors (rate limited, unavailable, invalid input) before anything is stored, so a
        transport can still answer with a plain HTTP error. Follow with `events()`.
        """
        request = generation.request
        try:
            generation.headers = await self.limits.check_quota(generation.user)
        except RateLimited:
            fallback = await self.cache.get("fallback", self._fallback_key(generation)) if cacheable(request) else None
            if fallback is None:
                raise
            generation.cached, generation.cache_source = fallback, "quota-fallback"
        if generation.cached is None and request.params.deterministic and cacheable(request):
            hit = await self.cache.get("response", self._response_key(generation))
            if hit is not None:
                generation.cached, generation.cache_source = hit, "cache"
        if generation.cached is None:
            await self._submit(generation)
        if not generation.persist:
            return
        try:
            if generation.conversation is None:
                generation.conversation = await self.store.create_conversation(
                    generation.user.id, title_from_prompt(generation.prompt)
                )
                generation.created_conversation = True
                await self.cache.invalidate_user(generation.user.id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._free(generation)
            raise

    async def _submit(self, generation: Generation) -> None:
        await self.gate.acquire(generation.priority, self.settings.queue_timeout_s)
        generation.release = self.gate.release
        try:
            await self.engine.submit(generation.request)
        except BaseException as exc:
            self._release(generation)
            if isinstance(exc, EngineOverloaded):
                raise Unavailable("the model is overloaded; retry shortly", code="overloaded", retry_after=1) from exc
            if isinstance(exc, EngineUnavailable):
                raise Unavailable(
                    str(exc), code="engine_unavailable", retry_after=math.ceil(exc.retry_after_s)
                ) from exc
            if isinstance(exc, UpstreamError):
                raise UpstreamFailed(str(exc), code="upstream_error") from exc
            if isinstance(exc, ContextTooLong):
                raise InvalidInput(str(exc), param="prompt", code="context_length_exceeded") from exc
            if isinstance(exc, InvalidParameter):
                raise InvalidInput(str(exc), param=exc.param, code="invalid_value") from exc
            raise

    def _release(self, generation: Generation) -> None:
        release, generation.release = generation.release, None
        if release is not None:
            release()

    async def _free(self, generation: Generation) -> None:
        if generation.cached is None:
            await self.engine.cancel(generation.request.request_id)
        self._release(generation)

    def _prompt_tokens(self, request: GenerationRequest) -> int:
        if request.raw:
            return self.engine.count_text_tokens("".join(m.content for m in request.messages))
        return self.engine.count_prompt_tokens(request.messages)

    def _response_key(self, generation: Generation) -> str:
        request = generation.request
        return response_key(self.engine.model_id, request.messages, request.params, user_id=generation.user.id)

    def _fallback_key(self, generation: Generation) -> str:
        return fallback_key(self.engine.model_id, generation.request.messages, user_id=generation.user.id)

    async def _source(self, generation: Generation) -> AsyncIterator[StreamEvent]:
        if generation.cached is not None:
            cached = generation.cached
            usage = cached.get("usage", {})
            yield TextDelta(cached["content"])
            yield Finished(
                cached["finish_reason"], Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            )
            return
        async for event in self.engine.stream(generation.request.request_id):
            yield event

    async def events(self, generation: Generation, transport: str) -> AsyncGenerator[StreamEvent, None]:
        """Stream a started generation; the reply is stored when it ends, also a partial one on cancel."""
        self.metrics.active_streams.inc()
        try:
            try:
                async for event in self._source(generation):
                    if isinstance(event, TextDelta):
                        self._timed_token(generation)
                        generation.text.append(event.text)
                        generation.logprobs.extend(event.logprobs)
                    else:
                        generation.finished = event
                        await self._record(generation, transport)
                    yield event
            except Exception as exc:  # the engine raised: end as an engine error, like one it reports
                if generation.finished is not None:
                    raise
                log.exception("engine failed", extra={"error": type(exc).__name__})
                prompt_tokens = self._prompt_tokens(generation.request)
                generation.finished = Finished("error", Usage(prompt_tokens, len(generation.text)), "engine failed")
                await self._record(generation, transport)
                yield generation.finished
        finally:
            self.metrics.active_streams.dec()
            await self.abort(generation, transport)

    def _timed_token(self, generation: Generation) -> None:
        """vLLM's TTFT and inter-token latency, for tokens the engine made (not a cached answer)."""
        if generation.cached is not None:
            return
        kind, seconds = generation.timer.token()
        histogram = self.metrics.vllm_ttft if kind == "ttft" else self.metrics.vllm_itl
        histogram.labels(self.engine.model_id).observe(seconds)

    async def abort(self, generation: Generation, transport: str) -> None:
        """End a started generation nobody will read further: free its engine slot, keep what was said.

        Idempotent, and safe to call whether or not its events were ever iterated; every
        transport calls it when its client goes away.
        """
        if generation.finished is not None:
            return
        with anyio.CancelScope(shield=True):
            await self._free(generation)
            prompt_tokens = self._prompt_tokens(generation.request)
            generation.finished = Finished("cancelled", Usage(prompt_tokens, len(generation.text)))
            await self._record(generation, transport)

    async def cancel(self, generation: Generation) -> None:
        """Ask the engine to stop; the stream then ends with finish_reason "cancelled"."""
        if generation.cached is None:
            await self.engine.cancel(generation.request.request_id)

    async def _record(self, generation: Generation, transport: str) -> None:
        """Free the slot, charge and count the generation, cache a complete answer, store the reply."""
        self._release(generation)
        finished = generation.finished
        assert finished is not None
        usage = finished.usage
        self.metrics.generations.labels(transport, finished.finish_reason).inc()
        if finished.finish_reason == "error":
            log.warning("generation failed; nothing stored", extra={"error": (finished.error or "")[:200]})
            await self._discard(generation)
            return
        if generation.cached is None:
            model_name = self.engine.model_id
            self.metrics.vllm_e2e.labels(model_name).observe(generation.timer.finished())
            self.metrics.tokens(model_name, usage.prompt_tokens, usage.completion_tokens)
            await self.limits.charge(generation.user, usage.prompt_tokens, usage.completion_tokens)
            if finished.finish_reason in ("stop", "length"):
                await self._remember(generation)
        if generation.persist and generation.conversation is not None:
            await self._store_reply(generation)
        log.info(
            "generation finished",
            extra={
                "conversation_id": generation.conversation.id if generation.conversation else None,
                "finish_reason": finished.finish_reason,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cache": generation.cache_source or "miss",
            },
        )

    async def _discard(self, generation: Generation) -> None:
        """After an engine failure: remove the conversation start() made for this generation, if still empty."""
        if not (generation.persist and generation.created_conversation and generation.conversation):
            return
        user_id, conversation_id = generation.user.id, generation.conversation.id
        try:
            if not await self.store.list_messages(user_id, conversation_id):
                await self.store.delete_conversation(user_id, conversation_id)
                await self.cache.invalidate_user(user_id)
        except Exception:
            log.exception("could not remove the conversation of a failed generation")

    async def _store_reply(self, generation: Generation) -> None:
        """Write the prompt and its reply to the conversation; a cancelled empty reply is dropped."""
        finished = generation.finished
        assert finished is not None and generation.conversation is not None
        messages = [NewMessage("user", generation.prompt)]
        if generation.content or finished.finish_reason != "cancelled":
            messages.append(
                NewMessage("assistant", generation.content, finished.usage.completion_tokens, finished.finish_reason)
            )
        if messages:
            stored = await self.store.add_messages(generation.user.id, generation.conversation.id, messages)
            generation.reply = stored[-1] if stored and stored[-1].role == "assistant" else None
            await self.cache.invalidate_user(generation.user.id)

    async def _remember(self, generation: Generation) -> None:
        """Cache a complete answer: by exact request when deterministic, and as the quota fallback."""
        finished = generation.finished
        assert finished is not None
        answer = {
            "content": generation.content,
            "finish_reason": finished.finish_reason,
            "usage": usage_dict(finished.usage),
        }
        ttl = self.settings.cache_response_ttl_s
        if not cacheable(generation.request):
            return
        if generation.request.params.deterministic:
            await self.cache.set(self._response_key(generation), answer, ttl)
        await self.cache.set(self._fallback_key(generation), answer, ttl)
