"""The response cache and the quota fallback are per user: one user's prompts never show in another's answers."""

from __future__ import annotations

import pytest

from .conftest import start_runtime, stop_runtime

pytestmark = pytest.mark.integration
TEN_WORDS = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    server = start_runtime(
        tmp_path_factory.mktemp("scoping"), GPT_QUOTA_FREE="1000,1000,40,1000000", GPT_RATE_LIMIT_ANONYMOUS="100000"
    )
    yield server
    stop_runtime(server)


def test_user_b_never_sees_a_cache_hit_for_user_as_prompt(runtime):
    request = {"prompt": "a private question", "temperature": 0}
    with runtime.client(runtime.signup_and_login()) as ann, runtime.client(runtime.signup_and_login()) as bob:
        assert ann.post("/generate", json=request).headers["x-cache"] == "MISS"
        assert ann.post("/generate", json=request).headers["x-cache"] == "HIT"  # still cached for its owner
        assert bob.post("/generate", json=request).headers["x-cache"] == "MISS"
        chat = {"model": "fake-echo", "messages": [{"role": "user", "content": "secret plan"}], "temperature": 0}
        assert ann.post("/v1/chat/completions", json=chat).headers["x-cache"] == "MISS"
        assert bob.post("/v1/chat/completions", json=chat).headers["x-cache"] == "MISS"


def test_the_quota_fallback_never_serves_another_users_answer(runtime):
    prompt = TEN_WORDS + " sampled answer"
    with runtime.client(runtime.signup_and_login()) as ann, runtime.client(runtime.signup_and_login()) as bob:
        assert ann.post("/generate", json={"prompt": prompt, "temperature": 0.9}).status_code == 200
        for i in range(2):  # 40 tokens a minute: spent
            bob.post("/generate", json={"prompt": TEN_WORDS + f" burn the quota {i}"})
        assert bob.post("/generate", json={"prompt": "never asked"}).status_code == 429
        refused = bob.post("/generate", json={"prompt": prompt, "temperature": 0.9})
        assert refused.status_code == 429 and "x-quota-fallback" not in refused.headers
