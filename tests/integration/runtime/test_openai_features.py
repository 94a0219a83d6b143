"""OpenAI's request fields through the official SDK against a real runtime: what is honoured works
(JSON output by constrained decoding, logprobs, logit_bias, penalties, /v1/completions), and what is
not is refused with a 400 that names the field."""

from __future__ import annotations

import json
from collections import Counter

import jsonschema
import openai
import pytest
from gpt_model.tokenizer import ChatTokenizer, byte_level_tokenizer

from .conftest import start_runtime, stop_runtime

pytestmark = pytest.mark.integration

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "height": {"type": "number"},
        "pets": {"type": "array", "items": {"type": "string", "enum": ["cat", "dog"]}},
        "admin": {"type": ["boolean", "null"]},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
PROMPTS = ["Describe a person as JSON.", "{", "Say hello", "", "1 2 3 4", "Ünïcödé ✓"]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    """The runtime on builtin:tiny, a random model: only constrained decoding makes it write JSON."""
    runtime = start_runtime(
        tmp_path_factory.mktemp("tiny-openai"),
        GPT_MODEL_SOURCE="builtin:tiny",
        GPT_RATE_LIMIT_ANONYMOUS="100000",
        GPT_QUOTA_FREE="1000,10000,10000000,100000000",
    )
    yield runtime
    stop_runtime(runtime)


@pytest.fixture(scope="module")
def tiny(tiny_server):
    with openai.OpenAI(
        api_key=tiny_server.signup_and_login(), base_url=f"{tiny_server.base_url}/v1", max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
def fake(server, token):
    with openai.OpenAI(api_key=token, base_url=f"{server.base_url}/v1", max_retries=0) as sdk:
        yield sdk


def tiny_model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_json_object_mode_gives_json_that_parses_even_from_random_weights(tiny, temperature):
    model = tiny_model(tiny)
    for i, prompt in enumerate(PROMPTS):
        completion = tiny.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            response_format={"type": "json_object"},
            temperature=temperature,
            seed=i,
            max_tokens=10 + 15 * i,
        )
        content = completion.choices[0].message.content
        assert isinstance(json.loads(content), dict), content
        assert completion.usage.completion_tokens <= 10 + 15 * i


def test_json_schema_output_validates_against_the_schema(tiny):
    model = tiny_model(tiny)
    for i, prompt in enumerate(PROMPTS):
        completion = tiny.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON, "strict": True},
            },
            temperature=1.0,
            seed=i,
            max_tokens=[30, 45, 90][i % 3],
        )
        jsonschema.validate(json.loads(completion.choices[0].message.content), PERSON)


def test_json_output_streams_too(tiny):
    stream = tiny.chat.completions.create(
        model=tiny_model(tiny),
        messages=[{"role": "user", "content": "stream JSON"}],
        response_format={"type": "json_object"},
        stream=True,
        max_tokens=50,
        temperature=0.7,
        seed=5,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert isinstance(json.loads(text), dict)


def test_logprobs_come_back_for_every_token_and_are_at_most_zero(tiny):
    completion = tiny.chat.completions.create(
        model=tiny_model(tiny),
        messages=[{"role": "user", "content": "logprobs please"}],
        logprobs=True,
        top_logprobs=2,
        max_tokens=12,
        temperature=0,
    )
    entries = completion.choices[0].logprobs.content
    assert len(entries) == completion.usage.completion_tokens == 12
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 2 and all(t.logprob <= 0 for t in entry.top_logprobs)
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)  # greedy takes the likeliest
    assert bytes(b for e in entries for b in e.bytes).decode(errors="replace") == completion.choices[0].message.content

    stream = tiny.chat.completions.create(
        model=tiny_model(tiny),
        messages=[{"role": "user", "content": "logprobs please"}],
        logprobs=True,
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in entries])


def _token_bytes(client: openai.OpenAI, **kwargs) -> list[bytes]:
    completion = client.chat.completions.create(
        model=tiny_model(client), messages=[{"role": "user", "content": "ban"}], logprobs=True, **kwargs
    )
    return [bytes(e.bytes) for e in completion.choices[0].logprobs.content]


def test_a_logit_bias_of_minus_100_bans_a_token(tiny):
    tokens = _token_bytes(tiny, max_tokens=30, temperature=0)
    favourite = Counter(t for t in tokens if len(t) == 1 and t[0] < 128).most_common(1)[0][0]
    token_id = ChatTokenizer(byte_level_tokenizer()).encode(favourite.decode())[0]  # builtin:tiny's tokenizer
    for temperature in (0, 1.5):
        banned = _token_bytes(tiny, max_tokens=30, temperature=temperature, seed=1, logit_bias={str(token_id): -100})
        assert banned and favourite not in banned
    with pytest.raises(openai.BadRequestError) as outside:
        _token_bytes(tiny, max_tokens=3, logit_bias={"99999999": 5})
    assert outside.value.param == "logit_bias"


def test_presence_and_frequency_penalties_change_what_is_generated(tiny):
    base = Counter(_token_bytes(tiny, max_tokens=40, temperature=0)).most_common(1)[0][1]
    assert base > 5  # random weights, greedy: a few tokens over and over
    assert Counter(_token_bytes(tiny, max_tokens=40, temperature=0, frequency_penalty=2)).most_common(1)[0][1] < base
    assert Counter(_token_bytes(tiny, max_tokens=40, temperature=0, presence_penalty=2)).most_common(1)[0][1] < base


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"extra_body": {"frobnicate": True}}, "frobnicate"),
        ({"n": 2}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "string"}}}},
            "response_format",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "s",
                        "schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}},
                    },
                }
            },
            "response_format",
        ),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "call_1"}]}, "messages[0].role"),
        ({"messages": [{"role": "function", "content": "42", "name": "f"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "messages[0].tool_calls",
        ),
    ],
)
def test_what_is_not_supported_is_a_400_naming_the_parameter(fake, kwargs, param):
    kwargs = {"messages": [{"role": "user", "content": "hi"}]} | kwargs
    with pytest.raises(openai.BadRequestError) as refused:
        fake.chat.completions.create(model="fake-echo", **kwargs)
    assert refused.value.param == param
    assert refused.value.type == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in refused.value.message or refused.value.code == "unknown_parameter"


def test_harmless_fields_are_accepted(fake):
    completion = fake.chat.completions.create(
        model="fake-echo",
        messages=[{"role": "user", "content": "hi", "name": "ann"}],
        user="u-1",
        metadata={"k": "v"},
        store=False,
        parallel_tool_calls=True,
        modalities=["text"],
        response_format={"type": "text"},
    )
    assert completion.choices[0].message.content == "You said: hi"


def test_text_completions_with_and_without_streaming(fake):
    completion = fake.completions.create(model="fake-echo", prompt="Once upon a time", max_tokens=50, temperature=0)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "You said: Once upon a time"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 4 and completion.usage.completion_tokens == 6

    listed = fake.completions.create(model="fake-echo", prompt=["Once upon a time"], max_tokens=50)
    assert listed.choices[0].text == completion.choices[0].text

    stream = fake.completions.create(
        model="fake-echo", prompt="Once upon a time", max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "You said: Once "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 3

    default = fake.completions.create(model="fake-echo", prompt=" ".join(["w"] * 40))
    assert default.usage.completion_tokens == 16  # OpenAI's default max_tokens for text completions


def test_several_prompts_give_one_choice_each(fake):
    prompts = ["first prompt", "second one here", "third"]
    completion = fake.completions.create(model="fake-echo", prompt=prompts, max_tokens=50)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert [c.text for c in completion.choices] == [f"You said: {p}" for p in prompts]
    assert completion.usage.prompt_tokens == 2 + 3 + 1
    assert completion.usage.completion_tokens == sum(2 + len(p.split()) for p in prompts)
    stream = fake.completions.create(
        model="fake-echo", prompt=prompts, max_tokens=50, stream=True, stream_options={"include_usage": True}
    )
    texts = ["", "", ""]
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in completion.choices]
    assert chunks[-1].usage.total_tokens == completion.usage.total_tokens


def test_text_completions_continue_the_raw_prompt_with_logprobs(tiny):
    model = tiny_model(tiny)
    completion = tiny.completions.create(model=model, prompt="Once upon", max_tokens=8, temperature=0, logprobs=3)
    assert completion.usage.prompt_tokens == len("Once upon")  # byte-level: no chat template around it
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == completion.usage.completion_tokens
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    assert all(len(top) <= 3 for top in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == len("Once upon")
    streamed = tiny.completions.create(model=model, prompt="Once upon", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"prompt": ["p"] * 17}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"n": 2}, "n"),
        ({"prompt": "w " * 400}, "prompt"),  # longer than the 300-token context window
    ],
)
def test_text_completions_refuse_what_they_cannot_do(fake, kwargs, param):
    with pytest.raises(openai.BadRequestError) as refused:
        fake.completions.create(model="fake-echo", **({"prompt": "hi"} | kwargs))
    assert refused.value.param == param


def test_text_completions_need_the_same_credentials(server):
    with (
        openai.OpenAI(api_key="not-a-token", base_url=f"{server.base_url}/v1", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError),
    ):
        stranger.completions.create(model="fake-echo", prompt="hi")


def test_text_completions_count_against_the_same_quota_as_chat(tmp_path):
    runtime = start_runtime(tmp_path, GPT_QUOTA_FREE="3,1000,100000,1000000", GPT_RATE_LIMIT_ANONYMOUS="100000")
    try:
        with openai.OpenAI(
            api_key=runtime.signup_and_login(), base_url=f"{runtime.base_url}/v1", max_retries=0
        ) as client:
            client.chat.completions.create(model="fake-echo", messages=[{"role": "user", "content": "one"}])
            client.completions.create(model="fake-echo", prompt="two")
            client.completions.create(model="fake-echo", prompt="three")
            with pytest.raises(openai.RateLimitError):
                client.completions.create(model="fake-echo", prompt="four")
    finally:
        stop_runtime(runtime)
