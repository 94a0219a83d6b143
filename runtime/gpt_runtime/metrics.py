"""Prometheus metrics of one app, in a registry of its own (several apps can live in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


@dataclass
class Metrics:
    """The runtime's metrics, named as DESIGN.md lists them."""

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

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)
