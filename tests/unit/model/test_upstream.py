"""The OpenAI-compatible upstream client's pure parts: the request it sends, the chunks it reads, how it maps
upstream answers to our errors (over httpx's MockTransport), and its circuit breaker on a fake clock."""

import asyncio
import json

import httpx
import pytest
from gpt_model.breaker import CircuitBreaker
from gpt_model.protocol import (
    ChatMessage,
    ContextTooLong,
    EngineOverloaded,
    EngineUnavailable,
    Finished,
    GenerationRequest,
    InvalidParameter,
    ResponseFormat,
    SamplingParams,
    TextDelta,
    UpstreamError,
    Usage,
)
from gpt_model.registry import open_engine
from gpt_model.upstream import UpstreamEngine, parse_chunk, request_body

pytestmark = pytest.mark.unit
HELLO = (ChatMessage("user", "hello"),)


def test_the_request_carries_every_sampling_setting_in_openais_shape():
    params = SamplingParams(
        max_tokens=7,
        temperature=0.0,
        top_p=0.9,
        top_k=40,
        repetition_penalty=1.1,
        seed=3,
        stop=("\n\n",),
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logit_bias=((42, -100.0),),
        logprobs=2,
        response_format=ResponseFormat("json_schema", json.dumps({"type": "object"})),
    )
    path, body = request_body(GenerationRequest("r1", HELLO, params), "smollm2")
    assert path == "/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (
        "smollm2",
        7,
        0.0,
        0.9,
        40,
    )
    assert body["repetition_penalty"] == body["repeat_penalty"] == 1.1
    assert body["seed"] == 3 and body["stop"] == ["\n\n"]
    assert body["logit_bias"] == {"42": -100.0}
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }


def test_a_raw_request_is_a_text_completion():
    request = GenerationRequest("r1", (ChatMessage("user", "Once upon"),), SamplingParams(logprobs=1), raw=True)
    path, body = request_body(request, "m")
    assert path == "/completions"
    assert body["prompt"] == "Once upon" and body["logprobs"] == 1 and "messages" not in body
    assert "top_k" not in body and "repeat_penalty" not in body  # defaults are not sent


def test_chunks_give_text_finish_reason_usage_and_logprobs():
    delta, reason, usage, error = parse_chunk(
        {
            "choices": [
                {
                    "delta": {"content": "Hi"},
                    "finish_reason": None,
                    "logprobs": {
                        "content": [
                            {
                                "token": "Hi",
                                "logprob": -0.5,
                                "bytes": [72, 105],
                                "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}],
                            }
                        ]
                    },
                }
            ]
        }
    )
    assert delta is not None and delta.text == "Hi" and delta.logprobs[0].logprob == -0.5
    assert delta.logprobs[0].top[0].bytes == (72, 105)
    assert (reason, usage, error) == (None, None, None)
    assert parse_chunk({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})[2] == Usage(5, 2)
    assert parse_chunk({"choices": [{"text": " there", "finish_reason": "length"}]})[:2] == (
        TextDelta(" there"),
        "length",
    )
    assert parse_chunk({"error": {"message": "slot died"}})[3] == "slot died"


def _engine(handler, **kwargs) -> UpstreamEngine:
    return UpstreamEngine("http://upstream/v1", model="m", transport=httpx.MockTransport(handler), **kwargs)


async def _run(engine: UpstreamEngine, request: GenerationRequest):
    await engine.start()
    try:
        request_id = await engine.submit(request)
        return [event async for event in engine.stream(request_id)]
    finally:
        await engine.close()


def _sse(*chunks: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_a_stream_passes_through_with_the_upstreams_usage():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 512}]})
        assert request.headers["authorization"] == "Bearer k3y"
        return httpx.Response(
            200,
            content=_sse(
                {"choices": [{"delta": {"content": "Hel"}}]},
                {"choices": [{"delta": {"content": "lo"}, "finish_reason": "length"}]},
                {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}},
            ),
            headers={"content-type": "text/event-stream"},
        )

    engine = _engine(handler, api_key="k3y")
    events = asyncio.run(_run(engine, GenerationRequest("r1", HELLO)))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    assert events[-1] == Finished("length", Usage(11, 2))
    assert engine.context_window == 512  # vLLM's max_model_len


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (400, {"error": {"message": "the request exceeds the available context size"}}, ContextTooLong),
        (400, {"error": {"message": "logit_bias key out of range"}}, InvalidParameter),
        (429, {"error": {"message": "busy"}}, EngineOverloaded),
        (503, {"error": {"message": "loading model"}}, EngineOverloaded),
        (500, {"error": {"message": "CUDA error"}}, UpstreamError),
        (401, {"error": {"message": "Invalid API Key"}}, UpstreamError),
    ],
)
def test_upstream_errors_become_our_errors_at_submit(status, body, raised):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(status, json=body)

    with pytest.raises(raised) as info:
        asyncio.run(_run(_engine(handler), GenerationRequest("r1", HELLO)))
    if status == 500:  # the upstream's internals stay in our log
        assert "CUDA" not in str(info.value) and "500" in str(info.value)


def test_a_stream_that_breaks_ends_with_an_error_event():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(200, content=b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: {broken\n\n')

    events = asyncio.run(_run(_engine(handler), GenerationRequest("r1", HELLO)))
    assert events[0] == TextDelta("Hi")
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "error"
    assert events[-1].usage.completion_tokens == 1


def test_an_unreachable_upstream_opens_the_breaker_and_later_requests_fail_fast():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("connection refused")

    engine = _engine(handler, breaker=CircuitBreaker(failures=2, reset_s=60))

    async def scenario():
        await engine.start()
        assert not (await engine.health()).ready
        for _ in range(2):
            with pytest.raises(EngineUnavailable):
                await engine.submit(GenerationRequest("r", HELLO))
        sent = len(calls)
        with pytest.raises(EngineUnavailable) as info:
            await engine.submit(GenerationRequest("r", HELLO))
        await engine.close()
        return sent, info.value

    sent, error = asyncio.run(scenario())
    assert len(calls) == sent  # the open breaker sent nothing upstream
    assert 1 <= error.retry_after_s <= 60


def test_the_breaker_opens_after_consecutive_failures_and_probes_once_after_the_reset():
    now = [0.0]
    breaker = CircuitBreaker(failures=3, reset_s=10, clock=lambda: now[0])
    breaker.failure()
    breaker.success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()  # the probe failed: open again for a full reset period
    assert breaker.state == "open" and breaker.retry_after_s() == 10
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_the_source_url_selects_the_upstream_client_and_keeps_the_key_out_of_the_url():
    engine = open_engine("openai+http://127.0.0.1:8081/v1?model=smollm2&context=2048&timeout=30", api_key="s3cret")
    assert isinstance(engine, UpstreamEngine)
    assert (engine.base_url, engine.root_url) == ("http://127.0.0.1:8081/v1", "http://127.0.0.1:8081")
    assert (engine.model_id, engine.context_window) == ("smollm2", 2048)
    assert engine._client_args["headers"] == {"Authorization": "Bearer s3cret"}
    # without a tokenizer, prompts are estimated at 4 characters a token
    assert engine.count_text_tokens("x" * 40) == 10


def test_the_counting_tokenizer_counts_as_transformers_does_without_importing_torch(tmp_path):
    """The runtime in front of an engine counts prompts with tokenizer.json and the chat template alone."""
    import subprocess
    import sys

    from gpt_model.checkpoint import smollm2_dir
    from gpt_model.tokenizer import ChatTokenizer, CountingTokenizer, load_tokenizer

    path = smollm2_dir()
    reference, light = ChatTokenizer(load_tokenizer(path)), CountingTokenizer(path)
    conversations = [
        HELLO,
        (
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Héllo — wörld? 你好 🙂"),
            ChatMessage("assistant", "Hi!"),
        ),
        (ChatMessage("user", "<|im_start|> is a special token\n\n  with   spaces"),),
    ]
    for messages in conversations:
        assert light.chat_prompt(messages) == reference.chat_prompt(messages)
        assert light.encode_chat(messages) == reference.encode_chat(messages)
    assert light.encode("plain text, no template") == reference.encode("plain text, no template")

    probe = (
        "import sys; from gpt_model.upstream import load_counting_tokenizer; "
        f"t = load_counting_tokenizer('builtin:smollm2-135m', {str(path.parent)!r}); "
        "print(len(t.encode('hello world')), 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False", "False"]
