"""An engine client for a separate OpenAI-compatible server: vLLM, llama.cpp's llama-server, SGLang, TGI.

Selected by the model source `openai+http://HOST:PORT/v1?model=NAME` (or `openai+https://`). Query options:

- `model`: the upstream's model name (default: the first one its /v1/models lists);
- `tokenizer`: a model source whose tokenizer counts prompt tokens before the call, for quotas and the context
  check (`builtin:smollm2-135m`, or a local directory with tokenizer.json); without one, an estimate of
  4 characters per token. What is charged afterwards is always the upstream's own usage count;
- `context`: the context window (default: what the upstream reports: llama-server's /props, vLLM's
  max_model_len; else 4096);
- `timeout`: seconds the upstream may stay silent (before the first token, or between two) before the
  request fails (default 120); connecting may take 5 s;
- `breaker_failures`, `breaker_reset_s`: after this many consecutive failures (connection errors, timeouts,
  5xx) requests fail at once with 503 for this long, then one probe goes through (defaults 5 and 10).

The API key comes from the runtime's settings (GPT_ENGINE_API_KEY), never from the URL, and is sent as a
bearer token. Streaming passes through chunk by chunk; `cancel` closes the upstream connection, which vLLM
and llama-server take as an abort. Upstream errors become protocol exceptions at `submit` (the HTTP edge maps
them to 400, 502 or 503) or a Finished("error") event mid-stream: never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from gpt_model.breaker import CircuitBreaker
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineHealth,
    EngineOverloaded,
    EngineUnavailable,
    Finished,
    FinishReason,
    GenerationRequest,
    InvalidParameter,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    UpstreamError,
    Usage,
)

log = logging.getLogger("gpt_model.upstream")

SCHEME_PREFIX = "openai+"
DEFAULT_CONTEXT = 4096
CHARS_PER_TOKEN = 4  # the estimate without a tokenizer
MESSAGE_OVERHEAD_TOKENS = 4  # chat-template tokens around each message, for the estimate
HEALTH_TTL_S = 1.0  # /ready and /metrics both ask; one upstream look per second is enough


def is_upstream_source(source: str) -> bool:
    return source.startswith((SCHEME_PREFIX + "http://", SCHEME_PREFIX + "https://"))


def request_body(request: GenerationRequest, model: str) -> tuple[str, dict[str, Any]]:
    """The upstream path and JSON body for one of our requests (OpenAI's shape, with the extensions that vLLM
    and llama-server both read: top_k, repetition_penalty / repeat_penalty)."""
    params = request.params
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.top_k:
        body["top_k"] = params.top_k
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = params.repetition_penalty  # vLLM, SGLang
        body["repeat_penalty"] = params.repetition_penalty  # llama-server
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    if params.response_format is not None:
        if params.response_format.type == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            schema = json.loads(params.response_format.schema or "{}")
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    if request.raw:
        body["prompt"] = "".join(m.content for m in request.messages)
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        return "/completions", body
    body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    if params.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = params.logprobs
    return "/chat/completions", body


def _token_logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...]:
    """Chat-shaped logprobs of one chunk (`logprobs.content`); the completions shape gives no bytes, so it is
    converted from its parallel lists."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return ()
    out = []
    for item in logprobs.get("content") or ():
        top = tuple(
            TopLogprob(t.get("token", ""), float(t.get("logprob", 0.0)), tuple(t.get("bytes") or ()))
            for t in item.get("top_logprobs") or ()
        )
        out.append(
            TokenLogprob(item.get("token", ""), float(item.get("logprob", 0.0)), tuple(item.get("bytes") or ()), top)
        )
    tokens = logprobs.get("tokens")
    if tokens and not out:
        values = logprobs.get("token_logprobs") or [0.0] * len(tokens)
        tops = logprobs.get("top_logprobs") or [{}] * len(tokens)
        for token, value, top_map in zip(tokens, values, tops, strict=False):
            top = tuple(TopLogprob(t, float(v), tuple(t.encode())) for t, v in (top_map or {}).items())
            out.append(TokenLogprob(token, float(value or 0.0), tuple(token.encode()), top))
    return tuple(out)


def parse_chunk(data: dict[str, Any]) -> tuple[TextDelta | None, str | None, Usage | None, str | None]:
    """One streamed chunk: (text, finish_reason, usage, error message), each None when absent."""
    if "error" in data:
        error = data["error"]
        return None, None, None, str(error.get("message") if isinstance(error, dict) else error)
    usage = None
    if isinstance(data.get("usage"), dict):
        u = data["usage"]
        usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
    choices = data.get("choices") or []
    if not choices:
        return None, None, usage, None
    choice = choices[0]
    text = choice["delta"].get("content") if isinstance(choice.get("delta"), dict) else choice.get("text")
    logprobs = _token_logprobs(choice)
    delta = TextDelta(text or "", logprobs) if (text or logprobs) else None
    return delta, choice.get("finish_reason"), usage, None


def _finish_reason(upstream: str | None) -> FinishReason:
    return "length" if upstream == "length" else "stop"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:300]
    return str(error)[:300]


class UpstreamEngine:
    """EngineClient for an OpenAI-compatible server over HTTP."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        tokenizer: Any = None,
        context_window: int | None = None,
        timeout_s: float = 120.0,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.root_url = urlunsplit((parts.scheme, parts.netloc, "", "", ""))  # /health lives at the root
        self.model_id = model or ""
        self.context_window = context_window or DEFAULT_CONTEXT
        self._context_given = context_window is not None
        self.tokenizer = tokenizer
        self.breaker = breaker or CircuitBreaker()
        self._timeout = httpx.Timeout(connect=5.0, read=timeout_s, write=30.0, pool=5.0)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client_args: dict[str, Any] = {"headers": headers, "timeout": self._timeout, "transport": transport}
        self._client: httpx.AsyncClient | None = None
        self._queues: dict[str, asyncio.Queue[StreamEvent]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, Usage] = {}
        self._discovered = False
        self._health: tuple[float, EngineHealth] | None = None

    @classmethod
    def from_source(cls, source: str, *, api_key: str | None = None, cache_dir: str | None = None) -> UpstreamEngine:
        """Build from `openai+http://host:port/v1?model=..&tokenizer=..&context=..&timeout=..`."""
        url = urlsplit(source.removeprefix(SCHEME_PREFIX))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        base = urlunsplit((url.scheme, url.netloc, url.path or "/v1", "", ""))
        tokenizer = load_counting_tokenizer(query["tokenizer"], cache_dir) if query.get("tokenizer") else None
        breaker = CircuitBreaker(int(query.get("breaker_failures", 5)), float(query.get("breaker_reset_s", 10)))
        return cls(
            base,
            model=query.get("model"),
            api_key=api_key,
            tokenizer=tokenizer,
            context_window=int(query["context"]) if query.get("context") else None,
            timeout_s=float(query.get("timeout", 120)),
            breaker=breaker,
        )

    # -- counting ---------------------------------------------------------------------------------------
    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode_chat(messages))
        return sum(math.ceil(len(m.content) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def count_text_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return max(1, len(self.tokenizer.encode(text)))
        return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the connection pool. The upstream may still be starting: /ready says when it is up."""
        self._client = httpx.AsyncClient(**self._client_args)
        await self.health()

    async def close(self) -> None:
        for request_id in list(self._tasks):
            await self.cancel(request_id)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("UpstreamEngine.start() was not called")
        return self._client

    async def health(self) -> EngineHealth:
        """Ready when the upstream's /health answers 200 (vLLM, llama-server, SGLang and TGI all serve it)."""
        now = time.monotonic()
        if self._health is not None and now - self._health[0] < HEALTH_TTL_S:
            return self._health[1]
        try:
            response = await self.client.get(f"{self.root_url}/health", timeout=2.0)
            ready, detail = response.status_code == 200, f"upstream /health: {response.status_code}"
        except httpx.HTTPError as exc:
            ready, detail = False, f"upstream unreachable: {type(exc).__name__}"
        if ready and not self._discovered:
            await self._discover()
        health = EngineHealth(
            ready=ready and bool(self.model_id),
            model_id=self.model_id,
            detail=detail,
            running=len(self._tasks),
            separate=True,
        )
        self._health = (now, health)
        return health

    async def _discover(self) -> None:
        """The model name and context window, from what the upstream says about itself."""
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            models = (await self.client.get(f"{self.base_url}/models", timeout=5.0)).json().get("data") or []
            entry = next((m for m in models if m.get("id") == self.model_id), models[0] if models else None)
            if entry is not None:
                self.model_id = self.model_id or entry["id"]
                if not self._context_given and entry.get("max_model_len"):  # vLLM
                    self.context_window = int(entry["max_model_len"])
                    self._context_given = True
        if not self._context_given:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                props = (await self.client.get(f"{self.root_url}/props", timeout=5.0)).json()  # llama-server
                self.context_window = int(props["default_generation_settings"]["n_ctx"])
        self._discovered = bool(self.model_id)
        log.info("upstream engine", extra={"model": self.model_id, "context_window": self.context_window})

    # -- requests ---------------------------------------------------------------------------------------
    async def submit(self, request: GenerationRequest) -> str:
        if not self.breaker.allow():
            raise EngineUnavailable(
                "the model server is unavailable; retry shortly", retry_after_s=max(1.0, self.breaker.retry_after_s())
            )
        prompt_tokens = (
            self.count_text_tokens("".join(m.content for m in request.messages))
            if request.raw
            else self.count_prompt_tokens(request.messages)
        )
        if self.tokenizer is not None and prompt_tokens >= self.context_window:
            self.breaker.success()  # we never asked; do not hold a half-open probe
            raise ContextTooLong(f"prompt takes {prompt_tokens} tokens; the context window is {self.context_window}")
        path, body = request_body(request, self.model_id)
        response = await self._open(path, body)
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._queues[request.request_id] = queue
        self._progress[request.request_id] = Usage(prompt_tokens, 0)
        self._tasks[request.request_id] = asyncio.create_task(
            self._read(request.request_id, response, prompt_tokens, queue)
        )
        return request.request_id

    async def _open(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """Send the request and wait for the status line; map every failure to a protocol exception."""
        try:
            response = await self.client.send(
                self.client.build_request("POST", f"{self.base_url}{path}", json=body), stream=True
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            self.breaker.failure()
            raise EngineUnavailable(f"the model server is unreachable ({type(exc).__name__}); retry shortly") from exc
        if response.status_code == 200:
            return response
        await response.aread()
        await response.aclose()
        message = _error_message(response)
        status = response.status_code
        if status >= 500 and status not in (503,):
            self.breaker.failure()
            # the upstream's own words (paths, device errors) go to our log, not to the client
            log.warning("upstream engine failed", extra={"status": status, "upstream_error": message})
            raise UpstreamError(f"the model server failed (HTTP {status}); retry later")
        self.breaker.success()  # it answered: it is up
        if status in (429, 503):
            raise EngineOverloaded(message)
        if status in (401, 403):
            raise UpstreamError(f"the model server refused the runtime's credentials ({status})")
        lowered = message.lower()
        if "context" in lowered and ("exceed" in lowered or "length" in lowered or "too long" in lowered):
            raise ContextTooLong(message)
        raise InvalidParameter("request", f"the model server rejected the request: {message}")

    async def _read(
        self, request_id: str, response: httpx.Response, prompt_tokens: int, queue: asyncio.Queue[StreamEvent]
    ) -> None:
        produced = 0
        finish: FinishReason = "stop"
        usage: Usage | None = None
        error: str | None = None
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:") :].strip()
                if payload == "[DONE]":
                    break
                delta, reason, chunk_usage, error = parse_chunk(json.loads(payload))
                if error is not None:
                    break
                if delta is not None:
                    produced += max(1, len(delta.logprobs))
                    self._progress[request_id] = Usage(prompt_tokens, produced)
                    queue.put_nowait(delta)
                if reason is not None:
                    finish = _finish_reason(reason)
                usage = chunk_usage or usage
        except (httpx.HTTPError, ValueError) as exc:
            error = f"the model server stopped answering ({type(exc).__name__})"
        finally:
            await response.aclose()
        if error is not None:
            self.breaker.failure()
            event = Finished("error", Usage(prompt_tokens, produced), error)
        else:
            self.breaker.success()
            event = Finished(finish, usage or Usage(prompt_tokens, produced))
        self._tasks.pop(request_id, None)
        self._progress.pop(request_id, None)
        queue.put_nowait(event)

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
        """Close the upstream connection (the server aborts the request) and end the stream as cancelled."""
        task = self._tasks.pop(request_id, None)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        usage = self._progress.pop(request_id, Usage(0, 0))
        queue = self._queues.get(request_id)
        if queue is not None:
            queue.put_nowait(Finished("cancelled", usage))


def load_counting_tokenizer(source: str, cache_dir: str | None = None) -> Any:
    """A tokenizer for counting only (no transformers, no torch: the runtime in front of an engine stays small):
    a builtin model's, from its converted directory, or one from a local directory."""
    from gpt_model.paths import SMOLLM2_DIRNAME, cache_root
    from gpt_model.tokenizer import CountingTokenizer

    if not source.startswith("builtin:"):
        return CountingTokenizer(source.removeprefix("file://"))
    if source.removeprefix("builtin:") not in ("smollm2-135m", "smollm2-135m-instruct", "default"):
        raise ValueError(f"tokenizer {source!r}: only builtin:smollm2-135m ships a tokenizer")
    converted = cache_root(cache_dir) / SMOLLM2_DIRNAME
    if not (converted / "tokenizer.json").exists():
        from gpt_model.checkpoint import smollm2_dir  # converts the GGUF once (imports torch, this one time)

        converted = smollm2_dir(cache_dir)
    return CountingTokenizer(converted)
