"""The official OpenAI Python SDK against the runtime: existing clients work with an access token as API key."""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server, token):
    with openai.OpenAI(api_key=token, base_url=f"{server.base_url}/v1", max_retries=0) as sdk:
        yield sdk


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["fake-echo"]


def test_chat_completion_with_history(client, api):
    completion = client.chat.completions.create(
        model="fake-echo",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "question"}]},
        ],
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "You said: second question"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 4 and completion.usage.prompt_tokens > 8
    assert api.get("/conversations").json()["items"] == []  # stateless: nothing stored


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="fake-echo",
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=3,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: stream "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 3


def test_sdk_sees_the_usual_errors(client, server):
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake-echo", messages=[{"role": "user", "content": "hi"}], n=2)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="fake-echo", messages=[])
    stranger = openai.OpenAI(api_key="not-a-token", base_url=f"{server.base_url}/v1", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.models.list()
