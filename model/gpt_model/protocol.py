"""The engine client interface: the only way the runtime talks to a model.

Pure Python, no torch: the HTTP layer imports this module and never a tensor.
An engine accepts a request (`submit`), streams its events (`stream`), can stop it
(`cancel`) and reports whether it can serve (`health`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class ResponseFormat:
    """Constrained output: any JSON object, or JSON that fits `schema` (see gpt_model.json_prefix)."""

    type: Literal["json_object", "json_schema"]
    schema: str | None = None  # the JSON Schema as JSON text (json_schema only)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy.

    presence/frequency penalties (OpenAI's) apply to the tokens generated so far; logit_bias adds
    to the logits of token ids (-100 bans a token); logprobs None returns none, k >= 0 returns each
    token's log-probability and its k most likely alternatives.
    """

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None
    response_format: ResponseFormat | None = None

    @property
    def deterministic(self) -> bool:
        """True when the same input always gives the same output."""
        return self.temperature == 0 or self.seed is not None

    @property
    def plain(self) -> bool:
        """No penalty, bias, logprobs or output format beyond the basic settings (the cacheable kind)."""
        return not (self.presence_penalty or self.frequency_penalty or self.logit_bias or self.response_format) and (
            self.logprobs is None
        )


@dataclass(frozen=True)
class GenerationRequest:
    """A chat generation: messages in, assistant text out."""

    request_id: str
    messages: Sequence[ChatMessage]
    params: SamplingParams = field(default_factory=SamplingParams)
    raw: bool = False  # a text completion: the one message's content is the prompt, no chat template


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TopLogprob:
    """One candidate token and its log-probability."""

    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log-probability and the most likely alternatives at its place."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply, as soon as it is decoded; with the tokens behind it when logprobs were asked for."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The last event of every stream."""

    finish_reason: FinishReason
    usage: Usage
    error: str | None = None


StreamEvent = TextDelta | Finished


@dataclass(frozen=True)
class EngineHealth:
    """What /ready reports about the model."""

    ready: bool
    model_id: str
    detail: str = ""
    queue_depth: int = 0
    running: int = 0
    kv_cache_usage: float = 0.0  # the fraction of the KV-cache budget held by running requests; 0 when unknown
    separate: bool = False  # a separate engine server: its own queue and KV cache are its /metrics' business


class EngineOverloaded(Exception):
    """The engine's waiting queue is full; retry later."""


class EngineUnavailable(Exception):
    """The engine cannot be reached (down, timing out, or its circuit breaker is open); retry later."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(Exception):
    """A separate engine server answered with an error of its own (a 5xx, or refused our credentials)."""


class ContextTooLong(ValueError):
    """The prompt alone does not fit in the model's context window."""


class InvalidParameter(ValueError):
    """A request parameter the engine cannot honour (e.g. a logit_bias key outside the vocabulary)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@runtime_checkable
class EngineClient(Protocol):
    """Async interface to a model engine."""

    model_id: str
    context_window: int

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the prompt built from `messages` (chat template applied) takes."""
        ...

    def count_text_tokens(self, text: str) -> int:
        """Tokens a raw text prompt (a text completion, no template) takes."""
        ...

    async def submit(self, request: GenerationRequest) -> str:
        """Queue a request; returns its id.

        Raises EngineOverloaded, ContextTooLong or InvalidParameter; an engine behind the network also
        EngineUnavailable or UpstreamError."""
        ...

    def stream(self, request_id: str) -> AsyncIterator[StreamEvent]:
        """Events of a submitted request: TextDelta* then exactly one Finished."""
        ...

    async def cancel(self, request_id: str) -> None:
        """Stop a request and free its resources; a no-op for unknown ids."""
        ...

    async def health(self) -> EngineHealth:
        """Whether the engine can serve now."""
        ...

    async def start(self) -> None:
        """Load weights and start background work."""
        ...

    async def close(self) -> None:
        """Stop background work and release resources."""
        ...


async def collect(engine: EngineClient, request: GenerationRequest) -> tuple[str, Finished]:
    """Submit a request and gather its whole reply."""
    request_id = await engine.submit(request)
    parts: list[str] = []
    try:
        async for event in engine.stream(request_id):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                return "".join(parts), event
    finally:
        await engine.cancel(request_id)
    raise RuntimeError("engine stream ended without a Finished event")
