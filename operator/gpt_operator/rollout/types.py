"""Rollout state, plans and helpers shared by the strategies (pure).

Rollout strategies are pure state machines: `plan(spec, status, observed, now, ...) -> Plan`.

The whole rollout state lives in the GPTDeployment's status (`RolloutState`), so a restarted operator
continues where it was. Each call makes at most one transition and says when to look again.
Tracks that are not in `Plan.tracks` are pruned; a track kept at an older revision is re-rendered from the
template spec recorded on its Deployment (the current spec only describes the new revision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from gpt_operator.spec import GPTDeploymentSpec


@dataclass(frozen=True)
class TrackState:
    """What the cluster shows of one track's Deployment."""

    exists: bool = False
    revision: str | None = None
    template: dict[str, Any] | None = None  # the template spec it was rendered from
    replicas: int = 0  # pods of every template (status.replicas)
    ready_replicas: int = 0
    updated_replicas: int = 0  # pods of the latest template
    current: bool = True  # the Deployment controller has seen its latest generation
    failed: bool = False  # ProgressDeadlineExceeded
    spec_replicas: int | None = None  # the count the Deployment asks for (spec.replicas); None = unknown

    def ready_at(self, revision: str, replicas: int) -> bool:
        """The track runs `revision` with at least `replicas` ready pods."""
        return (
            self.exists
            and self.revision == revision
            and self.current
            and self.updated_replicas >= replicas
            and self.ready_replicas >= replicas
        )

    @property
    def rolled(self) -> bool:
        """The Deployment controller has seen the latest template and no pod of an older one is left.

        Only then may its replica count rise: raising it while older pods remain (or in the write that
        changes the template) makes the controller scale the old ReplicaSet up too, then surge new pods on top.
        """
        return self.exists and self.current and self.replicas <= self.updated_replicas

    @property
    def asked(self) -> int:
        """The replica count the Deployment asks for (its status count when the spec is unknown)."""
        return self.replicas if self.spec_replicas is None else self.spec_replicas


@dataclass(frozen=True)
class RolloutState:
    """The rollout part of the CR status (read at the start of a reconcile, written at its end)."""

    stable_revision: str | None = None
    update_revision: str | None = None
    aborted_revision: str | None = None
    active_track: str | None = None
    preview_track: str | None = None
    canary_weight: int | None = None
    current_step: int | None = None
    preview_ready_time: datetime | None = None
    scale_down_time: datetime | None = None
    next_transition_time: datetime | None = None


@dataclass(frozen=True)
class Actions:
    """What the user asked for with annotations."""

    promote: str | None = None  # None | "step" | "full"
    abort: bool = False
    retry: bool = False  # the strategies never see it: reconcile.retried_status resets the state instead
    paused: bool = False


@dataclass(frozen=True)
class TrackPlan:
    track: str
    revision: str
    template: dict[str, Any]
    replicas: int


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    tracks: list[TrackPlan]
    services: dict[str, str | None]  # service name suffix ("" main, "-preview", ...) -> track label or None (all)
    state: RolloutState
    events: list[Event] = field(default_factory=list)
    requeue_at: datetime | None = None
    progressing: bool = False
    paused: bool = False
    aborted: bool = False
    message: str = ""
    consumed: frozenset[str] = frozenset()  # actions used: "promote", "abort"
    selector_track: str | None = None  # the track the HPA measures (status.selector); None = all tracks


def update_track(spec: GPTDeploymentSpec, track: str, replicas: int) -> TrackPlan:
    return TrackPlan(track, spec.revision, spec.pod_template_spec(), replicas)


def kept_track(
    spec: GPTDeploymentSpec, observed: TrackState, track: str, revision: str | None, replicas: int
) -> TrackPlan:
    """A track that stays at the revision it runs (falls back to the current spec if it has none)."""
    if observed.exists and observed.template is not None and observed.revision:
        return TrackPlan(track, observed.revision, observed.template, replicas)
    return update_track(spec, track, replicas)


def hold_scale_up(track: TrackPlan, observed: TrackState) -> TrackPlan:
    """`track`, but no bigger than its Deployment asks for now while that Deployment changes template.

    A write that changes both the template and the count (or raises the count mid-rollout) scales the old
    ReplicaSet up before surging new pods: 4 replicas promoted from a 2-pod stable track would briefly run
    4 old + 1 new pods next to the canary. The count rises in a later reconcile, once `observed.rolled`.
    """
    if not observed.exists or track.replicas <= observed.asked:
        return track
    if track.revision != observed.revision or not observed.rolled:
        return replace(track, replicas=observed.asked)
    return track


def canary_split(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for a traffic weight by replica ratio, keeping the sum near `total`.

    The canary gets ceil(total * weight%), at least 1 when weight > 0; the stable track the rest, at least
    1 while weight < 100, so the HPA's count is split, never doubled (small totals may exceed it by one).
    """
    if total <= 0:
        return 0, 0
    canary = 0 if weight <= 0 else min(total, max(1, math.ceil(total * weight / 100)))
    stable = total - canary
    if weight < 100 and stable == 0:
        stable = 1
    return stable, canary
