"""The operator's Prometheus metrics: reconcile counters for every replica, and per-GPTDeployment series
(phase, degraded reason, rollout start, sleep and wake) from the status the leader wrote.

Pure functions turn a status (and the sleep state of the same reconcile) into a DeploymentSeries;
OperatorMetrics owns the registry and sets, replaces and removes the labelled series. Label values are
names and fixed reasons only: never a message, never a secret. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gpt_operator.kube import ApiError
from gpt_operator.schedule import SleepState

PHASES = ("Pending", "Progressing", "Available", "Paused", "Sleeping", "Degraded")
# gpt_operator_reconcile_errors_total{reason}: a fixed set, so a failure cannot grow the label's values.
ERROR_REASONS = ("InvalidSpec", "ApplyFailed", "ApiError", "Timeout", "ConnectionError", "Unexpected")
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class DeploymentSeries:
    """What one GPTDeployment's status means as series; None: no series."""

    phase: str | None
    degraded_reason: str | None
    progressing_since: float | None  # epoch seconds
    sleeping: bool
    wake_at: float | None  # epoch seconds


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return {}


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def deployment_series(status: Mapping[str, Any] | None, sleep: SleepState | None = None) -> DeploymentSeries:
    """The per-deployment series of a status: the phase (one of PHASES, else none), the Degraded condition's
    reason while it is True, when the Progressing condition turned True (the rollout under way), whether the
    Sleeping condition is True, and then the next scheduled wake (from the reconcile's sleep state; none when
    only spec.suspend keeps it asleep)."""
    status = status or {}
    phase = status.get("phase") if status.get("phase") in PHASES else None
    degraded = _condition(status, "Degraded")
    reason = str(degraded.get("reason") or "Unknown") if degraded.get("status") == "True" else None
    progressing = _condition(status, "Progressing")
    since = _epoch(progressing.get("lastTransitionTime")) if progressing.get("status") == "True" else None
    sleeping = _condition(status, "Sleeping").get("status") == "True"
    wake = None
    if sleeping and sleep is not None and sleep.asleep and sleep.next_transition is not None:
        wake = sleep.next_transition.timestamp()
    return DeploymentSeries(phase, reason, since, sleeping, wake)


def analysis_failed(previous: Mapping[str, Any] | None, status: Mapping[str, Any]) -> bool:
    """Whether this reconcile's status records a canary analysis run that failed just now (its phase became
    Failed, or a run of another revision starts out Failed)."""
    run = status.get("analysis")
    if not isinstance(run, Mapping) or run.get("phase") != "Failed":
        return False
    before = (previous or {}).get("analysis")
    if not isinstance(before, Mapping):
        return True
    return before.get("phase") != "Failed" or before.get("revision") != run.get("revision")


def error_reason(exc: BaseException) -> str:
    """The errors_total reason of a failure that is not one of the operator's own (InvalidSpec, ApplyFailed)."""
    if isinstance(exc, ApiError):
        return "ApiError"
    if isinstance(exc, TimeoutError):
        return "Timeout"
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        return "ConnectionError"
    return "Unexpected"


class OperatorMetrics:
    """The registry served at GET /metrics, and the series in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, per = self.registry, ("namespace", "name")
        self.reconciles = Counter(
            "gpt_operator_reconcile_total", "Reconciles of a GPTDeployment, by outcome", ["outcome"], registry=r
        )
        self.errors = Counter(
            "gpt_operator_reconcile_errors_total", "Failed reconciles, by reason", ["reason"], registry=r
        )
        self.duration = Histogram(
            "gpt_operator_reconcile_duration_seconds",
            "How long one reconcile took",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.phase = Gauge(
            "gpt_operator_phase", "1 for the status.phase, 0 for the other phases", [*per, "phase"], registry=r
        )
        self.degraded = Gauge(
            "gpt_operator_degraded", "1 while condition Degraded is True, by its reason", [*per, "reason"], registry=r
        )
        self.analysis_failures = Counter(
            "gpt_operator_analysis_failures_total", "Canary analysis runs that failed", per, registry=r
        )
        self.progressing_since = Gauge(
            "gpt_operator_progressing_since_timestamp_seconds",
            "When the rollout under way started (condition Progressing turned True)",
            per,
            registry=r,
        )
        self.sleeping = Gauge("gpt_operator_sleeping", "1 while the GPTDeployment sleeps", per, registry=r)
        self.wake = Gauge(
            "gpt_operator_wake_timestamp_seconds", "The next scheduled wake while asleep", per, registry=r
        )
        self.last_success = Gauge(
            "gpt_operator_last_successful_reconcile_timestamp_seconds",
            "When a reconcile of the GPTDeployment last succeeded",
            per,
            registry=r,
        )
        self._per_deployment = (
            self.phase,
            self.degraded,
            self.analysis_failures,
            self.progressing_since,
            self.sleeping,
            self.wake,
            self.last_success,
        )
        self._known: set[tuple[str, str]] = set()
        for outcome in ("success", "error"):  # both exist from the start, on the standby too
            self.reconciles.labels(outcome=outcome)

    def reconciled(
        self, namespace: str, name: str, seconds: float, *, error: str | None = None, at: float | None = None
    ) -> None:
        """Count one reconcile; `error` is its reason (one of ERROR_REASONS) when it failed, `at` the wall
        clock (epoch seconds) when it succeeded."""
        self.duration.observe(seconds)
        if error is None:
            self.reconciles.labels(outcome="success").inc()
            if at is not None:
                self._known.add((namespace, name))
                self.last_success.labels(namespace=namespace, name=name).set(at)
        else:
            self.reconciles.labels(outcome="error").inc()
            self.errors.labels(reason=error if error in ERROR_REASONS else "Unexpected").inc()

    def observe(
        self, namespace: str, name: str, status: Mapping[str, Any] | None, sleep: SleepState | None = None
    ) -> None:
        """Set the deployment's series from the status just written (see deployment_series)."""
        series = deployment_series(status, sleep)
        key = {"namespace": namespace, "name": name}
        self._known.add((namespace, name))
        for phase in PHASES:
            self.phase.labels(**key, phase=phase).set(1 if phase == series.phase else 0)
        self.degraded.remove_by_labels(key)
        if series.degraded_reason is not None:
            self.degraded.labels(**key, reason=series.degraded_reason).set(1)
        self._set_or_remove(self.progressing_since, key, series.progressing_since)
        self.sleeping.labels(**key).set(1 if series.sleeping else 0)
        self._set_or_remove(self.wake, key, series.wake_at)
        self.analysis_failures.labels(**key)  # 0 until a run fails

    def analysis_failed(self, namespace: str, name: str) -> None:
        self.analysis_failures.labels(namespace=namespace, name=name).inc()

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a GPTDeployment (it was deleted)."""
        key = {"namespace": namespace, "name": name}
        for metric in self._per_deployment:
            metric.remove_by_labels(key)
        self._known.discard((namespace, name))

    def retain(self, live: Iterable[tuple[str, str]]) -> None:
        """Forget every GPTDeployment not in `live` (namespace, name): those deleted since the last look."""
        for namespace, name in self._known - set(live):
            self.forget(namespace, name)

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)

    @staticmethod
    def _set_or_remove(gauge: Gauge, key: dict[str, str], value: float | None) -> None:
        if value is None:
            gauge.remove_by_labels(key)
        else:
            gauge.labels(**key).set(value)
