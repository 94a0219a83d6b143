"""What GET /metrics reads at scrape time: the engine's and admission's gauges, vLLM's, and the job queue's depth.

Gauges of state (queues, running batch, KV cache) are refreshed here, when Prometheus scrapes, not on every change;
histograms and counters are fed where things happen (services/generation.py, auth, backends).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gpt_model.protocol import EngineClient, EngineHealth

from gpt_runtime.backends import JobQueue
from gpt_runtime.metrics import Metrics
from gpt_runtime.services.admission import AdmissionGate

log = logging.getLogger("gpt_runtime.metrics")
QUEUE_DEPTH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class RequestCounts:
    """vLLM's num_requests_running and num_requests_waiting, as this runtime sees them."""

    running: int
    waiting: int


def request_counts(engine: EngineHealth, gate_running: int, gate_waiting: int) -> RequestCounts:
    """An engine of ours: its running batch, its waiting requests plus those waiting in our admission queue.
    A separate (upstream) engine: our own admission numbers (the engine's queue is its own /metrics' business)."""
    if engine.separate:
        return RequestCounts(gate_running, gate_waiting)
    return RequestCounts(engine.running, engine.queue_depth + gate_waiting)


async def queue_depth(queue: JobQueue, timeout_s: float = QUEUE_DEPTH_TIMEOUT_S) -> int | None:
    """The jobs waiting in `queue`, or None when it cannot tell within `timeout_s` (or at all)."""
    try:
        return await asyncio.wait_for(queue.depth(), timeout_s)
    except Exception as exc:  # a scrape never fails because the queue is slow or down
        log.debug("job queue depth unknown", extra={"error": type(exc).__name__})
        return None


async def refresh(metrics: Metrics, engine: EngineClient, gate: AdmissionGate, queue: JobQueue) -> None:
    """Set every scrape-time gauge."""
    health = await engine.health()
    metrics.engine_waiting.set(health.queue_depth)
    metrics.engine_running.set(health.running)
    counts = request_counts(health, gate.running, gate.waiting)
    model_name = engine.model_id
    for gauge, value in (
        (metrics.vllm_running, counts.running),
        (metrics.vllm_waiting, counts.waiting),
        (metrics.vllm_kv_cache, health.kv_cache_usage),
    ):
        gauge.clear()  # one series, for the model served now
        gauge.labels(model_name).set(value)
    metrics.set_job_queue_depth(await queue_depth(queue))
