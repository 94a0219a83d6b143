"""The whole conversation API in front of a real llama.cpp server (`openai+http://` model source): REST, SSE,
WebSocket, async jobs and /v1 pass through it; cancelling frees its slot; its outages, silences and refusals
become our JSON errors (502/503), never a hang; /ready follows it."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time

import httpx
import pytest
from openai import OpenAI

from .conftest import free_port, start_runtime, stop_runtime
from .llamacpp import SERVED_NAME, start_llama_server
from .wsclient import sse_events, ws_connect, ws_frames_until_done

pytestmark = pytest.mark.integration
GENEROUS = {
    "GPT_RATE_LIMIT_FREE": "100000",
    "GPT_RATE_LIMIT_ANONYMOUS": "100000",
    "GPT_QUOTA_FREE": "0,0,0,0",
}
EOS_BANNED = {"0": -100, "2": -100}  # <|endoftext|> and <|im_end|>: the reply runs until max_tokens


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    server = start_llama_server(free_port(), secrets.token_urlsafe(24), tmp_path_factory.mktemp("llama") / "llama.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(llama, tmp_path_factory):
    runtime = start_runtime(
        tmp_path_factory.mktemp("front"), GPT_MODEL_SOURCE=llama.source(), GPT_ENGINE_API_KEY=llama.api_key, **GENEROUS
    )
    yield runtime
    stop_runtime(runtime)


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_v1_passes_llama_cpps_reply_and_usage_through_unchanged(front, llama):
    """Greedy, the same messages give the same text and token counts through us as from llama-server itself."""
    messages = [{"role": "user", "content": "Name three colours."}]
    with llama.client() as direct:
        upstream = direct.post(
            "/v1/chat/completions",
            json={"model": SERVED_NAME, "messages": messages, "temperature": 0, "max_tokens": 16},
        ).json()
    ours = OpenAI(base_url=f"{front.base_url}/v1", api_key=front.signup_and_login()).chat.completions.create(
        model=SERVED_NAME, messages=messages, temperature=0, max_tokens=16
    )
    assert ours.choices[0].message.content == upstream["choices"][0]["message"]["content"]
    assert ours.choices[0].message.content.strip()
    assert ours.usage.prompt_tokens == upstream["usage"]["prompt_tokens"]
    assert ours.usage.completion_tokens == upstream["usage"]["completion_tokens"]
    assert ours.model == SERVED_NAME


def test_rest_sse_websocket_and_jobs_converse_through_llama_cpp(front):
    token = front.signup_and_login()
    with front.client(token) as api:
        conversation_id = api.post("/conversations", json={"title": "via llama.cpp"}).json()["id"]
        rest = api.post(
            "/generate",
            json={"prompt": "What is the capital of France?", "conversation_id": conversation_id, "max_tokens": 24},
        )
        assert rest.status_code == 200, rest.text
        body = rest.json()
        assert body["content"].strip() and body["finish_reason"] in ("stop", "length")
        assert 0 < body["usage"]["completion_tokens"] <= 24 and body["usage"]["prompt_tokens"] > 5

        with api.stream(
            "POST",
            "/generate",
            json={"prompt": "And of Italy?", "conversation_id": conversation_id, "stream": True, "max_tokens": 24},
        ) as response:
            assert response.status_code == 200
            events = list(sse_events(response))
        chunks = [e for e in events if isinstance(e, dict) and e.get("choices")]
        sse_text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert events[-1] == "[DONE]" and len(chunks) >= 3 and sse_text.strip()  # token by token, not one block

        with ws_connect(front.ws_url, token) as ws:
            frame = {"type": "generate", "request_id": "w1", "conversation_id": conversation_id, "content": "Thanks!"}
            ws.send(json.dumps(frame))
            frames = ws_frames_until_done(ws, "w1", timeout=60)
        assert frames[-1]["type"] == "done", frames[-1]
        ws_text = "".join(f["content"] for f in frames if f["type"] == "delta")
        assert len([f for f in frames if f["type"] == "delta"]) >= 2 and ws_text.strip()

        job = api.post("/generate", json={"prompt": "One more fact?", "async": True, "max_tokens": 16}).json()
        done = wait_for(
            lambda: (j := api.get(f"/jobs/{job['job_id']}").json())["status"] in ("succeeded", "failed") and j,
            timeout=60,
        )
        assert done["status"] == "succeeded", done
        assert done["result"]["content"].strip() and done["result"]["usage"]["completion_tokens"] > 0

        stored = api.get(f"/conversations/{conversation_id}").json()["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant"] * 3
        assert [m["content"] for m in stored[1::2]] == [body["content"], sse_text, ws_text]


def slots_busy(llama) -> int:
    with llama.client() as direct:
        return sum(1 for slot in direct.get("/slots").json() if slot.get("is_processing"))


def test_a_client_that_leaves_frees_the_llama_cpp_slot_at_once(front, llama):
    """Closing the stream closes the upstream request: llama-server stops generating, far before max_tokens."""
    client = OpenAI(base_url=f"{front.base_url}/v1", api_key=front.signup_and_login(), max_retries=0)
    stream = client.chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "Count from one to one thousand in words."}],
        max_tokens=3000,
        logit_bias=EOS_BANNED,
        stream=True,
    )
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received >= 5:
            break
    assert slots_busy(llama) == 1  # still generating its 3000 tokens
    stream.close()
    wait_for(lambda: slots_busy(llama) == 0, timeout=5)


def test_the_engine_port_refuses_callers_without_the_key_and_a_wrong_key_is_a_502(llama, tmp_path):
    assert httpx.post(f"{llama.url}/v1/chat/completions", json={"messages": []}, timeout=10).status_code == 401
    assert httpx.get(f"{llama.url}/health", timeout=10).status_code == 200  # probes need no key
    runtime = start_runtime(tmp_path, GPT_MODEL_SOURCE=llama.source(), GPT_ENGINE_API_KEY="wrong", **GENEROUS)
    try:
        with runtime.client(runtime.signup_and_login()) as api:
            answer = api.post("/generate", json={"prompt": "hello"})
            assert answer.status_code == 502
            assert answer.json()["error"]["code"] == "upstream_error"
            assert "credentials" in answer.json()["error"]["message"]
            assert api.get("/conversations").json()["items"] == []  # nothing stored
    finally:
        stop_runtime(runtime)
    assert "wrong" not in runtime.logs()


def test_a_prompt_past_llama_cpps_context_is_a_400_before_the_call(front):
    with front.client(front.signup_and_login()) as api:
        answer = api.post("/generate", json={"prompt": "word " * 5000})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "context_length_exceeded"


def test_ready_follows_llama_cpp_and_an_outage_is_a_503_until_it_is_back(tmp_path):
    port, key = free_port(), secrets.token_urlsafe(24)
    llama = start_llama_server(port, key, tmp_path / "llama.log", parallel=1, ctx_size=2048)
    runtime = start_runtime(
        tmp_path / "rt",
        GPT_MODEL_SOURCE=llama.source(breaker_failures="2", breaker_reset_s="1"),
        GPT_ENGINE_API_KEY=key,
        **GENEROUS,
    )
    try:
        with runtime.client(runtime.signup_and_login()) as api:
            assert api.post("/generate", json={"prompt": "hi", "max_tokens": 4}).status_code == 200
            before = api.get("/conversations").json()["items"]
            llama.stop()
            ready = wait_for(lambda: (r := api.get("/ready")).status_code == 503 and r, timeout=5)
            assert ready.json()["checks"]["engine"] is False
            started = time.monotonic()
            for _ in range(3):  # refused, refused: then the breaker answers without trying
                down = api.post("/generate", json={"prompt": "hi", "max_tokens": 4})
                assert down.status_code == 503, down.text
                assert down.json()["error"]["code"] == "engine_unavailable"
                assert int(down.headers["retry-after"]) >= 1
            assert time.monotonic() - started < 5
            assert api.get("/conversations").json()["items"] == before  # nothing stored

            llama = start_llama_server(port, key, tmp_path / "llama2.log", parallel=1, ctx_size=2048)
            wait_for(lambda: api.get("/ready").status_code == 200, timeout=10)
            back = wait_for(
                lambda: (r := api.post("/generate", json={"prompt": "hi", "max_tokens": 4})).status_code == 200 and r,
                timeout=10,
            )
            assert back.json()["content"].strip()
    finally:
        stop_runtime(runtime)
        llama.stop()


def test_a_silent_upstream_times_out_into_a_503_not_a_hang(tmp_path):
    """A server that accepts connections and never answers (a hung engine)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    source = f"openai+http://127.0.0.1:{port}/v1?model=m&timeout=1"
    runtime = start_runtime(tmp_path, ready_path="/health", GPT_MODEL_SOURCE=source, **GENEROUS)
    try:
        with runtime.client(runtime.signup_and_login()) as api:
            started = time.monotonic()
            assert api.get("/ready").status_code == 503
            answer = api.post("/generate", json={"prompt": "hello"})
            elapsed = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "engine_unavailable"
            assert "ReadTimeout" in answer.json()["error"]["message"]
            assert elapsed < 6  # /ready's 2 s look + the 1 s timeout, not a hang
            assert api.get("/conversations").json()["items"] == []
    finally:
        stop_runtime(runtime)
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
