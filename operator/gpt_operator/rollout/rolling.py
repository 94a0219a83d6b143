"""RollingUpdate: one track `<name>`; the Deployment controller replaces pods in place.

Pausing (the paused annotation) holds the running template: a spec change waits until resumed.
"""

from __future__ import annotations

from datetime import datetime

from gpt_operator.naming import TRACK_MAIN
from gpt_operator.rollout.types import Actions, Event, Plan, RolloutState, TrackState, kept_track, update_track
from gpt_operator.spec import GPTDeploymentSpec


def plan(
    spec: GPTDeploymentSpec,
    status: RolloutState,
    observed: dict[str, TrackState],
    now: datetime,
    *,
    replicas: int,
    actions: Actions = Actions(),
) -> Plan:
    update = spec.revision
    main = observed.get(TRACK_MAIN, TrackState())
    held = actions.paused and main.exists and main.revision not in (None, update)
    track = (
        kept_track(spec, main, TRACK_MAIN, main.revision, replicas)
        if held
        else update_track(spec, TRACK_MAIN, replicas)
    )
    state = RolloutState(
        stable_revision=status.stable_revision,
        update_revision=update,
        active_track=TRACK_MAIN,
    )
    events: list[Event] = []
    done = main.ready_at(update, replicas)
    if done and replicas > 0 and status.stable_revision != update:
        state = RolloutState(stable_revision=update, update_revision=update, active_track=TRACK_MAIN)
        events.append(Event("Normal", "RolloutCompleted", f"revision {update} is ready on {replicas} replicas"))
    if held:
        message = f"paused: revision {update} waits for resume"
    elif done:
        message = f"revision {update} is ready"
    else:
        message = f"rolling out revision {update}: {main.ready_replicas}/{replicas} ready"
    return Plan(
        tracks=[track],
        services={"": TRACK_MAIN},
        state=state,
        events=events,
        progressing=not done or held,
        paused=held,
        message=message,
        selector_track=TRACK_MAIN,
    )
