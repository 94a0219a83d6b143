"""Canary analysis: when it is due, how answers are judged, and what a failure does to the rollout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gpt_operator.prometheus import _value
from gpt_operator.reconcile import analysis_request, desire
from gpt_operator.rollout.analysis import Measurement, due, failure_message, queries
from gpt_operator.spec import parse_spec

pytestmark = pytest.mark.unit
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
ANALYSIS = {
    "prometheusURL": "http://prometheus:9090",
    "intervalSeconds": 60,
    "metrics": [
        {
            "name": "error-rate",
            "query": 'rate(errors{deployment="{{name}}",namespace="{{namespace}}"}[2m])',
            "max": 0.05,
        },
        {"name": "p95", "query": "p95_seconds", "max": 2.0},
    ],
}


def canary_spec(source: str = "builtin:v2") -> dict:
    return {
        "environment": "staging",
        "replicas": 4,
        "model": {"source": source},
        "rollout": {"strategy": "Canary", "canary": {"analysis": ANALYSIS}},
    }


def test_queries_fill_in_name_and_namespace() -> None:
    spec = parse_spec(canary_spec())
    assert spec.rollout.canary.analysis is not None
    rendered = queries(spec.rollout.canary.analysis, "chat", "ml")
    assert rendered["error-rate"] == 'rate(errors{deployment="chat",namespace="ml"}[2m])'
    assert rendered["p95"] == "p95_seconds"


def test_analysis_is_due_only_while_a_new_revision_is_in_canary() -> None:
    spec = parse_spec(canary_spec())
    new = spec.revision
    assert not due(spec, {}, NOON)  # first deployment: nothing to compare
    assert not due(spec, {"stableRevision": new}, NOON)  # steady
    assert not due(spec, {"stableRevision": "old", "abortedRevision": new}, NOON)
    assert due(spec, {"stableRevision": "old"}, NOON)
    measured = {"stableRevision": "old", "analysis": {"time": "2026-03-04T12:00:00Z", "revision": new}}
    assert not due(spec, measured, NOON + timedelta(seconds=59))
    assert due(spec, measured, NOON + timedelta(seconds=60))
    older = {"stableRevision": "old", "analysis": {"time": "2026-03-04T12:00:00Z", "revision": "other"}}
    assert due(spec, older, NOON)


def test_no_analysis_for_other_strategies() -> None:
    raw = canary_spec()
    raw["rollout"]["strategy"] = "BlueGreen"
    assert not due(parse_spec(raw), {"stableRevision": "old"}, NOON)


def test_only_values_above_max_fail() -> None:
    assert Measurement("e", 0.05, value=0.06).failed
    assert not Measurement("e", 0.05, value=0.05).failed
    assert not Measurement("e", 0.05).failed  # no data: inconclusive
    assert not Measurement("e", 0.05, error="timeout").failed
    assert failure_message([Measurement("e", 0.05, value=0.2), Measurement("p", 2.0, value=1.0)]) == "e = 0.2 > 0.05"
    assert failure_message([Measurement("p", 2.0, value=1.0)]) is None


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}},
            0.25,
        ),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, 3.0),
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, None),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}}, None),
    ],
)
def test_prometheus_instant_query_values(payload: dict, value: float | None) -> None:
    assert _value(payload) == value


def body(spec: dict, status: dict | None = None) -> dict:
    return {"metadata": {"name": "chat", "namespace": "ml", "generation": 2}, "spec": spec, "status": status or {}}


def running_canary() -> tuple[dict, dict, list[dict]]:
    """A canary of builtin:v2 over a stable builtin:v1, with ready Deployments."""
    v1 = canary_spec("builtin:v1")
    first = desire(body(v1), [], NOON)
    assert first.objects is not None
    ready = [
        {
            **o,
            "metadata": {**o["metadata"], "generation": 1},
            "status": {"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n},
        }
        for o in first.objects
        if o["kind"] == "Deployment"
        for n in [o["spec"]["replicas"]]
    ]
    steady = desire(body(v1, first.status), ready, NOON)
    return canary_spec("builtin:v2"), steady.status, ready


def test_analysis_request_is_made_for_a_running_canary() -> None:
    spec, status, _ = running_canary()
    request = analysis_request(body(spec, status), NOON)
    assert request is not None
    assert set(request[1]) == {"error-rate", "p95"}
    assert analysis_request(body(canary_spec("builtin:v1"), status), NOON) is None  # nothing new to check


def test_failed_analysis_aborts_the_canary() -> None:
    spec, status, cluster = running_canary()
    measured = [Measurement("error-rate", 0.05, value=0.2), Measurement("p95", 2.0, value=0.8)]
    d = desire(body(spec, status), cluster, NOON, measured)
    assert d.objects is not None
    assert [o["metadata"]["name"] for o in d.objects if o["kind"] == "Deployment"] == ["chat-stable"]
    assert d.status["phase"] == "Degraded"
    assert d.status["abortedRevision"] == parse_spec(spec).revision
    assert d.status["analysis"]["results"][0] == {"name": "error-rate", "max": 0.05, "passed": False, "value": 0.2}
    assert d.events[0].reason == "AnalysisFailed" and d.events[0].message == "error-rate = 0.2 > 0.05"
    assert d.consumed_annotations == []  # no abort annotation to remove


def test_passing_or_inconclusive_analysis_lets_the_canary_go_on() -> None:
    spec, status, cluster = running_canary()
    measured = [Measurement("error-rate", 0.05, value=0.01), Measurement("p95", 2.0, error="HTTP 503")]
    d = desire(body(spec, status), cluster, NOON, measured)
    assert d.objects is not None
    assert "chat-canary" in [o["metadata"]["name"] for o in d.objects if o["kind"] == "Deployment"]
    assert d.status["phase"] != "Degraded"
    assert d.status["analysis"]["time"] == "2026-03-04T12:00:00Z"
    assert [e.reason for e in d.events] == ["AnalysisError"]
