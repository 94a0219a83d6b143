"""Prometheus metrics of one app, in a registry of its own (several apps can live in one process).

The `vllm:*` series use vLLM's names, meanings and buckets (vllm/v1/metrics/loggers.py), so dashboards, alerts and
autoscalers written for vLLM read the built-in engine too. docs/metrics.md lists every series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# vLLM's buckets (vllm/v1/metrics/loggers.py, v0.11)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip

AUTH_EVENTS = ("signup", "login", "login_failed", "token_rejected", "api_key_rejected", "password_reset")


class StreamTimer:
    """The timing of one generation's stream, vLLM's way: TTFT from arrival to the first token, one inter-token
    gap per later token (a piece of text is one token as it arrives), e2e from arrival to finish."""

    def __init__(self, arrived: float, clock: Callable[[], float] = time.monotonic):
        self.arrived = arrived
        self.clock = clock
        self.last: float | None = None

    def token(self) -> tuple[str, float]:
        """A token arrived now: ("ttft", seconds since arrival) for the first, ("itl", the gap) for the others."""
        now = self.clock()
        kind, seconds = ("ttft", now - self.arrived) if self.last is None else ("itl", now - self.last)
        self.last = now
        return kind, seconds

    def finished(self) -> float:
        """Seconds from arrival to now (the end of the stream)."""
        return self.clock() - self.arrived


LAST_REQUEST = "gpt_last_request_timestamp_seconds"


class LastRequest(Collector):
    """`gpt_last_request_timestamp_seconds`: the Unix time of the last activity, read as now while any request is
    in flight (`begin` .. `end`), so a long stream counts until it ends. `touch` marks one moment of activity (a
    WebSocket message: an open but idle socket is no activity). The operator reads it to put idle deployments to
    sleep; the activator (gpt_runtime.activator) exports the same series."""

    def __init__(self, documentation: str, initial: float, clock: Callable[[], float] = time.time):
        self.documentation = documentation
        self.last = initial
        self.in_flight = 0
        self.clock = clock

    def touch(self) -> None:
        self.last = self.clock()

    def begin(self) -> None:
        self.in_flight += 1
        self.touch()

    def end(self) -> None:
        self.in_flight -= 1
        self.touch()

    def value(self) -> float:
        return self.clock() if self.in_flight > 0 else self.last

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(LAST_REQUEST, self.documentation, value=self.value())


class _JobQueueDepth(Collector):
    """`job_queue_depth`, only while the queue could say how many jobs wait (no series otherwise)."""

    def __init__(self) -> None:
        self.value: int | None = None

    def collect(self) -> Iterator[Metric]:
        if self.value is None:
            return
        family = GaugeMetricFamily("job_queue_depth", "Async jobs waiting in the job queue (read at scrape time).")
        family.add_metric([], self.value)
        yield family


@dataclass
class Metrics:
    """The runtime's metrics, named as docs/metrics.md lists them."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "api_requests_total",
            "HTTP requests served, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "api_request_duration_seconds",
            "HTTP request latency until the response starts (streams: until they end).",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.generation_tokens = Counter(
            "generation_tokens",
            "Tokens processed by generation, by kind (prompt or completion).",
            ["kind"],
            registry=self.registry,
        )
        self.generations = Counter(
            "generation_requests_total",
            "Generations finished, by transport and finish reason.",
            ["transport", "finish_reason"],
            registry=self.registry,
        )
        self.cache_hits = Counter("cache_hits", "Cache hits by kind.", ["kind"], registry=self.registry)
        self.cache_misses = Counter("cache_misses", "Cache misses by kind.", ["kind"], registry=self.registry)
        self.rate_limited = Counter(
            "rate_limit_exceeded", "Requests refused by a limit, by type.", ["type"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "generation_queue_depth", "Generations waiting for an engine slot.", registry=self.registry
        )
        self.running_generations = Gauge(
            "generation_running", "Generations holding an engine slot.", registry=self.registry
        )
        self.engine_waiting = Gauge(
            "engine_queue_depth", "Requests waiting inside the engine for a batch slot.", registry=self.registry
        )
        self.engine_running = Gauge("engine_running", "Requests in the engine's running batch.", registry=self.registry)
        self.jobs = Counter("jobs_total", "Async jobs by outcome.", ["outcome"], registry=self.registry)
        self.active_streams = Gauge("generation_active_streams", "Generations in flight.", registry=self.registry)
        self._vllm()
        self.auth_events = Counter(
            "auth_events", "Sign-ups, logins, refused credentials and password resets, by event.", ["event"],
            registry=self.registry,
        )  # fmt: skip
        for event in AUTH_EVENTS:  # every event's series starts at 0, so rate() sees its first occurrence
            self.auth_events.labels(event)
        self.redis_errors = Counter(
            "redis_errors",
            "Redis calls that failed (refused, timed out), by backend; the backend then degrades or raises.",
            ["backend"],
            registry=self.registry,
        )
        self._job_queue_depth = _JobQueueDepth()
        self.registry.register(self._job_queue_depth)
        self.last_request = LastRequest(
            "Unix time of the last API request this process received (health/readiness probes and /metrics"
            " excluded; now while one is in flight); the process start until the first one.",
            initial=time.time(),
        )
        self.registry.register(self.last_request)
        ProcessCollector(registry=self.registry)

    def _vllm(self) -> None:
        """vLLM's series, labelled with the served model's name."""
        labels = ["model_name"]
        self.vllm_running = Gauge(
            "vllm:num_requests_running",
            "Requests generating now (read at scrape time).",
            labels,
            registry=self.registry,
        )
        self.vllm_waiting = Gauge(
            "vllm:num_requests_waiting",
            "Requests waiting for a slot: the engine's queue and the runtime's admission queue (read at scrape time).",
            labels,
            registry=self.registry,
        )
        self.vllm_kv_cache = Gauge(
            "vllm:kv_cache_usage_perc",
            "Fraction of the KV-cache budget in use, 0..1 (0 when the engine cannot tell; read at scrape time).",
            labels,
            registry=self.registry,
        )
        self.vllm_ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time from a request's arrival to its first token.",
            labels,
            registry=self.registry,
            buckets=TTFT_BUCKETS,
        )
        self.vllm_itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Time between consecutive tokens of one stream.",
            labels,
            registry=self.registry,
            buckets=ITL_BUCKETS,
        )
        self.vllm_e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Time from a request's arrival to its end.",
            labels,
            registry=self.registry,
            buckets=E2E_BUCKETS,
        )
        self.vllm_prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt tokens processed by the engine.", labels, registry=self.registry
        )
        self.vllm_generation_tokens = Counter(
            "vllm:generation_tokens", "Tokens generated by the engine.", labels, registry=self.registry
        )

    def auth_event(self, event: str) -> None:
        """Count one auth event (one of AUTH_EVENTS; never a user's identity)."""
        if event not in AUTH_EVENTS:
            raise ValueError(f"unknown auth event {event!r}")
        self.auth_events.labels(event).inc()

    def redis_error(self, backend: str) -> None:
        """Count one failed Redis call of `backend` (cache, limits, queue)."""
        self.redis_errors.labels(backend).inc()

    def set_job_queue_depth(self, depth: int | None) -> None:
        """The jobs waiting in the queue; None removes the series (the queue cannot tell now)."""
        self._job_queue_depth.value = depth

    def tokens(self, model_name: str, prompt: int, completion: int) -> None:
        """Count an engine generation's tokens in both families (generation_tokens_total and vLLM's)."""
        self.generation_tokens.labels("prompt").inc(prompt)
        self.generation_tokens.labels("completion").inc(completion)
        self.vllm_prompt_tokens.labels(model_name).inc(prompt)
        self.vllm_generation_tokens.labels(model_name).inc(completion)

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)
