from __future__ import annotations

import json

import pytest
from gpt_model.protocol import Usage
from gpt_runtime import sse
from gpt_runtime.logging_setup import redact
from gpt_runtime.services.generation import title_from_prompt
from gpt_runtime.storage.base import InvalidCursor, decode_cursor, encode_cursor

pytestmark = pytest.mark.unit


def test_cursor_round_trip_and_rejection():
    assert decode_cursor(encode_cursor(1_700_000_000_123_456, "abc")) == (1_700_000_000_123_456, "abc")
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor(1, "x")[:-3] + "zzz"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_titles_are_one_short_line():
    assert title_from_prompt("  hello\n\tworld  ") == "hello world"
    long = title_from_prompt("word " * 40)
    assert len(long) == 60 and long.endswith("…")


def test_sse_chunks_follow_openai():
    text = sse.sse_data(sse.chunk("id1", "m", 5, delta={"content": "hé"}))
    assert text.startswith("data: ") and text.endswith("\n\n")
    body = json.loads(text[6:])
    assert body["object"] == "chat.completion.chunk"
    assert body["choices"] == [{"index": 0, "delta": {"content": "hé"}, "finish_reason": None}]
    usage = sse.chunk("id1", "m", 5, usage=Usage(3, 4))
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert sse.DONE == "data: [DONE]\n\n"


def test_credentials_in_urls_are_redacted():
    line = '127.0.0.1 - "WebSocket /ws/generate?access_token=eyJ.abc.def&x=1" 101'
    assert redact(line) == '127.0.0.1 - "WebSocket /ws/generate?access_token=[REDACTED]&x=1" 101'
    assert redact("GET /reset?token=s3cr3t") == "GET /reset?token=[REDACTED]"
    assert redact("nothing to hide") == "nothing to hide"
