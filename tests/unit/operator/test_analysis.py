"""Canary analysis like Argo Rollouts: when it is due, how answers are judged, how measurements add up
(failureLimit, inconclusiveLimit, count), and what the result does to the rollout."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpt_operator.naming import PROMOTE_ANNOTATION
from gpt_operator.prometheus import _value
from gpt_operator.reconcile import Desired, analysis_request, desire
from gpt_operator.rollout.analysis import HISTORY, Measurement, due, due_metrics, judge, queries
from gpt_operator.schema import crd_version_schema, validation_problems
from gpt_operator.spec import AnalysisMetric, parse_spec
from gpt_operator.success_condition import ConditionError, parse_condition
from pydantic import ValidationError

pytestmark = pytest.mark.unit
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[3]
SCHEMA = crd_version_schema(yaml.safe_load((ROOT / "crds" / "gptdeployments.yaml").read_text()), "v1alpha1")
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


def canary_spec(source: str = "builtin:v2", analysis: dict | None = None) -> dict:
    return {
        "environment": "staging",
        "replicas": 4,
        "model": {"source": source},
        "rollout": {"strategy": "Canary", "canary": {"analysis": analysis or ANALYSIS}},
    }


def one_metric(**fields: Any) -> dict:
    """An analysis of a single metric `m` measured every 5 s."""
    metric = {"name": "m", "query": "q", **fields}
    if "max" not in metric and "successCondition" not in metric:
        metric["max"] = 0.05
    return {"prometheusURL": "http://prometheus:9090", "intervalSeconds": 5, "metrics": [metric]}


# ---------------------------------------------------------------- success conditions


@pytest.mark.parametrize(
    ("text", "value", "passed"),
    [
        ("result < 0.05", 0.01, True),
        ("result < 0.05", 0.05, False),
        ("result >= 0.99", 0.995, True),
        ("result >= 0.99", 0.5, False),
        ("result[0] > 0 && result[0] <= 2.5", 2.5, True),
        ("result > 0 and result <= 2.5", 0, False),
        ("not (result > 1 or result < -1)", -0.5, True),
        ("!(result >= 2) || result == 7", 7, True),
        ("-1e-3 < result", 0, True),
        ("0.5 != result", 0.5, False),
    ],
)
def test_success_conditions(text: str, value: float, passed: bool) -> None:
    assert parse_condition(text)(value) is passed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("result", "ends too early"),
        ("1 < 2", "never looks at `result`"),
        ("__import__('os').system('id')", "unexpected"),
        ("result.__class__ < 1", "unexpected"),
        ("result < 0.05; result", "unexpected"),
        ("result < x", "expected `result` or a number"),
        ("result + 1 < 2", "expected a comparison"),
        ("result < inf", "not a finite number"),
        ("result < 1e999", "not a finite number"),
        ("result < 1)", "after a complete condition"),
        ("(" * 20 + "result < 1" + ")" * 20, "nests more than"),
        ("result < 1 or " * 30 + "result < 1", "at most 256 characters"),
    ],
)
def test_anything_else_is_refused_never_evaluated(text: str, reason: str) -> None:
    with pytest.raises(ConditionError, match=reason):
        parse_condition(text)


# ---------------------------------------------------------------- the spec and the CRD


def test_defaults_keep_existing_specs_as_they_were() -> None:
    metric = parse_spec(canary_spec()).rollout.canary.analysis.metrics[0]  # type: ignore[union-attr]
    assert metric.failure_limit == 0  # the first failed measurement aborts, as before
    assert metric.inconclusive_limit is None  # no data never pauses, as before
    assert metric.count is None and metric.interval_seconds is None and metric.success_condition is None


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"max": 1, "successCondition": "result < 1"}, "exactly one of max or successCondition"),
        ({"successCondition": "result <"}, "ends too early"),
        ({"successCondition": "os.system('x')"}, "unexpected"),
        ({"failureLimit": -1}, "greater than or equal to 0"),
        ({"count": 0}, "greater than or equal to 1"),
        ({"intervalSeconds": 1}, "greater than or equal to 5"),
    ],
)
def test_bad_metrics_are_refused_by_the_operator(fields: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        parse_spec(canary_spec(analysis=one_metric(**fields)))
    with pytest.raises(ValidationError):
        AnalysisMetric.model_validate({"name": "m", "query": "q"})  # neither max nor successCondition


def test_the_crd_schema_knows_the_new_fields() -> None:
    good = one_metric(
        successCondition="result[0] >= 0.99 && result[0] <= 1",
        intervalSeconds=30,
        count=10,
        failureLimit=2,
        inconclusiveLimit=3,
    )
    assert validation_problems({"spec": canary_spec(analysis=good)}, SCHEMA) == []
    for fields, fragment in [
        ({"successCondition": "__import__('os')"}, "does not match"),
        ({"failureLimit": -1}, "below the minimum"),
        ({"count": 0}, "below the minimum"),
        ({"inconclusiveLimit": "3"}, "must be integer"),
        ({"successCondition": "result < 1 or " * 30}, "longer than 256"),
    ]:
        problems = validation_problems({"spec": canary_spec(analysis=one_metric(**fields))}, SCHEMA)
        assert any(fragment in p for p in problems), (fields, problems)
    metrics = SCHEMA["properties"]["spec"]["properties"]["rollout"]["properties"]["canary"]["properties"]["analysis"][
        "properties"
    ]["metrics"]
    assert "has(self.max) != has(self.successCondition)" in [
        r["rule"] for r in metrics["items"]["x-kubernetes-validations"]
    ]
    assert metrics["items"]["required"] == ["name", "query"]


# ---------------------------------------------------------------- queries, due, judging


def test_queries_fill_in_name_and_namespace() -> None:
    spec = parse_spec(canary_spec())
    assert spec.rollout.canary.analysis is not None
    rendered = queries(spec.rollout.canary.analysis, "chat", "ml")
    assert rendered["error-rate"] == 'rate(errors{deployment="chat",namespace="ml"}[2m])'
    assert rendered["p95"] == "p95_seconds"
    assert list(queries(spec.rollout.canary.analysis, "chat", "ml", ["p95"])) == ["p95"]


def test_analysis_is_due_only_while_a_new_revision_is_in_canary() -> None:
    spec = parse_spec(canary_spec())
    new = spec.revision
    assert not due(spec, {}, NOON)  # first deployment: nothing to compare
    assert not due(spec, {"stableRevision": new}, NOON)  # steady
    assert not due(spec, {"stableRevision": "old", "abortedRevision": new}, NOON)
    assert due(spec, {"stableRevision": "old"}, NOON)
    # a status written by an earlier version of the operator: one time for the whole run
    measured = {"stableRevision": "old", "analysis": {"time": "2026-03-04T12:00:00Z", "revision": new}}
    assert not due(spec, measured, NOON + timedelta(seconds=59))
    assert due(spec, measured, NOON + timedelta(seconds=60))
    older = {"stableRevision": "old", "analysis": {"time": "2026-03-04T12:00:00Z", "revision": "other"}}
    assert due(spec, older, NOON)


def test_each_metric_keeps_its_own_interval() -> None:
    analysis = copy.deepcopy(ANALYSIS)
    analysis["metrics"][1]["intervalSeconds"] = 300
    spec = parse_spec(canary_spec(analysis=analysis))
    run = {
        "revision": spec.revision,
        "phase": "Running",
        "metrics": [
            {"name": "error-rate", "phase": "Running", "lastTime": "2026-03-04T12:00:00Z"},
            {"name": "p95", "phase": "Running", "lastTime": "2026-03-04T12:00:00Z"},
        ],
    }
    status = {"stableRevision": "old", "analysis": run}
    assert due_metrics(spec, status, NOON + timedelta(seconds=59)) == []
    assert due_metrics(spec, status, NOON + timedelta(seconds=60)) == ["error-rate"]
    assert due_metrics(spec, status, NOON + timedelta(seconds=300)) == ["error-rate", "p95"]
    done = {**run, "metrics": [{**run["metrics"][0], "phase": "Successful"}, run["metrics"][1]]}
    assert due_metrics(spec, {"stableRevision": "old", "analysis": done}, NOON + timedelta(hours=1)) == ["p95"]
    for ended in ("Failed", "Inconclusive", "Successful"):
        status = {"stableRevision": "old", "analysis": {**run, "phase": ended}}
        assert due_metrics(spec, status, NOON + timedelta(hours=1)) == []


def test_no_analysis_for_other_strategies() -> None:
    raw = canary_spec()
    raw["rollout"]["strategy"] = "BlueGreen"
    assert not due(parse_spec(raw), {"stableRevision": "old"}, NOON)


def test_judging_one_measurement() -> None:
    by_max = AnalysisMetric(name="e", query="q", max=0.05)
    assert judge(by_max, Measurement("e", value=0.06)) == "Failed"
    assert judge(by_max, Measurement("e", value=0.05)) == "Successful"
    assert judge(by_max, Measurement("e")) == "Inconclusive"  # no data
    assert judge(by_max, Measurement("e", error="timeout")) == "Inconclusive"
    by_condition = AnalysisMetric(name="s", query="q", success_condition="result >= 0.99")
    assert judge(by_condition, Measurement("s", value=0.999)) == "Successful"
    assert judge(by_condition, Measurement("s", value=0.98)) == "Failed"


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


# ---------------------------------------------------------------- through reconcile.desire


def body(spec: dict, status: dict | None = None, annotations: dict | None = None) -> dict:
    meta = {"name": "chat", "namespace": "ml", "generation": 2, "annotations": annotations or {}}
    return {"metadata": meta, "spec": spec, "status": status or {}}


def ready(objects: list[dict] | None) -> list[dict]:
    assert objects is not None
    return [
        {
            **o,
            "metadata": {**o["metadata"], "generation": 1},
            "status": {"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n},
        }
        for o in objects
        if o["kind"] == "Deployment"
        for n in [o["spec"]["replicas"]]
    ]


def running_canary(analysis: dict | None = None) -> tuple[dict, dict, list[dict]]:
    """A canary of builtin:v2 over a stable builtin:v1, with ready Deployments, paused at 20%."""
    first = desire(body(canary_spec("builtin:v1", analysis)), [], NOON)
    steady = desire(body(canary_spec("builtin:v1", analysis), first.status), ready(first.objects), NOON)
    v2 = canary_spec("builtin:v2", analysis)
    started = desire(body(v2, steady.status), ready(steady.objects), NOON)
    return v2, started.status, ready(started.objects)


def deployments(d: Desired) -> list[str]:
    return [o["metadata"]["name"] for o in d.objects or [] if o["kind"] == "Deployment"]


def test_analysis_request_is_made_for_a_running_canary() -> None:
    spec, status, _ = running_canary()
    request = analysis_request(body(spec, status), NOON)
    assert request is not None
    assert set(request[1]) == {"error-rate", "p95"}
    assert analysis_request(body(canary_spec("builtin:v1"), status), NOON) is None  # nothing new to check


def test_failed_analysis_aborts_the_canary_by_default() -> None:
    spec, status, cluster = running_canary()
    measured = [Measurement("error-rate", value=0.2), Measurement("p95", value=0.8)]
    d = desire(body(spec, status), cluster, NOON, measured)
    assert deployments(d) == ["chat-stable"]
    assert d.status["phase"] == "Degraded"
    assert d.status["abortedRevision"] == parse_spec(spec).revision
    assert d.status["analysis"]["phase"] == "Failed"
    assert d.status["analysis"]["results"][0] == {
        "name": "error-rate",
        "phase": "Failed",
        "max": 0.05,
        "passed": False,
        "value": 0.2,
    }
    assert d.events[0].reason == "AnalysisFailed" and d.events[0].message == "error-rate = 0.2 > 0.05"
    assert d.consumed_annotations == []  # no abort annotation to remove
    assert analysis_request(body(spec, d.status), NOON + timedelta(hours=1)) is None


def test_passing_or_inconclusive_analysis_lets_the_canary_go_on() -> None:
    spec, status, cluster = running_canary()
    measured = [Measurement("error-rate", value=0.01), Measurement("p95", error="HTTP 503")]
    d = desire(body(spec, status), cluster, NOON, measured)
    assert "chat-canary" in deployments(d)
    assert d.status["phase"] != "Degraded"
    assert d.status["analysis"]["time"] == "2026-03-04T12:00:00Z"
    assert d.status["analysis"]["phase"] == "Running"
    assert [e.reason for e in d.events if e.reason.startswith("Analysis")] == ["AnalysisError"]


def measure_in_turn(
    spec: dict, status: dict, cluster: list[dict], values: list[float | None], start: datetime = NOON
) -> list[Desired]:
    """Reconcile once per value (one measurement of metric `m` each, 5 s apart), as the operator would."""
    out = []
    for i, value in enumerate(values):
        now = start + timedelta(seconds=5 * i)
        request = analysis_request(body(spec, status), now)
        assert request is not None, f"measurement {i} was not due"
        d = desire(body(spec, status), cluster, now, [Measurement("m", value=value)])
        out.append(d)
        status, cluster = d.status, ready(d.objects)
    return out


def test_one_failed_sample_with_failure_limit_1_does_not_abort_two_do() -> None:
    spec, status, cluster = running_canary(one_metric(failureLimit=1))
    first, good, second = measure_in_turn(spec, status, cluster, [0.9, 0.01, 0.8])
    assert first.status["analysis"]["phase"] == "Running"
    assert first.status["abortedRevision"] is None and "chat-canary" in deployments(first)
    assert [e.reason for e in first.events if e.reason.startswith("Analysis")] == []
    assert good.status["analysis"]["metrics"][0]["failed"] == 1
    assert second.status["analysis"]["phase"] == "Failed"
    assert second.status["abortedRevision"] == parse_spec(spec).revision
    assert deployments(second) == ["chat-stable"]
    failed = [e for e in second.events if e.reason == "AnalysisFailed"]
    assert failed and failed[0].message == "m = 0.8 > 0.05 (2 failed measurements > failureLimit 1)"
    metric = second.status["analysis"]["metrics"][0]
    assert (metric["count"], metric["successful"], metric["failed"], metric["inconclusive"]) == (3, 1, 2, 0)


def test_success_condition_judges_the_measurements() -> None:
    spec, status, cluster = running_canary(one_metric(successCondition="result >= 0.99"))
    ok, bad = measure_in_turn(spec, status, cluster, [0.995, 0.9])
    assert ok.status["analysis"]["phase"] == "Running"
    assert bad.status["analysis"]["phase"] == "Failed"
    assert [e.message for e in bad.events if e.reason == "AnalysisFailed"] == ["m = 0.9, not result >= 0.99"]


def test_inconclusive_measurements_past_the_limit_pause_and_promote_resumes() -> None:
    spec, status, cluster = running_canary(one_metric(inconclusiveLimit=1))
    first, second = measure_in_turn(spec, status, cluster, [None, None])
    assert first.status["analysis"]["phase"] == "Running" and first.status["phase"] != "Paused"
    paused = second.status
    assert paused["analysis"]["phase"] == "Inconclusive"
    assert paused["phase"] == "Paused" and paused["abortedRevision"] is None  # paused, not aborted
    assert "chat-canary" in deployments(second)
    progressing = next(c for c in paused["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "RolloutPaused"
    assert progressing["message"].startswith("analysis inconclusive: m: 2 inconclusive measurements")
    assert [e.reason for e in second.events] == ["AnalysisInconclusive"]

    # it stays paused, without measuring, until the promote annotation
    later = NOON + timedelta(hours=1)
    assert analysis_request(body(spec, paused), later) is None
    still = desire(body(spec, paused), ready(second.objects), later)
    assert still.status["phase"] == "Paused" and "analysis" not in still.status
    resumed = desire(body(spec, paused, {PROMOTE_ANNOTATION: "true"}), ready(second.objects), later)
    assert resumed.status["analysis"]["phase"] == "Running"
    assert resumed.status["analysis"]["metrics"][0]["inconclusive"] == 0
    assert resumed.status["analysis"]["metrics"][0]["count"] == 2  # the history stays
    assert resumed.status["currentStep"] == paused["currentStep"]  # resumed, not promoted a step
    assert PROMOTE_ANNOTATION in (resumed.status.get("lastActions") or {}) or PROMOTE_ANNOTATION in (
        resumed.consumed_annotations
    )
    assert "AnalysisResumed" in [e.reason for e in resumed.events]
    assert analysis_request(body(spec, resumed.status), later) is not None


def test_promote_full_resumes_an_inconclusive_analysis_and_promotes() -> None:
    spec, status, cluster = running_canary(one_metric(inconclusiveLimit=0))
    (paused,) = measure_in_turn(spec, status, cluster, [None])
    assert paused.status["phase"] == "Paused"
    d = desire(body(spec, paused.status, {PROMOTE_ANNOTATION: "full"}), ready(paused.objects), NOON)
    assert d.status["currentStep"] == len(parse_spec(spec).rollout.canary.steps)
    assert d.status["analysis"]["phase"] == "Running"


def test_without_an_inconclusive_limit_no_data_never_pauses() -> None:
    spec, status, cluster = running_canary(one_metric())
    *_, last = measure_in_turn(spec, status, cluster, [None] * 12)
    assert last.status["analysis"]["phase"] == "Running"
    assert last.status["phase"] != "Paused"
    metric = last.status["analysis"]["metrics"][0]
    assert metric["inconclusive"] == 12
    assert len(metric["measurements"]) == HISTORY  # the history is bounded
    assert metric["measurements"][-1] == {"time": "2026-03-04T12:00:55Z", "phase": "Inconclusive"}


def test_count_ends_the_metric_as_successful() -> None:
    spec, status, cluster = running_canary(one_metric(count=3, failureLimit=1))
    *_, last = measure_in_turn(spec, status, cluster, [0.01, 0.9, 0.01])
    assert last.status["analysis"]["phase"] == "Successful"
    assert "AnalysisSuccessful" in [e.reason for e in last.events]
    assert analysis_request(body(spec, last.status), NOON + timedelta(hours=1)) is None
    assert last.status["abortedRevision"] is None


def test_counts_survive_a_restart_and_restart_with_a_new_revision() -> None:
    """The counts live in status: a fresh reconcile from it goes on; a newer revision starts from zero."""
    spec, status, cluster = running_canary(one_metric(failureLimit=1))
    (first,) = measure_in_turn(spec, status, cluster, [0.9])
    restarted = copy.deepcopy(first.status)  # what a new operator process reads back
    (second,) = measure_in_turn(spec, restarted, ready(first.objects), [0.9], start=NOON + timedelta(seconds=5))
    assert second.status["analysis"]["phase"] == "Failed"

    v3 = canary_spec("builtin:v3", one_metric(failureLimit=1))
    d = desire(body(v3, first.status), ready(first.objects), NOON + timedelta(seconds=5))
    (newer,) = measure_in_turn(v3, d.status, ready(d.objects), [0.9], start=NOON + timedelta(seconds=10))
    assert newer.status["analysis"]["revision"] == parse_spec(v3).revision
    assert newer.status["analysis"]["metrics"][0]["failed"] == 1
    assert newer.status["analysis"]["phase"] == "Running"


def test_the_analysis_status_passes_the_crd_status_schema() -> None:
    spec, status, cluster = running_canary(one_metric(failureLimit=5, inconclusiveLimit=5))
    results = measure_in_turn(spec, status, cluster, [0.01, None, 0.9])
    schema = SCHEMA["properties"]["status"]["properties"]["analysis"]
    for d in results:
        assert validation_problems(d.status["analysis"], schema) == []
    error = desire(body(spec, results[-1].status), cluster, NOON + timedelta(minutes=1), [Measurement("m", error="x")])
    assert validation_problems(error.status["analysis"], schema) == []


def test_metric_names_are_unique() -> None:
    twice = {**ANALYSIS, "metrics": [ANALYSIS["metrics"][0], ANALYSIS["metrics"][0]]}
    with pytest.raises(ValidationError, match="metric names must be unique"):
        parse_spec(canary_spec(analysis=twice))
    metrics = SCHEMA["properties"]["spec"]["properties"]["rollout"]["properties"]["canary"]["properties"]["analysis"][
        "properties"
    ]["metrics"]
    assert metrics["x-kubernetes-validations"][0]["rule"] == "self.all(m, self.filter(x, x.name == m.name).size() == 1)"
