"""The runtime's metrics: stream timing, request counts, KV-cache usage, auth events, Redis errors, queue depth."""

from __future__ import annotations

import asyncio

import pytest
from gpt_model.engine_stats import EngineStats
from gpt_model.protocol import EngineHealth
from gpt_runtime.auth import WithApiKeys
from gpt_runtime.backends.memory import MemoryJobQueue
from gpt_runtime.backends.redis import CircuitBreaker
from gpt_runtime.backends.sqlite_queue import SQLiteJobQueue
from gpt_runtime.domain_errors import Unauthenticated
from gpt_runtime.metrics import AUTH_EVENTS, LastRequest, Metrics, StreamTimer
from gpt_runtime.metrics_server import serve_metrics
from gpt_runtime.scrape import RequestCounts, queue_depth, request_counts
from redis.exceptions import ConnectionError as RedisConnectionError

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_stream_timer_measures_first_token_gaps_and_end_from_arrival():
    clock = Clock()
    timer = StreamTimer(arrived=clock(), clock=clock)
    clock.now = 100.5
    assert timer.token() == ("ttft", 0.5)
    clock.now = 100.75
    assert timer.token() == ("itl", 0.25)
    clock.now = 101.0
    assert timer.token() == ("itl", 0.25)
    clock.now = 102.0
    assert timer.finished() == 2.0


def test_request_counts_add_our_admission_queue_to_a_builtin_engine():
    engine = EngineHealth(ready=True, model_id="m", queue_depth=3, running=4)
    assert request_counts(engine, gate_running=4, gate_waiting=2) == RequestCounts(running=4, waiting=5)
    # a separate engine keeps its own queue: we report only what our admission gate holds
    assert request_counts(EngineHealth(ready=True, model_id="m", running=1, separate=True), 6, 2) == RequestCounts(
        running=6, waiting=2
    )


def test_kv_cache_usage_is_the_fraction_of_the_budget():
    assert EngineStats(kv_cache_mb=256, kv_cache_budget_mb=1024).kv_cache_usage == 0.25
    assert EngineStats(kv_cache_mb=2048, kv_cache_budget_mb=1024).kv_cache_usage == 1.0
    assert EngineStats(kv_cache_mb=5).kv_cache_usage == 0.0  # no budget known: nothing to report


def test_auth_events_are_a_closed_set():
    metrics = Metrics()
    metrics.auth_event("login")
    with pytest.raises(ValueError):
        metrics.auth_event("someone@example.com")
    assert b'auth_events_total{event="login"} 1.0' in metrics.render()


def test_every_auth_event_series_exists_at_zero_before_its_first_occurrence():
    """rate() and increase() cannot see a counter's first sample: a series born at 1 hides the first failed login."""
    rendered = Metrics().render()
    for event in AUTH_EVENTS:
        assert f'auth_events_total{{event="{event}"}} 0.0'.encode() in rendered


def test_job_queue_depth_has_no_series_until_known():
    metrics = Metrics()
    assert not any(line.startswith(b"job_queue_depth ") for line in metrics.render().splitlines())
    metrics.set_job_queue_depth(3)
    assert b"job_queue_depth 3.0" in metrics.render().splitlines()
    metrics.set_job_queue_depth(None)
    assert not any(line.startswith(b"job_queue_depth ") for line in metrics.render().splitlines())


class FakeProvider:
    async def signup(self, email, password):
        return object()

    async def login(self, email, password):
        if password != "right":
            raise Unauthenticated("incorrect email or password", code="invalid_credentials")
        return object()

    async def authenticate(self, token):
        raise Unauthenticated("bad token", code="invalid_token")

    async def reset_password(self, token, new_password):
        return None


class FakeKeys:
    async def authenticate(self, key):
        raise Unauthenticated("API key is invalid or was revoked", code="invalid_api_key")


def test_with_api_keys_reports_each_auth_event():
    events: list[str] = []
    auth = WithApiKeys(FakeProvider(), FakeKeys(), events.append)  # type: ignore[arg-type]

    async def main() -> None:
        await auth.signup("a@example.com", "right")
        await auth.login("a@example.com", "right")
        for token in ("not-a-jwt", "sk-gpt-" + "0" * 40):
            with pytest.raises(Unauthenticated):
                await auth.authenticate(token)
        with pytest.raises(Unauthenticated):
            await auth.login("a@example.com", "wrong")
        await auth.reset_password("t", "new password")

    asyncio.run(main())
    assert events == ["signup", "login", "token_rejected", "api_key_rejected", "login_failed", "password_reset"]


def test_circuit_breaker_reports_failed_calls_not_skipped_ones():
    clock, failures = Clock(), []
    breaker = CircuitBreaker("cache", cooldown_s=5, clock=clock, on_error=failures.append)

    async def failing() -> str:
        raise RedisConnectionError("refused")

    async def fallback() -> str:
        return "fallback"

    async def main() -> list[str]:
        first = await breaker.call(failing, fallback)
        second = await breaker.call(failing, fallback)  # breaker open: Redis is not called
        clock.now += 5
        third = await breaker.call(failing, fallback)
        return [first, second, third]

    assert asyncio.run(main()) == ["fallback"] * 3
    assert failures == ["cache", "cache"]


def test_queue_depth_counts_waiting_messages_not_those_in_flight(tmp_path):
    async def main() -> tuple[int | None, ...]:
        depths = []
        for queue in (MemoryJobQueue(), SQLiteJobQueue(str(tmp_path / "q.db"))):
            for body in ("a", "b", "c"):
                await queue.enqueue(body)
            assert await queue.receive(0.1) is not None
            depths.append(await queue_depth(queue))
            await queue.close()
        return tuple(depths)

    assert asyncio.run(main()) == (2, 2)


def test_queue_depth_is_unknown_when_the_queue_is_slow_or_down():
    class Slow(MemoryJobQueue):
        async def depth(self) -> int:
            await asyncio.sleep(1)
            return 1

    class Down(MemoryJobQueue):
        async def depth(self) -> int:
            raise OSError("unreachable")

    async def main() -> tuple[int | None, int | None]:
        return await queue_depth(Slow(), timeout_s=0.05), await queue_depth(Down())

    assert asyncio.run(main()) == (None, None)


def test_metrics_listener_serves_only_get_metrics():
    async def main() -> tuple[bytes, bytes]:
        async def render() -> bytes:
            return b"up 1\n"

        server = await serve_metrics("127.0.0.1", 0, render)
        port = server.sockets[0].getsockname()[1]
        answers = []
        for path in ("/metrics", "/"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            answers.append(await reader.read())
            writer.close()
        server.close()
        await server.wait_closed()
        return answers[0], answers[1]

    metrics, other = asyncio.run(main())
    assert metrics.startswith(b"HTTP/1.1 200 OK") and metrics.endswith(b"\r\n\r\nup 1\n")
    assert b"text/plain; version=" in metrics
    assert other.startswith(b"HTTP/1.1 404")


def test_last_request_reads_now_while_a_request_is_in_flight():
    clock = Clock(100.0)
    last = LastRequest("help", initial=50.0, clock=clock)
    assert last.value() == 50.0  # the start, until the first request
    last.begin()
    clock.now = 130.0
    assert last.value() == 130.0  # a long stream is activity until it ends
    last.end()
    clock.now = 200.0
    assert last.value() == 130.0
    last.touch()  # one WebSocket message
    clock.now = 250.0
    assert last.value() == 200.0
    metrics = Metrics()
    metrics.last_request.last = 200.0
    assert b"gpt_last_request_timestamp_seconds 200.0" in metrics.render().splitlines()
