"""Canary: tracks `<name>-stable` and `<name>-canary`, traffic by replica ratio behind Service `<name>`.

Steps run in order: `setWeight` sizes the canary (and shrinks the stable track, so the total stays the
HPA's count) and completes when the canary pods are ready; `pause` waits its duration, or for the promote
annotation when it has none. After the last step the stable track takes the new revision at the size it
has, grows to the full count once no old pod is left (never both in one write: see `hold_scale_up`), and
once it is ready the canary is removed. promote=full skips the remaining steps; abort returns all traffic
to stable, until the stable track has taken the new revision (then there is nothing to return to).
A spec change during a canary restarts the steps with the newer revision; a stable track that a promotion
already rolled to another revision is the stable revision from then on, whatever the status said.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from gpt_operator.naming import TRACK_CANARY, TRACK_STABLE
from gpt_operator.rollout.types import (
    Actions,
    Event,
    Plan,
    RolloutState,
    TrackState,
    canary_split,
    hold_scale_up,
    kept_track,
    update_track,
)
from gpt_operator.spec import CanaryStep, GPTDeploymentSpec

SERVICES = {"": None, "-stable": TRACK_STABLE, "-canary": TRACK_CANARY}


def weight_at(steps: list[CanaryStep], index: int) -> int:
    """The traffic weight in force at step `index`: the last setWeight at or before it."""
    weights = [s.set_weight for s in steps[: index + 1] if s.set_weight is not None]
    return weights[-1] if weights else 0


def plan(
    spec: GPTDeploymentSpec,
    status: RolloutState,
    observed: dict[str, TrackState],
    now: datetime,
    *,
    replicas: int,
    actions: Actions = Actions(),
) -> Plan:
    events: list[Event] = []
    adopted = _promoted_stable(status, observed.get(TRACK_STABLE, TrackState()), spec.revision)
    if adopted is not None:
        # The spec changed after a promotion rolled the stable track but before a reconcile recorded it.
        status = replace(status, stable_revision=adopted)
        events.append(Event("Normal", "RolloutCompleted", f"revision {adopted} is stable"))
    p = _plan(spec, status, observed, now, replicas=replicas, actions=actions)
    tracks = [hold_scale_up(t, observed.get(t.track, TrackState())) for t in p.tracks]
    return replace(p, tracks=tracks, events=[*events, *p.events])


def _promoted_stable(status: RolloutState, seen_stable: TrackState, update: str) -> str | None:
    """The revision the stable track runs, when a promotion rolled it there and the status does not say so.

    The stable track changes template only in a promotion, to the revision promoted then. If the spec moves
    on before the reconcile that records it, every pod of the stable track already runs that revision (no
    older pod is left), and that is the stable revision; the new spec's revision is a new canary against it.
    """
    revision = seen_stable.revision
    if status.stable_revision is None or revision in (None, status.stable_revision, update):
        return None
    return revision if seen_stable.rolled else None


def _plan(
    spec: GPTDeploymentSpec,
    status: RolloutState,
    observed: dict[str, TrackState],
    now: datetime,
    *,
    replicas: int,
    actions: Actions,
) -> Plan:
    steps = spec.rollout.canary.steps
    update = spec.revision
    seen_stable = observed.get(TRACK_STABLE, TrackState())
    seen_canary = observed.get(TRACK_CANARY, TrackState())
    base = RolloutState(stable_revision=status.stable_revision, update_revision=update)

    # First deployment, or the spec is back at the stable revision: stable only.
    if status.stable_revision is None or update == status.stable_revision:
        tracks = [update_track(spec, TRACK_STABLE, replicas)]
        ready = seen_stable.ready_at(update, replicas)
        if ready and replicas > 0 and status.stable_revision != update:
            done = RolloutState(stable_revision=update, update_revision=update, canary_weight=0)
            return Plan(
                tracks,
                SERVICES,
                done,
                message=f"revision {update} is stable",
                events=[Event("Normal", "RolloutCompleted", f"revision {update} is stable")],
            )
        return Plan(
            tracks,
            SERVICES,
            _with(base, canary_weight=0),
            progressing=not ready,
            message=f"revision {update} is stable" if ready else f"deploying revision {update}",
        )

    stable_track = kept_track(spec, seen_stable, TRACK_STABLE, status.stable_revision, replicas)
    if status.aborted_revision == update:
        return Plan(
            [stable_track],
            SERVICES,
            _with(base, aborted_revision=update, canary_weight=0),
            aborted=True,
            message=f"revision {update} was aborted; stable keeps {status.stable_revision}",
        )
    restarted = status.update_revision != update or status.current_step is None
    step = 0 if restarted or status.current_step is None else status.current_step
    deadline = None if restarted else status.next_transition_time
    promoting = not restarted and step >= len(steps) and seen_stable.revision == update

    if actions.abort and not promoting:
        return Plan(
            [stable_track],
            SERVICES,
            _with(base, aborted_revision=update, canary_weight=0),
            events=[Event("Warning", "RolloutAborted", f"canary of revision {update} aborted")],
            aborted=True,
            consumed=frozenset({"abort"}),
            message=f"revision {update} was aborted",
        )

    # Full promotion: the stable track takes the new revision at the size it has, then grows (see
    # hold_scale_up in `plan`); the canary keeps its size and goes once the stable track is ready.
    if step >= len(steps) or actions.promote == "full":
        _, canary_size = canary_split(replicas, weight_at(steps, min(step, len(steps) - 1)))
        if seen_canary.exists:
            canary_size = min(canary_size, seen_canary.asked)
        tracks = [update_track(spec, TRACK_STABLE, replicas)]
        state = _with(base, current_step=len(steps), canary_weight=100)
        consumed = frozenset({"promote"}) if actions.promote == "full" else frozenset()
        events = []
        if actions.abort:  # only while promoting: the stable track's older template is gone
            consumed |= {"abort"}
            ignored = f"the stable track already runs revision {update}; nothing to abort to"
            events.append(Event("Warning", "AbortIgnored", ignored))
        if seen_stable.ready_at(update, replicas) and replicas > 0:
            done = RolloutState(stable_revision=update, update_revision=update, canary_weight=0)
            return Plan(
                tracks,
                SERVICES,
                done,
                consumed=consumed,
                message=f"revision {update} is stable",
                events=[*events, Event("Normal", "RolloutCompleted", f"canary promoted: revision {update} is stable")],
            )
        tracks.append(kept_track(spec, seen_canary, TRACK_CANARY, update, canary_size))
        return Plan(
            tracks,
            SERVICES,
            state,
            events=events,
            progressing=True,
            consumed=consumed,
            message=f"promoting revision {update} to the stable track",
        )

    weight = weight_at(steps, step)
    stable_size, canary_size = canary_split(replicas, weight)
    tracks = [replace(stable_track, replicas=stable_size), update_track(spec, TRACK_CANARY, canary_size)]
    state = _with(base, current_step=step, canary_weight=weight, next_transition_time=deadline)
    current = steps[step]
    common: dict[str, Any] = {"progressing": True}

    if actions.paused:
        return Plan(tracks, SERVICES, state, paused=True, message=f"paused at step {step} ({weight}%)", **common)

    if current.set_weight is not None:
        if replicas > 0 and seen_canary.ready_at(update, canary_size):
            return Plan(
                tracks,
                SERVICES,
                _with(state, current_step=step + 1, next_transition_time=None),
                events=[Event("Normal", "CanaryStep", f"step {step}: canary at {weight}% is ready")],
                message=f"step {step} done ({weight}%)",
                **common,
            )
        return Plan(
            tracks,
            SERVICES,
            state,
            message=f"step {step}: canary at {weight}%, {seen_canary.ready_replicas}/{canary_size} ready",
            **common,
        )

    pause = current.pause
    assert pause is not None
    if actions.promote == "step":
        return Plan(
            tracks,
            SERVICES,
            _with(state, current_step=step + 1, next_transition_time=None),
            consumed=frozenset({"promote"}),
            message=f"step {step} (pause) promoted",
            events=[Event("Normal", "CanaryStep", f"step {step}: pause ended by promote")],
            **common,
        )
    if pause.duration is None:
        return Plan(
            tracks,
            SERVICES,
            state,
            paused=True,
            message=f"paused at step {step} ({weight}%); waiting for the promote annotation",
            **common,
        )
    if deadline is None:
        deadline = now + timedelta(seconds=pause.duration)
        return Plan(
            tracks,
            SERVICES,
            _with(state, next_transition_time=deadline),
            requeue_at=deadline,
            message=f"step {step}: pausing until {deadline.isoformat()}",
            **common,
        )
    if now >= deadline:
        return Plan(
            tracks,
            SERVICES,
            _with(state, current_step=step + 1, next_transition_time=None),
            events=[Event("Normal", "CanaryStep", f"step {step}: pause of {pause.duration}s ended")],
            message=f"step {step} (pause) done",
            **common,
        )
    return Plan(
        tracks,
        SERVICES,
        state,
        requeue_at=deadline,
        message=f"step {step}: pausing until {deadline.isoformat()}",
        **common,
    )


def _with(state: RolloutState, **changes: Any) -> RolloutState:
    return replace(state, **changes)
