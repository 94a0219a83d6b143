"""Canary analysis (pure), like an Argo Rollouts background analysis: when to measure, what to ask
Prometheus, how each answer is judged, and what the measurements so far say about the canary.

Each metric is measured every `intervalSeconds` while a canary of a new revision runs. A measurement is
Successful when its value meets `successCondition` (or is at most `max`), Failed when it does not, and
Inconclusive when there is no value (an empty result, NaN, or a query error). A metric is

- Failed after more than `failureLimit` failed measurements (default 0: the first one), which aborts
  the rollout;
- Inconclusive after more than `inconclusiveLimit` inconclusive ones (unset: never), which pauses the
  rollout until the promote annotation resumes it (with fresh counts);
- Successful after `count` measurements (unset: it is measured until the canary ends);
- Running otherwise.

The analysis is Failed if any metric is, else Inconclusive if any is, else Successful once every metric is,
else Running. Its counts and the last HISTORY measurements of each metric live in `status.analysis`, so a
restarted operator goes on counting where it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from gpt_operator.rollout.types import Actions, Event
from gpt_operator.spec import AnalysisMetric, AnalysisSpec, GPTDeploymentSpec
from gpt_operator.success_condition import parse_condition

HISTORY = 10  # measurements kept per metric in the status
Phase = Literal["Successful", "Failed", "Inconclusive"]
RunPhase = Literal["Running", "Successful", "Failed", "Inconclusive"]


@dataclass(frozen=True)
class Measurement:
    """One answer from Prometheus: a value, or none (no data), or the error that kept it from answering."""

    name: str
    value: float | None = None
    error: str | None = None


def judge(metric: AnalysisMetric, measurement: Measurement) -> Phase:
    if measurement.value is None:
        return "Inconclusive"
    if metric.success_condition is not None:
        passed = parse_condition(metric.success_condition)(measurement.value)
    else:
        passed = metric.max is None or measurement.value <= metric.max
    return "Successful" if passed else "Failed"


def queries(analysis: AnalysisSpec, name: str, namespace: str, only: list[str] | None = None) -> dict[str, str]:
    """Each metric's PromQL (of those in `only`, when given) with `{{name}}` and `{{namespace}}` filled in."""
    return {
        m.name: m.query.replace("{{name}}", name).replace("{{namespace}}", namespace)
        for m in analysis.metrics
        if only is None or m.name in only
    }


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def interval_of(analysis: AnalysisSpec, metric: AnalysisMetric) -> int:
    return metric.interval_seconds or analysis.interval_seconds


def current_run(spec: GPTDeploymentSpec, status: dict[str, Any]) -> dict[str, Any] | None:
    """The analysis status of the spec's revision, if there is one."""
    run = status.get("analysis")
    if isinstance(run, dict) and run.get("revision") == spec.revision:
        return run
    return None


def due_metrics(spec: GPTDeploymentSpec, status: dict[str, Any], now: datetime) -> list[str]:
    """The metrics to measure now: a canary of a new revision runs, the analysis has not ended, and the
    metric's last measurement is at least its interval old."""
    analysis = spec.rollout.canary.analysis
    if spec.rollout.strategy != "Canary" or analysis is None:
        return []
    update = spec.revision
    stable = status.get("stableRevision")
    if not stable or stable == update or status.get("abortedRevision") == update:
        return []
    run = current_run(spec, status)
    if run is None:
        return [m.name for m in analysis.metrics]
    if run.get("phase", "Running") != "Running":
        return []
    records = {r.get("name"): r for r in run.get("metrics") or [] if isinstance(r, dict)}
    out = []
    for metric in analysis.metrics:
        record = records.get(metric.name) or {}
        if record.get("phase", "Running") != "Running":
            continue
        # a status written before per-metric records had only the run's time
        last = _parse_time(record.get("lastTime") if records else run.get("time"))
        if last is None or now >= last + timedelta(seconds=interval_of(analysis, metric)):
            out.append(metric.name)
    return out


def due(spec: GPTDeploymentSpec, status: dict[str, Any], now: datetime) -> bool:
    """Whether any metric is to be measured now (see due_metrics)."""
    return bool(due_metrics(spec, status, now))


def _metric_phase(metric: AnalysisMetric, record: dict[str, Any]) -> RunPhase:
    if record["failed"] > metric.failure_limit:
        return "Failed"
    if metric.inconclusive_limit is not None and record["inconclusive"] > metric.inconclusive_limit:
        return "Inconclusive"
    if metric.count is not None and record["count"] >= metric.count:
        return "Successful"
    return "Running"


def _run_phase(phases: list[RunPhase]) -> RunPhase:
    for phase in ("Failed", "Inconclusive"):
        if phase in phases:
            return phase
    return "Successful" if phases and all(p == "Successful" for p in phases) else "Running"


def _describe(metric: AnalysisMetric, record: dict[str, Any]) -> str:
    last = record["measurements"][-1] if record["measurements"] else {}
    phase = record["phase"]
    if phase == "Failed":
        value = last.get("value")
        shown = f"{value:g}" if isinstance(value, int | float) else "?"
        if metric.success_condition is not None:
            what = f"{metric.name} = {shown}, not {metric.success_condition}"
        else:
            what = f"{metric.name} = {shown} > {metric.max:g}" if metric.max is not None else metric.name
        if metric.failure_limit:
            what += f" ({record['failed']} failed measurements > failureLimit {metric.failure_limit})"
        return what
    if phase == "Inconclusive":
        why = f": {last['error']}" if last.get("error") else " (no data)"
        return (
            f"{metric.name}: {record['inconclusive']} inconclusive measurements > inconclusiveLimit "
            f"{metric.inconclusive_limit}{why}"
        )
    return ""


def new_record(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "phase": "Running",
        "count": 0,
        "successful": 0,
        "failed": 0,
        "inconclusive": 0,
        "measurements": [],
    }


def record(
    spec: GPTDeploymentSpec, status: dict[str, Any], measurements: list[Measurement], now: datetime
) -> dict[str, Any]:
    """The analysis status after `measurements` (taken now) were added to this revision's counts.

    Every key is always written (merge patches of the status keep keys they do not name)."""
    analysis = spec.rollout.canary.analysis
    assert analysis is not None
    previous = current_run(spec, status) or {}
    before = {r.get("name"): r for r in previous.get("metrics") or [] if isinstance(r, dict)}
    taken = {m.name: m for m in measurements}
    records, results, messages = [], [], []
    for metric in analysis.metrics:
        old = before.get(metric.name) or {}
        kept = (*new_record(metric.name), "lastTime")
        rec = {**new_record(metric.name), **{k: v for k, v in old.items() if k in kept and v is not None}}
        rec["measurements"] = list(rec["measurements"] or [])
        m = taken.get(metric.name)
        if m is not None and rec["phase"] == "Running":
            phase = judge(metric, m)
            rec["count"] += 1
            rec[phase.lower()] += 1
            entry: dict[str, Any] = {"time": _time(now), "phase": phase}
            if m.value is not None:
                entry["value"] = m.value
            if m.error:
                entry["error"] = m.error[:256]
            rec["measurements"] = [*rec["measurements"], entry][-HISTORY:]
            rec["lastTime"] = _time(now)
            rec["phase"] = _metric_phase(metric, rec)
            result: dict[str, Any] = {"name": metric.name, "phase": phase, "passed": phase != "Failed"}
            if metric.max is not None:
                result["max"] = metric.max
            if m.value is not None:
                result["value"] = m.value
            if m.error:
                result["error"] = m.error[:256]
            results.append(result)
        records.append(rec)
        if rec["phase"] in ("Failed", "Inconclusive"):
            messages.append(_describe(metric, rec))
    return {
        "revision": spec.revision,
        "phase": _run_phase([r["phase"] for r in records]),
        "message": "; ".join(messages),
        "time": _time(now) if measurements else previous.get("time"),
        "results": results or previous.get("results") or [],
        "metrics": records,
    }


def resumed(spec: GPTDeploymentSpec, run: dict[str, Any]) -> dict[str, Any]:
    """An Inconclusive analysis, resumed by the promote annotation: inconclusive counts start again."""
    analysis = spec.rollout.canary.analysis
    assert analysis is not None
    limits = {m.name: m for m in analysis.metrics}
    records = []
    for rec in run.get("metrics") or []:
        rec = {**rec, "inconclusive": 0}
        metric = limits.get(rec.get("name", ""))
        rec["phase"] = _metric_phase(metric, rec) if metric is not None else rec.get("phase", "Running")
        records.append(rec)
    return {**run, "phase": _run_phase([r["phase"] for r in records]), "message": "", "metrics": records}


def errors(measurements: list[Measurement]) -> str | None:
    """The query errors among `measurements`, for a Warning event."""
    found = [f"{m.name}: {m.error}" for m in measurements if m.error]
    return "; ".join(found) or None


@dataclass(frozen=True)
class Assessment:
    """What the analysis means for this reconcile."""

    actions: Actions  # the user's, plus abort (it failed just now) or paused (it is inconclusive)
    run: dict[str, Any] | None = None  # status.analysis to write; None: leave it as it is
    events: tuple[Event, ...] = ()
    pause_message: str | None = None
    consumed: frozenset[str] = frozenset()  # "promote", when it resumed an inconclusive analysis


def assess(
    spec: GPTDeploymentSpec,
    status: dict[str, Any],
    measurements: list[Measurement] | None,
    actions: Actions,
    now: datetime,
) -> Assessment:
    """Add the measurements taken for this reconcile (if any) and decide: a Failed analysis aborts the
    canary (once: the same status write records the abort), an Inconclusive one pauses it until the promote
    annotation resumes it (promote=full resumes and promotes; a plain promote only resumes)."""
    if spec.rollout.strategy != "Canary" or spec.rollout.canary.analysis is None:
        return Assessment(actions)
    run = current_run(spec, status)
    events: list[Event] = []
    write = None
    if measurements:
        before = run.get("phase", "Running") if run else "Running"
        run = write = record(spec, status, measurements, now)
        phase = run["phase"]
        if phase != before and phase == "Failed":
            actions = replace(actions, abort=True)
            events.append(Event("Warning", "AnalysisFailed", run["message"]))
        elif phase != before and phase == "Inconclusive":
            events.append(Event("Warning", "AnalysisInconclusive", f"{run['message']}; promote to resume"))
        elif phase != before and phase == "Successful":
            events.append(Event("Normal", "AnalysisSuccessful", "every metric passed its count of measurements"))
        if (found := errors(measurements)) is not None:
            events.append(Event("Warning", "AnalysisError", found))
    if run is None or run.get("phase") != "Inconclusive" or actions.abort:
        return Assessment(actions, write, tuple(events))
    if actions.promote is not None:
        write = resumed(spec, run)
        events.append(Event("Normal", "AnalysisResumed", "the promote annotation resumed the inconclusive analysis"))
        if actions.promote == "full":
            return Assessment(actions, write, tuple(events))
        return Assessment(replace(actions, promote=None), write, tuple(events), consumed=frozenset({"promote"}))
    message = f"analysis inconclusive: {run.get('message')}; promote to resume"
    return Assessment(replace(actions, paused=True), write, tuple(events), pause_message=message)
