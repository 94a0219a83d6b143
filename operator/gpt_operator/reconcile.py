"""The pure core of one reconcile: the GPTDeployment, what its tracks show, and the time -> what to do.

main.py reads the cluster (the informer cache), calls `desire`, and hands the result to kube_apply.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from gpt_operator.history import recorded_history
from gpt_operator.naming import (
    ABORT_ANNOTATION,
    ENGINE_KEY_SECRET,
    JWT_SECRET,
    PAUSED_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    REVISION_LABEL,
    TEMPLATE_ANNOTATION,
    TRACK_LABEL,
    WAKE_UNTIL_ANNOTATION,
    GeneratedSecret,
)
from gpt_operator.render import render_children
from gpt_operator.rollout import Actions, Event, TrackPlan, TrackState, plan
from gpt_operator.rollout.analysis import Measurement, assess, due_metrics, queries
from gpt_operator.schedule import SleepState, evaluate, parse_wake_until
from gpt_operator.spec import AnalysisSpec, GPTDeploymentSpec, parse_spec, problems_from_error, validate
from gpt_operator.status import (
    build_status,
    invalid_status,
    parse_time,
    rfc3339,
    rollout_state_from_status,
    with_state_condition,
)

TRUE_VALUES = ("true", "yes", "1", "on")
IDLE_UNREAD = (
    "idle sleep is on hold: the pods' last request cannot be read from their /metrics through the client Service"
    " (a NetworkPolicy that keeps the operator out?)"
)
# The one-shot annotations, and the action each asks for.
ACTION_ANNOTATIONS = ((PROMOTE_ANNOTATION, "promote"), (ABORT_ANNOTATION, "abort"), (RETRY_ANNOTATION, "retry"))


@dataclass(frozen=True)
class Desired:
    """What one reconcile wants. `objects is None` means: leave the children alone (invalid spec).
    `secrets`: the generated Secrets the pods need, created (once) before the children are applied.
    `sleep`: the sleep state it decided from (None for an invalid spec), for the metrics' next wake."""

    objects: list[dict[str, Any]] | None
    status: dict[str, Any]
    secrets: tuple[GeneratedSecret, ...] = ()
    events: list[Event] = field(default_factory=list)
    requeue_at: datetime | None = None
    consumed_annotations: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sleep: SleepState | None = None


def actions_from_annotations(annotations: dict[str, str] | None) -> Actions:
    annotations = annotations or {}
    promote = annotations.get(PROMOTE_ANNOTATION)
    promote_action = None
    if promote is not None:
        # "full", or "full@<time>" as `kubectl gptd promote --full` writes it (a unique value per request)
        promote_action = "full" if promote.strip().lower().partition("@")[0] == "full" else "step"
    return Actions(
        promote=promote_action,
        abort=ABORT_ANNOTATION in annotations,
        retry=RETRY_ANNOTATION in annotations,
        paused=annotations.get(PAUSED_ANNOTATION, "").strip().lower() in TRUE_VALUES,
    )


def track_state(deployment: dict[str, Any]) -> TrackState:
    """What a track's Deployment shows, as the rollout state machines read it."""
    meta = deployment.get("metadata", {})
    status = deployment.get("status", {}) or {}
    raw_template = (meta.get("annotations") or {}).get(TEMPLATE_ANNOTATION)
    try:
        template = json.loads(raw_template) if raw_template else None
    except ValueError:
        template = None
    conditions = {c.get("type"): c for c in status.get("conditions", []) or []}
    progressing = conditions.get("Progressing", {})
    generation = meta.get("generation")
    observed_generation = status.get("observedGeneration")
    return TrackState(
        exists=True,
        revision=(meta.get("labels") or {}).get(REVISION_LABEL),
        template=template,
        replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        current=generation is None or (observed_generation is not None and observed_generation >= generation),
        failed=progressing.get("reason") == "ProgressDeadlineExceeded" and progressing.get("status") == "False",
        spec_replicas=_int_or_none((deployment.get("spec") or {}).get("replicas")),
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None


def observed_tracks(deployments: list[dict[str, Any]]) -> dict[str, TrackState]:
    return {
        (d["metadata"].get("labels") or {})[TRACK_LABEL]: track_state(d)
        for d in deployments
        if TRACK_LABEL in (d["metadata"].get("labels") or {})
    }


def analysis_request(body: dict[str, Any], now: datetime) -> tuple[AnalysisSpec, dict[str, str]] | None:
    """The Prometheus queries to run before this reconcile, if a canary analysis is due."""
    try:
        spec = parse_spec(body.get("spec") or {})
    except ValidationError:
        return None
    analysis = spec.rollout.canary.analysis
    if analysis is None or validate(spec):
        return None
    names = due_metrics(spec, dict(body.get("status") or {}), now)
    if not names:
        return None
    meta = body["metadata"]
    return analysis, queries(analysis, meta["name"], meta.get("namespace", "default"), names)


def desire(
    body: dict[str, Any],
    deployments: list[dict[str, Any]],
    now: datetime,
    measurements: list[Measurement] | None = None,
    observed_request: datetime | None = None,
    *,
    activity_read: bool = True,
) -> Desired:
    """Everything one reconcile should do, from the CR body, its track Deployments, the time, the canary
    analysis measurements taken for it (see analysis_request), and the last request its pods or its activator
    reported (see activity_url; schedule.idle only; `activity_read` False: it could not be read)."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    generation = meta.get("generation")
    previous = dict(body.get("status") or {})
    try:
        spec = parse_spec(body.get("spec") or {})
        problems = validate(spec)
    except ValidationError as exc:
        problems = problems_from_error(exc)
    if problems:
        status = invalid_status(problems, previous, now, generation)
        reported = (
            _condition(previous, "Degraded") == _condition(status, "Degraded")
            and previous.get("observedGeneration") == generation
        )
        return Desired(
            objects=None,
            status=status,
            # once per generation and message: the timer re-checks every few seconds, the event is not repeated
            events=[] if reported else [Event("Warning", "InvalidSpec", "; ".join(problems))],
            problems=problems,
        )

    annotations = meta.get("annotations") or {}
    # A one-shot annotation whose action status already records was acted on by an earlier reconcile: it is
    # removed now, and not acted on again (see one_shot_bookkeeping).
    recorded = previous.get("lastActions") or {}
    applied = [key for key, _ in ACTION_ANNOTATIONS if key in annotations and recorded.get(key) == annotations[key]]
    actions = actions_from_annotations({k: v for k, v in annotations.items() if k not in applied})
    retried = retried_status(previous, spec.revision) if actions.retry else None
    if retried is not None:
        previous = retried
    analysis = assess(spec, previous, measurements, actions, now)
    actions = analysis.actions
    idle_sleep = spec.idle_sleep
    last_request = latest_request(previous, observed_request, now) if idle_sleep is not None else None
    observed = observed_tracks(deployments)
    ready = sum(track.ready_replicas for track in observed.values())
    # Pods serve but their last request cannot be read: they may be busy, so the idle clock does not run.
    unread = idle_sleep is not None and not activity_read and ready > 0
    sleep = evaluate(
        spec.schedule,
        now,
        suspend=spec.suspend,
        wake_until=parse_wake_until(annotations.get(WAKE_UNTIL_ANNOTATION)),
        last_request=None if unread else last_request,
    )
    if unread and not sleep.asleep:
        sleep = replace(sleep, message=f"{sleep.message}; {IDLE_UNREAD}")
    replicas = 0 if sleep.asleep else spec.desired_replicas
    rollout = plan(spec, rollout_state_from_status(previous), observed, now, replicas=replicas, actions=actions)
    if analysis.pause_message and rollout.paused:
        rollout = replace(rollout, message=analysis.pause_message)
    rollout = replace(rollout, consumed=rollout.consumed | analysis.consumed | ({"retry"} if retried else set()))
    # Idle sleep: the activator answers while no runtime pod is Ready (asleep, or waking and loading the model);
    # in an off window the Service keeps no endpoint, as without schedule.idle (a request does not wake it).
    to_activator = idle_sleep is not None and (sleep.reason == "Idle" or (not sleep.asleep and ready == 0))
    objects = render_children(name, namespace, spec, rollout, asleep=sleep.asleep, to_activator=to_activator)
    status = build_status(
        name=name,
        plan=rollout,
        sleep=sleep,
        observed=observed,
        desired_replicas=spec.desired_replicas,
        capacity_type=spec.effective_capacity_type,
        previous=previous,
        now=now,
        generation=generation,
    )
    events = [*analysis.events, *rollout.events]
    status, state_events = with_state_condition(status, spec, previous, now, generation)
    events += state_events
    if analysis.run is not None:
        status["analysis"] = analysis.run
    elif retried is not None:
        status["analysis"] = None  # the failed analysis of the aborted try is forgotten
    if retried is not None:
        events.append(Event("Normal", "RolloutRetried", f"revision {spec.revision}: the aborted rollout starts again"))
    stable = status["stableRevision"]
    template = stable_template(spec, rollout.tracks, stable)
    status["history"] = recorded_history(previous.get("history"), stable, template, now)
    was_sleeping = previous.get("phase") == "Sleeping"
    if sleep.asleep and not was_sleeping and previous:
        events.append(Event("Normal", "Sleeping", sleep.message))
    elif not sleep.asleep and was_sleeping:
        events.append(Event("Normal", "Woken", f"{sleep.message}; restoring {spec.desired_replicas} replicas"))
    acted = [key for key, action in ACTION_ANNOTATIONS if action in rollout.consumed and key in annotations]
    remove = list(applied)
    # A one-shot annotation with nothing to act on is dropped too, so it cannot fire on a later rollout.
    idle = not rollout.progressing and not rollout.paused
    for key, action in ACTION_ANNOTATIONS:
        if key not in annotations or key in acted or key in applied:
            continue
        if action == "retry":  # acts at once or never: only an aborted revision can be retried
            remove.append(key)
            events.append(Event("Warning", "AnnotationIgnored", f"{key}: revision {spec.revision} is not aborted"))
        elif idle:
            remove.append(key)
            events.append(Event("Warning", "AnnotationIgnored", f"{key}: no rollout in progress"))
    status["lastActions"] = one_shot_bookkeeping(recorded, annotations, acted)
    status["lastRequestTime"] = rfc3339(last_request)
    secrets = needed_secrets(spec, rollout.tracks)
    status["engineSecret"] = ENGINE_KEY_SECRET.name(name) if ENGINE_KEY_SECRET in secrets else None
    requeue = [t for t in (rollout.requeue_at, sleep.next_transition) if t is not None]
    return Desired(
        objects=objects,
        status=status,
        secrets=secrets,
        events=events,
        requeue_at=min(requeue) if requeue else None,
        consumed_annotations=remove,
        sleep=sleep,
    )


def latest_request(previous: dict[str, Any], observed: datetime | None, now: datetime) -> datetime:
    """The last request for the idle clock: the later of status.lastRequestTime and what the pods (or the
    activator) report now, never in the future (a pod's clock may run ahead). Without a recorded time the clock
    starts now: a new deployment, or schedule.idle just turned on, gets its whole idle time."""
    recorded = parse_time(previous.get("lastRequestTime")) or now
    return min(max(recorded, observed or recorded), now)


def activity_url(body: dict[str, Any], services: list[dict[str, Any]]) -> str | None:
    """Where to read the last request (the `gpt_last_request_timestamp_seconds` of /metrics): the client
    Service's ClusterIP, whichever pods it selects (runtime or activator). None without schedule.idle, or
    before the Service has an address."""
    try:
        spec = parse_spec(body.get("spec") or {})
    except ValidationError:
        return None
    if spec.idle_sleep is None:
        return None
    name = body["metadata"]["name"]
    client = next((s for s in services if s["metadata"]["name"] == name), None)
    address = ((client or {}).get("spec") or {}).get("clusterIP")
    if not address or address == "None":
        return None
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{spec.service.port}/metrics"


def retried_status(previous: dict[str, Any], revision: str) -> dict[str, Any] | None:
    """The status a retry of the aborted `revision` starts from: the abort and that try's rollout position
    and analysis forgotten, so the strategy starts the same revision again from its first step. None when
    `revision` (the spec's) is not the aborted one: there is nothing to retry."""
    if not previous.get("abortedRevision") or previous.get("abortedRevision") != revision:
        return None
    cleared = ("abortedRevision", "updateRevision", "currentStep", "previewReadyTime", "pauseUntil", "analysis")
    return {**previous, **dict.fromkeys(cleared)}


def stable_template(spec: GPTDeploymentSpec, tracks: Iterable[TrackPlan], stable: str | None) -> dict[str, Any] | None:
    """The pod-deciding spec of the stable revision: the spec's own, or the one a track keeps it with."""
    if stable is None:
        return None
    if stable == spec.revision:
        return spec.pod_template_spec()
    return next((track.template for track in tracks if track.revision == stable), None)


def needed_secrets(spec: GPTDeploymentSpec, tracks: Iterable[TrackPlan]) -> tuple[GeneratedSecret, ...]:
    """The JWT key always; the engine's API key while the spec or any track (an older revision kept by a
    blue-green or canary rollout) runs an engine container."""
    engine = spec.engine.external or any("engine" in (track.template or {}) for track in tracks)
    return (JWT_SECRET, ENGINE_KEY_SECRET) if engine else (JWT_SECRET,)


def one_shot_bookkeeping(recorded: dict[str, str], annotations: dict[str, str], acted: list[str]) -> dict | None:
    """status.lastActions: the one-shot annotations acted on whose removal is still to come, by value.

    An action and the removal of its annotation cannot be one write (status is a subresource), so they are
    ordered to survive a crash anywhere: (1) act and record the annotation's value in status, keeping the
    annotation; (2) next reconcile: the recorded value means "done": remove the annotation, then (3) forget
    the record once the annotation is gone. A crash before (1) acts again from the same state (the same
    result); after (1), the record stops a second action. The main.py write order is: children, status,
    then annotations.
    """
    kept = {key: value for key, value in recorded.items() if annotations.get(key) == value}
    kept.update({key: annotations[key] for key in acted})
    return kept or None


def _condition(status: dict[str, Any], kind: str) -> tuple[Any, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status"), cond.get("message")
    return None
