"""Server-sent events in OpenAI's chat.completion.chunk format (pure formatting)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gpt_model.protocol import TokenLogprob, Usage

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"
PING = ": ping\n\n"


def sse_data(payload: dict[str, Any]) -> str:
    """One `data:` event holding a JSON object."""
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def chunk(
    completion_id: str,
    model: str,
    created: int,
    *,
    delta: dict[str, str] | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
    extra: dict[str, Any] | None = None,
    logprobs: Sequence[TokenLogprob] = (),
) -> dict[str, Any]:
    """A chat.completion.chunk; with `usage` it is the final usage chunk (empty choices)."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [] if usage is not None else [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage_dict(usage)
    elif logprobs:
        body["choices"][0]["logprobs"] = chat_logprobs(logprobs)
    if extra:
        body.update(extra)
    return body


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's `logprobs` in OpenAI's shape: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.bytes),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in e.top],
            }
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """A text completion choice's legacy `logprobs`: tokens, token_logprobs, top_logprobs, text_offset."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(bytes(e.bytes).decode("utf-8", errors="ignore"))
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }
