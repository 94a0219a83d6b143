"""BlueGreen: tracks `<name>-blue` and `<name>-green`.

Service `<name>` selects the active colour, `<name>-preview` the other. A new revision goes to the
inactive colour at full size; once ready it is promoted after `autoPromotionSeconds` (or on the promote
annotation when auto-promotion is off); the old colour keeps running for `scaleDownDelaySeconds`, during
which abort switches traffic back. Abort before promotion removes the preview and marks the revision
aborted until the spec changes again.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from gpt_operator.naming import TRACK_BLUE, other_colour
from gpt_operator.rollout.types import (
    Actions,
    Event,
    Plan,
    RolloutState,
    TrackState,
    kept_track,
    update_track,
)
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
    bg = spec.rollout.blue_green
    update = spec.revision
    active = status.active_track if status.active_track in ("blue", "green") else TRACK_BLUE
    inactive = other_colour(active)
    seen_active = observed.get(active, TrackState())
    seen_inactive = observed.get(inactive, TrackState())
    base = RolloutState(
        stable_revision=status.stable_revision,
        update_revision=update,
        active_track=active,
        preview_track=inactive,
        scale_down_time=status.scale_down_time,
    )
    services: dict[str, str | None] = {"": active, "-preview": inactive}

    # First deployment: straight to the active colour.
    if status.stable_revision is None:
        tracks = [update_track(spec, active, replicas)]
        if seen_active.ready_at(update, replicas) and replicas > 0:
            return Plan(
                tracks=tracks,
                services=services,
                state=RolloutState(
                    stable_revision=update, update_revision=update, active_track=active, preview_track=inactive
                ),
                events=[Event("Normal", "RolloutCompleted", f"revision {update} is active on {active}")],
                message=f"revision {update} is active on {active}",
                selector_track=active,
            )
        return Plan(
            tracks,
            services,
            base,
            progressing=True,
            selector_track=active,
            message=f"deploying revision {update} to {active}",
        )

    # Steady: the active colour runs the spec; the old colour lingers until its scale-down time.
    if update == status.stable_revision:
        tracks = [update_track(spec, active, replicas)]
        scale_down = status.scale_down_time
        lingering = scale_down is not None and now < scale_down and seen_inactive.exists
        if lingering and actions.abort and seen_inactive.revision:
            rollback = RolloutState(
                stable_revision=seen_inactive.revision,
                update_revision=update,
                aborted_revision=update,
                active_track=inactive,
                preview_track=active,
            )
            return Plan(
                tracks=[kept_track(spec, seen_inactive, inactive, seen_inactive.revision, replicas)],
                services={"": inactive, "-preview": active},
                state=rollback,
                events=[
                    Event(
                        "Warning", "RolloutAborted", f"rolled back to revision {seen_inactive.revision} on {inactive}"
                    )
                ],
                aborted=True,
                consumed=frozenset({"abort"}),
                message=f"rolled back to {seen_inactive.revision}; revision {update} aborted",
                selector_track=inactive,
            )
        if lingering and scale_down is not None:
            tracks.append(kept_track(spec, seen_inactive, inactive, seen_inactive.revision, replicas))
            return Plan(
                tracks,
                services,
                base,
                requeue_at=scale_down,
                selector_track=active,
                message=f"{inactive} scales down at {scale_down.isoformat()}",
            )
        progressing = not seen_active.ready_at(update, replicas)
        return Plan(
            tracks,
            services,
            replace_scale_down(base),
            progressing=progressing,
            selector_track=active,
            message=f"revision {update} is active on {active}",
        )

    # A new revision that was aborted: the active colour stays, no preview, until the spec changes.
    active_track = kept_track(spec, seen_active, active, status.stable_revision, replicas)
    if status.aborted_revision == update:
        return Plan(
            [active_track],
            services,
            _aborted(base),
            aborted=True,
            selector_track=active,
            message=f"revision {update} was aborted; {active} keeps {status.stable_revision}",
        )

    if actions.abort:
        return Plan(
            [active_track],
            services,
            _aborted(base),
            events=[Event("Warning", "RolloutAborted", f"revision {update} aborted; {active} stays active")],
            aborted=True,
            consumed=frozenset({"abort"}),
            message=f"revision {update} was aborted",
            selector_track=active,
        )

    # Preview the new revision on the inactive colour.
    preview = update_track(spec, inactive, replicas)
    tracks = [active_track, preview]
    restarted = status.update_revision != update
    ready_since = None if restarted else status.preview_ready_time
    if not seen_inactive.ready_at(update, replicas) or replicas == 0:
        state = _with(base, preview_ready_time=None, scale_down_time=None)
        return Plan(
            tracks,
            services,
            state,
            progressing=True,
            selector_track=active,
            message=f"preview {inactive} starting revision {update}: {seen_inactive.ready_replicas}/{replicas} ready",
        )
    ready_since = ready_since or now
    promote_at = ready_since + timedelta(seconds=bg.auto_promotion_seconds)
    requested = actions.promote is not None
    automatic = bg.auto_promotion_enabled and now >= promote_at and not actions.paused
    if requested or automatic:
        scale_down = now + timedelta(seconds=bg.scale_down_delay_seconds)
        promoted = RolloutState(
            stable_revision=update,
            update_revision=update,
            active_track=inactive,
            preview_track=active,
            scale_down_time=scale_down,
        )
        return Plan(
            tracks=tracks,
            services={"": inactive, "-preview": active},
            state=promoted,
            events=[Event("Normal", "Promoted", f"revision {update} promoted: {inactive} is active")],
            requeue_at=scale_down,
            progressing=True,
            consumed=frozenset({"promote"}) if requested else frozenset(),
            message=f"promoted {update} to {inactive}",
            selector_track=inactive,
        )
    waiting = _with(base, preview_ready_time=ready_since, scale_down_time=None)
    if bg.auto_promotion_enabled and not actions.paused:
        return Plan(
            tracks,
            services,
            waiting,
            requeue_at=promote_at,
            progressing=True,
            selector_track=active,
            message=f"preview ready; promoting at {promote_at.isoformat()}",
        )
    return Plan(
        tracks,
        services,
        waiting,
        progressing=True,
        paused=True,
        selector_track=active,
        message="preview ready; waiting for the promote annotation",
    )


def _with(state: RolloutState, **changes: Any) -> RolloutState:
    return replace(state, **changes)


def replace_scale_down(state: RolloutState) -> RolloutState:
    return _with(state, scale_down_time=None)


def _aborted(state: RolloutState) -> RolloutState:
    return _with(state, aborted_revision=state.update_revision, preview_ready_time=None, scale_down_time=None)
