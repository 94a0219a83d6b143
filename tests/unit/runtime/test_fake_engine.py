from __future__ import annotations

import asyncio

import pytest
from gpt_model.fake import FakeEngine
from gpt_model.protocol import ChatMessage, ContextTooLong, Finished, GenerationRequest, SamplingParams, collect

pytestmark = pytest.mark.unit


def request(content, rid="r", **params):
    return GenerationRequest(rid, (ChatMessage("user", content),), SamplingParams(**params))


def run(coro):
    return asyncio.run(coro)


def test_reply_usage_and_limits():
    async def main():
        engine = FakeEngine()
        await engine.start()
        text, done = await collect(engine, request("a b c"))
        assert (text, done.finish_reason, done.usage.completion_tokens) == ("You said: a b c", "stop", 5)
        text, done = await collect(engine, request("a b c", max_tokens=2))
        assert (text, done.finish_reason) == ("You said: ", "length")
        text, _ = await collect(engine, request("a b c", stop=("b",)))
        assert text == "You said: a "

    run(main())


def test_context_too_long_and_cancel():
    async def main():
        engine = FakeEngine(delay_s=0.01, context_window=10)
        await engine.start()
        with pytest.raises(ContextTooLong):
            await engine.submit(request("one two three four five six seven eight"))
        rid = await engine.submit(request("x y"))
        stream = engine.stream(rid)
        await anext(stream)
        await engine.cancel(rid)
        events = [e async for e in stream]
        assert isinstance(events[-1], Finished) and events[-1].finish_reason == "cancelled"
        await engine.cancel("unknown")  # no-op

    run(main())
