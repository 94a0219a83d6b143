"""A deterministic engine for tests and demos: no weights, no torch.

Selected by the model source `fake:echo` (optionally `fake:echo?delay_ms=20&context=2048`).
It replies "You said: <last user message>" word by word, counts a word as a token and
honours max_tokens, stop sequences and cancellation like a real engine. With `fail_on=TEXT`
it fails like a real engine does (a Finished event with finish_reason "error") half-way through
any reply to a last user message that contains TEXT, for tests of failure handling.
Under a response_format it replies with JSON instead ({"reply": ...}, or the smallest document a
json_schema allows); with logprobs each word comes with log-probability 0 (it is certain).
Penalties and logit_bias change nothing. A raw (text completion) prompt is echoed the same way.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from urllib.parse import parse_qs, urlsplit

from gpt_model.json_prefix import JSONPrefix, UnsupportedSchema, compile_schema
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineHealth,
    Finished,
    FinishReason,
    GenerationRequest,
    InvalidParameter,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

_WORD = re.compile(r"\S+\s*|\s+")
MESSAGE_OVERHEAD_TOKENS = 3


def word_tokens(text: str) -> list[str]:
    """Split text into the fake engine's tokens: words with their trailing space."""
    return _WORD.findall(text)


def fake_reply(messages: Sequence[ChatMessage], response_format: ResponseFormat | None = None) -> str:
    """The reply the fake engine gives to a conversation."""
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    if response_format is None:
        return f"You said: {last_user}"
    if response_format.type == "json_object":
        return json.dumps({"reply": f"You said: {last_user}"})
    try:
        return JSONPrefix.start(compile_schema(json.loads(response_format.schema or "null"))).closing()
    except (UnsupportedSchema, ValueError) as exc:
        raise InvalidParameter("response_format", f"json_schema: {exc}") from exc


def _logprobs(token: str, top: int | None) -> tuple[TokenLogprob, ...]:
    if top is None:
        return ()
    raw = tuple(token.encode())
    return (TokenLogprob(token, 0.0, raw, (TopLogprob(token, 0.0, raw),) if top else ()),)


class FakeEngine:
    """Deterministic in-process engine implementing EngineClient."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        context_window: int = 2048,
        model_id: str = "fake-echo",
        fail_on: str | None = None,
    ):
        self.model_id = model_id
        self.context_window = context_window
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.cancelled: list[str] = []
        self._queues: dict[str, asyncio.Queue[StreamEvent]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, Usage] = {}
        self._started = False

    @classmethod
    def from_source(cls, source: str) -> FakeEngine:
        """Build from `fake:echo?delay_ms=..&context=..`."""
        query = parse_qs(urlsplit(source).query)
        delay_ms = float(query.get("delay_ms", ["0"])[0])
        context = int(query.get("context", ["2048"])[0])
        fail_on = query.get("fail_on", [None])[0]
        return cls(delay_s=delay_ms / 1000.0, context_window=context, fail_on=fail_on)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(word_tokens(m.content)) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def count_text_tokens(self, text: str) -> int:
        return max(1, len(word_tokens(text)))

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        for request_id in list(self._tasks):
            await self.cancel(request_id)
        self._started = False

    async def health(self) -> EngineHealth:
        return EngineHealth(ready=self._started, model_id=self.model_id, running=len(self._tasks))

    async def submit(self, request: GenerationRequest) -> str:
        if request.raw:
            prompt_tokens = self.count_text_tokens("".join(m.content for m in request.messages))
        else:
            prompt_tokens = self.count_prompt_tokens(request.messages)
        if prompt_tokens >= self.context_window:
            raise ContextTooLong(f"prompt takes {prompt_tokens} tokens; the context window is {self.context_window}")
        fake_reply(request.messages, request.params.response_format)  # raises InvalidParameter before queueing
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._queues[request.request_id] = queue
        self._progress[request.request_id] = Usage(prompt_tokens, 0)
        self._tasks[request.request_id] = asyncio.create_task(self._run(request, prompt_tokens, queue))
        return request.request_id

    async def _run(self, request: GenerationRequest, prompt_tokens: int, queue: asyncio.Queue) -> None:
        params = request.params
        budget = min(params.max_tokens, self.context_window - prompt_tokens)
        text = ""
        finish: FinishReason = "stop"
        produced = 0
        tokens = word_tokens(fake_reply(request.messages, params.response_format))
        top = params.logprobs
        fail_at = len(tokens) // 2 if self.fail_on and self.fail_on in fake_reply(request.messages) else None
        for token in tokens:
            if produced == fail_at:
                queue.put_nowait(Finished("error", Usage(prompt_tokens, produced), "fake engine failure"))
                self._tasks.pop(request.request_id, None)
                self._progress.pop(request.request_id, None)
                return
            if produced >= budget:
                finish = "length"
                break
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            text += token
            produced += 1
            self._progress[request.request_id] = Usage(prompt_tokens, produced)
            cut = next((text.index(s) for s in params.stop if s and s in text), None)
            if cut is not None:
                piece = token[: max(0, len(token) - (len(text) - cut))]
                if piece:
                    queue.put_nowait(TextDelta(piece, _logprobs(token, top)))
                break
            queue.put_nowait(TextDelta(token, _logprobs(token, top)))
        queue.put_nowait(Finished(finish, Usage(prompt_tokens, produced)))
        self._tasks.pop(request.request_id, None)
        self._progress.pop(request.request_id, None)

    async def stream(self, request_id: str) -> AsyncIterator[StreamEvent]:
        queue = self._queues.get(request_id)
        if queue is None:
            raise KeyError(request_id)
        try:
            while True:
                event = await queue.get()
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            self._queues.pop(request_id, None)

    async def cancel(self, request_id: str) -> None:
        task = self._tasks.pop(request_id, None)
        if task is None:
            return
        task.cancel()
        self.cancelled.append(request_id)
        usage = self._progress.pop(request_id, Usage(0, 0))
        queue = self._queues.get(request_id)
        if queue is not None:
            queue.put_nowait(Finished("cancelled", usage))
