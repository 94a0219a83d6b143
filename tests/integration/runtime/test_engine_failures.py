"""An engine that fails half-way through a reply: every transport answers with an error, nothing half-made is
stored (no empty assistant message, no prompt without its reply, no empty conversation)."""

from __future__ import annotations

import json
import time

import pytest

from .conftest import start_runtime, stop_runtime
from .wsclient import sse_events, ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration
FAILING = "please BOOM now"  # the fake engine fails on replies that contain BOOM


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    runtime = start_runtime(
        tmp_path_factory.mktemp("failing"),
        GPT_MODEL_SOURCE="fake:echo?delay_ms=5&fail_on=BOOM",
        GPT_JOB_MAX_RECEIVES="2",
        GPT_QUOTA_FREE="1000,10000,10000000,100000000",
    )
    yield runtime
    stop_runtime(runtime)


@pytest.fixture
def api(failing):
    with failing.client(failing.signup_and_login()) as client:
        yield client


def _engine_error(body: dict) -> None:
    assert body["error"]["type"] == "api_error" and body["error"]["code"] == "engine_error", body


def _conversation_with_one_exchange(api) -> tuple[str, list]:
    conversation_id = api.post("/generate", json={"prompt": "first"}).json()["conversation_id"]
    return conversation_id, api.get(f"/conversations/{conversation_id}").json()["messages"]


def test_rest_answers_500_and_stores_nothing(api):
    response = api.post("/generate", json={"prompt": FAILING})
    assert response.status_code == 500, response.text
    _engine_error(response.json())
    assert api.get("/conversations").json()["items"] == []  # the conversation made for it is gone again
    conversation_id, before = _conversation_with_one_exchange(api)
    response = api.post("/generate", json={"prompt": FAILING, "conversation_id": conversation_id})
    assert response.status_code == 500
    assert api.get(f"/conversations/{conversation_id}").json()["messages"] == before
    assert api.post("/generate", json={"prompt": "fine again", "conversation_id": conversation_id}).status_code == 200


def test_sse_sends_an_error_event_and_stores_nothing(api):
    conversation_id, before = _conversation_with_one_exchange(api)
    request = {"prompt": FAILING, "conversation_id": conversation_id, "stream": True}
    with api.stream("POST", "/generate", json=request) as response:
        events = list(sse_events(response))
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and events[-1] == "[DONE]"
    _engine_error(errors[0])
    assert not any(e["choices"][0].get("finish_reason") for e in events if isinstance(e, dict) and e.get("choices"))
    assert api.get(f"/conversations/{conversation_id}").json()["messages"] == before
    with api.stream("POST", "/generate", json={"prompt": FAILING, "stream": True}) as response:
        list(sse_events(response))
    assert [c["id"] for c in api.get("/conversations").json()["items"]] == [conversation_id]


def test_websocket_sends_an_error_frame_and_stores_nothing(failing, api):
    conversation_id, before = _conversation_with_one_exchange(api)
    token = api.headers["authorization"].removeprefix("Bearer ")
    with ws_connect(failing.ws_url, token) as ws:
        frame = {"type": "generate", "request_id": "r1", "content": FAILING, "conversation_id": conversation_id}
        ws.send(json.dumps(frame))
        frames = ws_frames_until_done(ws, "r1")
    assert frames[-1]["type"] == "error" and frames[-1]["request_id"] == "r1"
    _engine_error(frames[-1])
    assert api.get(f"/conversations/{conversation_id}").json()["messages"] == before


def test_openai_route_answers_500_in_openai_shape(api):
    request = {"model": "fake-echo", "messages": [{"role": "user", "content": FAILING}]}
    response = api.post("/v1/chat/completions", json=request)
    assert response.status_code == 500, response.text
    _engine_error(response.json())
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    with api.stream("POST", "/v1/chat/completions", json=request | {"stream": True}) as response:
        events = list(sse_events(response))
    _engine_error(next(e for e in events if isinstance(e, dict) and "error" in e))


def test_a_failing_job_ends_failed_without_messages(api):
    conversation_id, before = _conversation_with_one_exchange(api)
    accepted = api.post("/generate", json={"prompt": FAILING, "async": True, "conversation_id": conversation_id})
    job_id = accepted.json()["job_id"]
    deadline = time.monotonic() + 30
    while (job := api.get(f"/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "failed" and job["result"] is None
    assert api.get(f"/conversations/{conversation_id}").json()["messages"] == before
