"""Conditions and phase from the spec, the sleep state, the rollout plan and the observed tracks (pure).

Conditions use the metav1.Condition shape and keep `lastTransitionTime` while their status holds. The
whole list is written every time (kopf's status patches are merge patches, which replace lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpt_operator.naming import TRACK_LABEL, instance_selector, jwt_secret_name, selector_string
from gpt_operator.rollout import Event, Plan, RolloutState, TrackState
from gpt_operator.schedule import SleepState
from gpt_operator.spec import GPTDeploymentSpec

CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded", "Sleeping", "StateShared")

# The runtime settings naming where state lives, what each keeps, and the shared backends for it. Unset, each
# is local to the pod: SQLite files and local files in the pod's emptyDir, in-memory cache and limits.
STATE_SETTINGS: dict[str, tuple[str, str]] = {
    "GPT_DATABASE_URL": ("accounts and conversations", "dynamodb://"),
    "GPT_FILES_URL": ("uploaded files", "s3://"),
    "GPT_QUEUE_URL": ("queued jobs", "redis:// or sqs://"),
    "GPT_RATELIMIT_URL": ("rate limits and quotas", "redis://"),
    "GPT_CACHE_URL": ("the response cache", "redis://"),
}
POD_LOCAL_SCHEMES = ("sqlite:", "memory:", "file:")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else _utc_z(moment)


def _utc_z(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def rollout_state_from_status(status: dict[str, Any] | None) -> RolloutState:
    """The rollout state saved in the CR status by an earlier reconcile."""
    status = status or {}
    return RolloutState(
        stable_revision=status.get("stableRevision"),
        update_revision=status.get("updateRevision"),
        aborted_revision=status.get("abortedRevision"),
        active_track=status.get("activeTrack"),
        preview_track=status.get("previewTrack"),
        canary_weight=status.get("canaryWeight"),
        current_step=status.get("currentStep"),
        preview_ready_time=parse_time(status.get("previewReadyTime")),
        scale_down_time=parse_time(status.get("scaleDownTime")),
        next_transition_time=parse_time(status.get("pauseUntil")),
    )


def merge_conditions(
    previous: list[dict[str, Any]] | None, current: list[Condition], now: datetime, generation: int | None
) -> list[dict[str, Any]]:
    """metav1.Condition dicts; lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for cond in current:
        old = before.get(cond.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == cond.status else None
        item: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": since or _utc_z(now),
        }
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out


def invalid_status(
    problems: list[str], previous: dict[str, Any] | None, now: datetime, generation: int | None
) -> dict[str, Any]:
    """The status of a GPTDeployment whose spec cannot be rendered; its children are left as they are."""
    previous = previous or {}
    message = "; ".join(problems)
    conditions = [
        Condition("Ready", "False", "InvalidSpec", message),
        Condition("Available", "False", "InvalidSpec", message),
        Condition("Progressing", "False", "InvalidSpec", message),
        Condition("Degraded", "True", "InvalidSpec", message),
        Condition("Sleeping", "False", "InvalidSpec", message),
    ]
    kept = {k: v for k, v in previous.items() if k not in ("conditions", "phase", "observedGeneration")}
    return {
        **kept,
        "observedGeneration": generation,
        "phase": "Degraded",
        "conditions": merge_conditions(previous.get("conditions"), conditions, now, generation),
    }


def apply_failed_status(previous: dict[str, Any] | None, message: str, now: datetime) -> dict[str, Any]:
    """The status after the API refused a child: the rollout state and observedGeneration stay as they
    were (nothing new took effect), Degraded says why, Ready is False."""
    previous = dict(previous or {})
    conditions = [c for c in previous.get("conditions") or [] if c.get("type") not in ("Ready", "Degraded")]
    current = [Condition(c["type"], c["status"], c.get("reason", "Unknown"), c.get("message", "")) for c in conditions]
    current = [
        Condition("Ready", "False", "ApplyFailed", message),
        *current,
        Condition("Degraded", "True", "ApplyFailed", message),
    ]
    generation = previous.get("observedGeneration")
    return {
        **previous,
        "phase": "Degraded",
        "conditions": merge_conditions(previous.get("conditions"), current, now, generation),
    }


def build_status(
    *,
    name: str,
    plan: Plan,
    sleep: SleepState,
    observed: dict[str, TrackState],
    desired_replicas: int,
    capacity_type: str,
    previous: dict[str, Any] | None,
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    """The operator's whole status for one reconcile."""
    previous = previous or {}
    wanted = 0 if sleep.asleep else desired_replicas
    measured = [t.track for t in plan.tracks if plan.selector_track in (None, t.track)]
    replicas = sum(observed.get(t, TrackState()).replicas for t in measured)
    ready = sum(observed.get(t, TrackState()).ready_replicas for t in measured)
    failed = [t.track for t in plan.tracks if observed.get(t.track, TrackState()).failed]
    any_track = any(observed.get(t.track, TrackState()).exists for t in plan.tracks)
    selector = instance_selector(name)
    if plan.selector_track:
        selector = {**selector, TRACK_LABEL: plan.selector_track}

    degraded = plan.aborted or bool(failed)
    if plan.aborted:
        degraded_cond = Condition("Degraded", "True", "RolloutAborted", plan.message)
    elif failed:
        degraded_cond = Condition(
            "Degraded", "True", "ProgressDeadlineExceeded", f"tracks not progressing: {', '.join(failed)}"
        )
    else:
        degraded_cond = Condition("Degraded", "False", "AsExpected", "no failures")

    if plan.paused:
        progressing_cond = Condition("Progressing", "Unknown", "RolloutPaused", plan.message)
    elif plan.progressing or ready < wanted:
        progressing_cond = Condition("Progressing", "True", "RolloutInProgress", plan.message)
    else:
        progressing_cond = Condition("Progressing", "False", "RolloutComplete", plan.message)

    if sleep.asleep:
        sleeping_cond = Condition("Sleeping", "True", sleep.reason, sleep.message)
        available_cond = Condition("Available", "False", "Sleeping", sleep.message)
        ready_cond = Condition("Ready", "False", "Sleeping", sleep.message)
    else:
        sleeping_cond = Condition("Sleeping", "False", sleep.reason, sleep.message)
        serving = ready > 0
        available_cond = Condition(
            "Available",
            "True" if serving else "False",
            "MinimumReplicasAvailable" if serving else "NoReplicasReady",
            f"{ready}/{wanted} replicas ready",
        )
        all_ready = ready >= wanted and not degraded and progressing_cond.status == "False"
        ready_cond = Condition(
            "Ready",
            "True" if all_ready else "False",
            "Ready" if all_ready else ("Degraded" if degraded else "NotReady"),
            f"{ready}/{wanted} replicas ready" + ("" if all_ready else f"; {plan.message}"),
        )

    if degraded:
        phase = "Degraded"
    elif sleep.asleep:
        phase = "Sleeping"
    elif plan.paused:
        phase = "Paused"
    elif ready_cond.status == "True":
        phase = "Available"
    elif not any_track or (ready == 0 and previous.get("phase") in (None, "Pending")):
        phase = "Pending"
    else:
        phase = "Progressing"

    state = plan.state
    transitions = [t for t in (state.next_transition_time, plan.requeue_at, sleep.next_transition) if t]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "ready": f"{ready}/{wanted}",
        "replicas": replicas,
        "readyReplicas": ready,
        "selector": selector_string(selector),
        "capacityType": capacity_type,
        "serviceName": name,
        "jwtSecret": jwt_secret_name(name),
        "activeTrack": state.active_track,
        "previewTrack": state.preview_track,
        "canaryWeight": state.canary_weight,
        "currentStep": state.current_step,
        "stableRevision": state.stable_revision,
        "updateRevision": state.update_revision,
        "abortedRevision": state.aborted_revision,
        "previewReadyTime": rfc3339(state.preview_ready_time),
        "scaleDownTime": rfc3339(state.scale_down_time),
        "pauseUntil": rfc3339(state.next_transition_time),
        "nextTransitionTime": rfc3339(min(transitions)) if transitions else None,
        "savedReplicas": desired_replicas if sleep.asleep else None,
        "conditions": merge_conditions(
            previous.get("conditions"),
            [ready_cond, available_cond, progressing_cond, degraded_cond, sleeping_cond],
            now,
            generation,
        ),
    }
    return status


def _pod_local(url: str) -> bool:
    url = url.strip().lower()
    return not url or url.startswith(POD_LOCAL_SCHEMES)


def state_condition(spec: GPTDeploymentSpec) -> tuple[Condition, bool]:
    """Condition StateShared: do the runtime's stores outlive a pod and serve every replica? And whether to warn.

    Only spec.env can be read: a setting missing there may come from spec.secretRef, whose values the operator
    never reads, so then the answer is Unknown rather than a false alarm. A warning is due outside dev/test, and
    wherever several replicas would each keep their own SQLite database."""
    env = {e.name: e.value for e in spec.env}
    local = [key for key in STATE_SETTINGS if key in env and _pod_local(env[key])]
    unset = [key for key in STATE_SETTINGS if key not in env]
    if spec.secret_ref is None:
        local, unset = [k for k in STATE_SETTINGS if k in local or k in unset], []
    autoscaling = spec.autoscaling if spec.hpa_enabled else None
    most = max(spec.desired_replicas, autoscaling.max_replicas if autoscaling else 0)
    if local:
        what = "; ".join(f"{key} ({STATE_SETTINGS[key][0]})" for key in local)
        message = (
            f"pod-local state: {what} stay in each pod (SQLite/files in an emptyDir, or memory), are lost when a pod"
            " is replaced (every rollout) and are not shared between replicas. Set them in spec.env or the"
            " spec.secretRef Secret to shared stores: " + ", ".join(f"{key}={STATE_SETTINGS[key][1]}" for key in local)
        )
        sqlite_replicas = "GPT_DATABASE_URL" in local and most > 1
        if sqlite_replicas:
            message = (
                f"up to {most} replicas each keep their own SQLite database: an account or conversation made on one"
                f" pod is unknown to the others; {message}"
            )
        warn = spec.environment in ("staging", "prod") or sqlite_replicas
        return Condition("StateShared", "False", "PodLocalState", message), warn
    if unset and spec.secret_ref is not None:  # unset is empty without a secretRef
        message = (
            f"{', '.join(unset)} not in spec.env; they may be set in Secret {spec.secret_ref.name} (spec.secretRef),"
            " which the operator does not read, so it cannot tell whether they name shared stores"
        )
        return Condition("StateShared", "Unknown", "SetInSecret", message), False
    return Condition("StateShared", "True", "SharedStores", "every store is outside the pods"), False


def with_state_condition(
    status: dict[str, Any],
    spec: GPTDeploymentSpec,
    previous: dict[str, Any] | None,
    now: datetime,
    generation: int | None,
) -> tuple[dict[str, Any], list[Event]]:
    """The status with the StateShared condition added, and a Warning event for pod-local state outside
    dev/test: once per generation and message (the timer re-evaluates every few seconds)."""
    condition, warn = state_condition(spec)
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    merged = merge_conditions((previous or {}).get("conditions"), [condition], now, generation)
    status = {**status, "conditions": [*status.get("conditions", []), *merged]}
    old = before.get("StateShared") or {}
    reported = old.get("message") == condition.message and old.get("observedGeneration") == generation
    events = [Event("Warning", condition.reason, condition.message)] if warn and not reported else []
    return status, events


def status_changes(previous: dict[str, Any] | None, wanted: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning the live status into the wanted one: changed keys, None for
    removed ones, nested maps patched key by key (a merge patch merges maps, so stale keys need a None)."""
    previous = previous or {}
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        old = previous.get(key)
        if value is None:
            if old is not None:
                patch[key] = None
        elif isinstance(value, dict) and isinstance(old, dict):
            nested = status_changes(old, value) | {k: None for k in old if k not in value}
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    return patch
