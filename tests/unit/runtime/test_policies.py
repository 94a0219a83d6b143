from __future__ import annotations

import asyncio

import pytest
from gpt_model.protocol import ChatMessage, SamplingParams
from gpt_runtime.domain_errors import Unavailable
from gpt_runtime.services.admission import AdmissionGate
from gpt_runtime.services.cache import fallback_key, response_key
from gpt_runtime.services.limits import Quota, quota_for, request_limit
from gpt_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.unit


def test_tier_limits_follow_the_settings():
    settings = RuntimeSettings()
    assert [request_limit(settings, r) for r in ("free", "premium", "admin")] == [60, 300, 0]
    assert quota_for(settings, "admin") == Quota(0, 0, 0, 0)
    custom = RuntimeSettings(quota_free="1,2,3,4")
    assert quota_for(custom, "free") == Quota(1, 2, 3, 4)
    with pytest.raises(ValueError, match="RPM,RPD,TPM,TPD"):
        Quota.parse("1,2,3")


def test_response_keys_cover_user_model_messages_and_every_parameter():
    messages = [ChatMessage("user", "hi")]
    base = response_key("m", messages, SamplingParams(temperature=0), user_id="ann")
    assert base == response_key("m", list(messages), SamplingParams(temperature=0), user_id="ann")
    assert base.startswith("resp:") and len(base) == 5 + 64
    variations = [
        response_key("other", messages, SamplingParams(temperature=0), user_id="ann"),
        response_key("m", [ChatMessage("user", "hi!")], SamplingParams(temperature=0), user_id="ann"),
        response_key("m", messages, SamplingParams(temperature=0, max_tokens=5), user_id="ann"),
        response_key("m", messages, SamplingParams(temperature=0, stop=("x",)), user_id="ann"),
        response_key("m", messages, SamplingParams(temperature=0), revision="v2", user_id="ann"),
        response_key("m", messages, SamplingParams(temperature=0), user_id="bob"),
    ]
    assert len({base, *variations}) == 7
    fallback = fallback_key("m", messages, user_id="ann")
    assert fallback == fallback_key("m", messages, user_id="ann") != fallback_key("m", [], user_id="ann")
    assert fallback != fallback_key("m", messages, user_id="bob")


def test_gate_serves_by_priority_then_arrival():
    async def main():
        gate = AdmissionGate(max_running=1, max_waiting=10)
        await gate.acquire("medium", 1)
        order: list[str] = []

        async def wait(name: str, priority: str) -> None:
            await gate.acquire(priority, 5)
            order.append(name)
            gate.release()

        tasks = []
        for name, priority in [("low1", "low"), ("med1", "medium"), ("crit", "critical"), ("med2", "medium")]:
            tasks.append(asyncio.create_task(wait(name, priority)))
            await asyncio.sleep(0)
        assert gate.waiting == 4
        gate.release()
        await asyncio.gather(*tasks)
        assert order == ["crit", "med1", "med2", "low1"]
        assert gate.running == 0

    asyncio.run(main())


def test_gate_is_bounded_and_times_out():
    async def main():
        gate = AdmissionGate(max_running=1, max_waiting=1)
        await gate.acquire("high", 1)
        waiter = asyncio.create_task(gate.acquire("high", 0.05))
        await asyncio.sleep(0)
        with pytest.raises(Unavailable) as full:
            await gate.acquire("critical", 1)
        assert full.value.code == "queue_full" and full.value.retry_after
        with pytest.raises(Unavailable) as late:
            await waiter
        assert late.value.code == "queue_timeout"
        gate.release()
        await gate.acquire("low", 0.01)  # the timed-out waiter did not keep a slot
        assert gate.running == 1

    asyncio.run(main())
