"""The operator's metrics: what a GPTDeployment's status and reconciles show at GET /metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest
from gpt_operator.kube import ApiError
from gpt_operator.metrics import (
    PHASES,
    OperatorMetrics,
    analysis_failed,
    deployment_series,
    error_reason,
)
from gpt_operator.reconcile import desire
from gpt_operator.schedule import SleepState
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.unit
WEDNESDAY_NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
SATURDAY_NOON = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
MONDAY_8 = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
NS, NAME = "ml", "chat"


def body(spec: dict, status: dict | None = None, annotations: dict | None = None) -> dict:
    return {
        "metadata": {"name": NAME, "namespace": NS, "generation": 1, "annotations": annotations or {}},
        "spec": {"model": {"source": "builtin:tiny"}, **spec},
        "status": status or {},
    }


def status(phase: str, **conditions: tuple[str, str, str]) -> dict:
    """A status with `phase` and conditions given as type=(status, reason, lastTransitionTime)."""
    return {
        "phase": phase,
        "conditions": [
            {"type": kind, "status": s, "reason": reason, "message": "m", "lastTransitionTime": since}
            for kind, (s, reason, since) in conditions.items()
        ],
    }


def samples(metrics: OperatorMetrics) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, parsed back as Prometheus reads it."""
    text = metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: OperatorMetrics, metric: str, /, **labels: str) -> float | None:
    return samples(metrics).get((metric, frozenset(labels.items())))


def series_of(metrics: OperatorMetrics, metric: str, deployment: str = NAME) -> list[dict]:
    """The label sets of `metric`'s samples for one deployment."""
    found = samples(metrics)
    return [dict(labels) for (n, labels) in found if n == metric and ("name", deployment) in labels]


@pytest.mark.parametrize("phase", PHASES)
def test_the_current_phase_is_1_and_every_other_phase_0(phase: str) -> None:
    metrics = OperatorMetrics()
    metrics.observe(NS, NAME, status(phase))
    for other in PHASES:
        expected = 1.0 if other == phase else 0.0
        assert value(metrics, "gpt_operator_phase", namespace=NS, name=NAME, phase=other) == expected


def test_a_status_without_a_phase_sets_no_phase_to_1() -> None:
    metrics = OperatorMetrics()
    metrics.observe(NS, NAME, {})
    assert [value(metrics, "gpt_operator_phase", namespace=NS, name=NAME, phase=p) for p in PHASES] == [0.0] * 6


def test_degraded_carries_the_condition_reason_and_goes_when_it_recovers() -> None:
    metrics = OperatorMetrics()
    aborted = status("Degraded", Degraded=("True", "RolloutAborted", "2026-03-04T12:00:00Z"))
    metrics.observe(NS, NAME, aborted)
    assert series_of(metrics, "gpt_operator_degraded") == [{"namespace": NS, "name": NAME, "reason": "RolloutAborted"}]
    assert value(metrics, "gpt_operator_degraded", namespace=NS, name=NAME, reason="RolloutAborted") == 1.0

    metrics.observe(NS, NAME, status("Degraded", Degraded=("True", "ApplyFailed", "2026-03-04T12:01:00Z")))
    assert [s["reason"] for s in series_of(metrics, "gpt_operator_degraded")] == ["ApplyFailed"]

    metrics.observe(NS, NAME, status("Available", Degraded=("False", "AsExpected", "2026-03-04T12:02:00Z")))
    assert series_of(metrics, "gpt_operator_degraded") == []


def test_an_invalid_spec_is_degraded_with_reason_invalid_spec() -> None:
    d = desire(body({"replicas": -1}), [], WEDNESDAY_NOON)
    assert d.problems
    series = deployment_series(d.status, d.sleep)
    assert (series.phase, series.degraded_reason, series.sleeping) == ("Degraded", "InvalidSpec", False)


def test_a_rollout_in_progress_has_its_start_and_none_once_complete() -> None:
    first = desire(body({"environment": "staging", "replicas": 2}), [], WEDNESDAY_NOON)
    series = deployment_series(first.status, first.sleep)
    assert series.phase == "Pending"
    assert series.progressing_since == WEDNESDAY_NOON.timestamp()

    metrics = OperatorMetrics()
    metrics.observe(NS, NAME, first.status, first.sleep)
    name = "gpt_operator_progressing_since_timestamp_seconds"
    assert value(metrics, name, namespace=NS, name=NAME) == WEDNESDAY_NOON.timestamp()
    done = status("Available", Progressing=("False", "RolloutComplete", "2026-03-04T12:05:00Z"))
    metrics.observe(NS, NAME, done)
    assert series_of(metrics, name) == []


def test_a_sleeping_deployment_shows_its_next_wake_and_none_once_awake() -> None:
    spec = {"environment": "dev", "replicas": 3}
    awake = desire(body(spec), [], WEDNESDAY_NOON)
    asleep = desire(body(spec, status=awake.status), [], SATURDAY_NOON)
    assert asleep.status["phase"] == "Sleeping"
    metrics = OperatorMetrics()
    metrics.observe(NS, NAME, asleep.status, asleep.sleep)
    assert value(metrics, "gpt_operator_sleeping", namespace=NS, name=NAME) == 1.0
    assert value(metrics, "gpt_operator_phase", namespace=NS, name=NAME, phase="Sleeping") == 1.0
    assert value(metrics, "gpt_operator_wake_timestamp_seconds", namespace=NS, name=NAME) == MONDAY_8.timestamp()

    woke = desire(body(spec, status=asleep.status), [], MONDAY_8)
    metrics.observe(NS, NAME, woke.status, woke.sleep)
    assert value(metrics, "gpt_operator_sleeping", namespace=NS, name=NAME) == 0.0
    assert series_of(metrics, "gpt_operator_wake_timestamp_seconds") == []


def test_a_suspended_deployment_sleeps_with_no_scheduled_wake() -> None:
    d = desire(body({"environment": "prod", "suspend": True}), [], WEDNESDAY_NOON)
    series = deployment_series(d.status, d.sleep)
    assert series.sleeping and series.wake_at is None


def test_the_wake_comes_only_with_a_sleeping_condition() -> None:
    asleep = SleepState(True, "OffWindow", "asleep", MONDAY_8)
    sleeping = status("Sleeping", Sleeping=("True", "OffWindow", "2026-03-07T00:00:00Z"))
    assert deployment_series(sleeping, asleep).wake_at == MONDAY_8.timestamp()
    # a status that says awake (e.g. written by an invalid spec) has no wake, whatever the state passed
    assert deployment_series(status("Degraded"), asleep).wake_at is None


def test_deletion_removes_every_series_of_that_deployment_only() -> None:
    metrics = OperatorMetrics()
    degraded = status("Degraded", Degraded=("True", "RolloutAborted", "2026-03-04T12:00:00Z"))
    for name in ("chat", "other"):
        metrics.observe(NS, name, degraded, SleepState(False, "Awake", "", None))
        metrics.reconciled(NS, name, 0.1, at=1000.0)
        metrics.analysis_failed(NS, name)
    kinds = ("phase", "degraded", "analysis_failures_total", "sleeping", "last_successful_reconcile_timestamp_seconds")
    assert all(series_of(metrics, f"gpt_operator_{kind}", "chat") for kind in kinds)
    metrics.retain({(NS, "other")})  # chat is gone from the cache
    assert 'name="chat"' not in metrics.exposition().decode()
    assert all(series_of(metrics, f"gpt_operator_{kind}", "other") for kind in kinds)
    assert value(metrics, "gpt_operator_analysis_failures_total", namespace=NS, name="other") == 1.0
    metrics.forget(NS, "other")
    assert 'name="other"' not in metrics.exposition().decode()


def test_reconcile_counters_outcome_reason_duration_and_last_success() -> None:
    metrics = OperatorMetrics()
    assert value(metrics, "gpt_operator_reconcile_total", outcome="success") == 0.0  # a standby shows zeros
    assert value(metrics, "gpt_operator_reconcile_total", outcome="error") == 0.0
    metrics.reconciled(NS, NAME, 0.02, at=1234.5)
    metrics.reconciled(NS, NAME, 0.3, error="ApplyFailed")
    metrics.reconciled(NS, NAME, 0.3, error="a message that must not become a label")
    assert value(metrics, "gpt_operator_reconcile_total", outcome="success") == 1.0
    assert value(metrics, "gpt_operator_reconcile_total", outcome="error") == 2.0
    assert value(metrics, "gpt_operator_reconcile_errors_total", reason="ApplyFailed") == 1.0
    assert value(metrics, "gpt_operator_reconcile_errors_total", reason="Unexpected") == 1.0
    assert value(metrics, "gpt_operator_reconcile_duration_seconds_count") == 3.0
    assert value(metrics, "gpt_operator_reconcile_duration_seconds_bucket", le="0.025") == 1.0
    assert value(metrics, "gpt_operator_last_successful_reconcile_timestamp_seconds", namespace=NS, name=NAME) == 1234.5


def test_error_reasons_are_a_fixed_set() -> None:
    assert error_reason(ApiError(409, "conflict: secret text")) == "ApiError"
    assert error_reason(TimeoutError()) == "Timeout"
    assert error_reason(aiohttp.ClientConnectionError("x")) == "ConnectionError"
    assert error_reason(ValueError("anything")) == "Unexpected"


def test_an_analysis_run_counts_once_when_it_fails() -> None:
    running = {"analysis": {"revision": "r2", "phase": "Running"}}
    failed = {"analysis": {"revision": "r2", "phase": "Failed"}}
    assert analysis_failed(running, failed)
    assert analysis_failed({}, failed)
    assert not analysis_failed(failed, failed)  # the same failed run, seen again
    assert analysis_failed(failed, {"analysis": {"revision": "r3", "phase": "Failed"}})  # another revision's run
    assert not analysis_failed(running, running)
    assert not analysis_failed(failed, {})  # this reconcile wrote no analysis
