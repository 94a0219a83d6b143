"""Rollout state machines, step by step: rolling update, blue-green and canary."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from gpt_operator.rollout import Actions, Plan, RolloutState, TrackState, canary_split, plan
from gpt_operator.spec import parse_spec

pytestmark = pytest.mark.unit
T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def spec_v(version: str, strategy: str, **rollout):
    return parse_spec(
        {
            "environment": "staging",
            "model": {"source": f"builtin:{version}"},
            "rollout": {"strategy": strategy, **rollout},
        }
    )


def converged(p: Plan, ready: bool = True) -> dict[str, TrackState]:
    """The cluster after the plan's Deployments rolled out (ready) or just got created (not ready)."""
    return {
        t.track: TrackState(
            exists=True,
            revision=t.revision,
            template=t.template,
            replicas=t.replicas,
            ready_replicas=t.replicas if ready else 0,
            updated_replicas=t.replicas if ready else 0,
            spec_replicas=t.replicas,
        )
        for t in p.tracks
    }


def sizes(p: Plan) -> dict[str, tuple[str, int]]:
    return {t.track: (t.revision, t.replicas) for t in p.tracks}


# ---------------------------------------------------------------- rolling update


def test_rolling_update_marks_stable_once_ready() -> None:
    v1 = spec_v("v1", "RollingUpdate")
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    assert sizes(p) == {"main": (v1.revision, 2)}
    assert p.progressing and p.state.stable_revision is None
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    assert not p.progressing and p.state.stable_revision == v1.revision
    assert [e.reason for e in p.events] == ["RolloutCompleted"]
    again = plan(v1, p.state, converged(p), T0, replicas=2)
    assert again.events == []  # nothing new to say


def test_rolling_update_pause_holds_the_running_template() -> None:
    v1, v2 = spec_v("v1", "RollingUpdate"), spec_v("v2", "RollingUpdate")
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    held = plan(v2, p.state, converged(p), T0, replicas=2, actions=Actions(paused=True))
    assert sizes(held) == {"main": (v1.revision, 2)}
    assert held.paused
    resumed = plan(v2, held.state, converged(p), T0, replicas=2)
    assert sizes(resumed) == {"main": (v2.revision, 2)}


# ---------------------------------------------------------------- blue-green


def test_blue_green_step_by_step_with_auto_promotion_and_scale_down_delay() -> None:
    bg = {"blueGreen": {"autoPromotionSeconds": 60, "scaleDownDelaySeconds": 30}}
    v1, v2 = spec_v("v1", "BlueGreen", **bg), spec_v("v2", "BlueGreen", **bg)

    # 1. first deploy goes straight to blue
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    assert sizes(p) == {"blue": (v1.revision, 2)}
    assert p.services == {"": "blue", "-preview": "green"}
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    assert p.state.stable_revision == v1.revision and p.state.active_track == "blue"
    cluster = converged(p)

    # 2. v2 goes to green at full size; blue keeps serving v1
    p = plan(v2, p.state, cluster, T0, replicas=2)
    assert sizes(p) == {"blue": (v1.revision, 2), "green": (v2.revision, 2)}
    assert p.services == {"": "blue", "-preview": "green"}
    assert p.progressing and p.state.preview_ready_time is None

    # 3. green ready: promotion waits autoPromotionSeconds
    cluster = converged(p)
    p = plan(v2, p.state, cluster, T0 + timedelta(seconds=10), replicas=2)
    assert p.state.preview_ready_time == T0 + timedelta(seconds=10)
    assert p.requeue_at == T0 + timedelta(seconds=70)
    assert p.services[""] == "blue"
    p = plan(v2, p.state, cluster, T0 + timedelta(seconds=69), replicas=2)
    assert p.services[""] == "blue"

    # 4. promoted at ready + 60 s: traffic switches to green, blue lingers for scaleDownDelaySeconds
    p = plan(v2, p.state, cluster, T0 + timedelta(seconds=70), replicas=2)
    assert p.services == {"": "green", "-preview": "blue"}
    assert p.state.active_track == "green" and p.state.stable_revision == v2.revision
    assert p.state.scale_down_time == T0 + timedelta(seconds=100)
    assert [e.reason for e in p.events] == ["Promoted"]
    p = plan(v2, p.state, cluster, T0 + timedelta(seconds=99), replicas=2)
    assert sizes(p) == {"green": (v2.revision, 2), "blue": (v1.revision, 2)}

    # 5. after the delay blue is gone (pruned)
    p = plan(v2, p.state, cluster, T0 + timedelta(seconds=100), replicas=2)
    assert sizes(p) == {"green": (v2.revision, 2)}
    assert p.state.scale_down_time is None and not p.progressing


def test_blue_green_manual_promotion_when_auto_is_off() -> None:
    bg = {"blueGreen": {"autoPromotionEnabled": False}}
    v1, v2 = spec_v("v1", "BlueGreen", **bg), spec_v("v2", "BlueGreen", **bg)
    p = plan(v1, RolloutState(), {}, T0, replicas=1)
    p = plan(v1, p.state, converged(p), T0, replicas=1)
    p = plan(v2, p.state, converged(p), T0, replicas=1)
    cluster = converged(p)
    waiting = plan(v2, p.state, cluster, T0 + timedelta(hours=5), replicas=1)
    assert waiting.paused and waiting.services[""] == "blue"
    promoted = plan(v2, waiting.state, cluster, T0 + timedelta(hours=5), replicas=1, actions=Actions(promote="step"))
    assert promoted.services[""] == "green"
    assert promoted.consumed == frozenset({"promote"})


def test_blue_green_abort_before_promotion_drops_the_preview_until_the_spec_changes() -> None:
    v1, v2, v3 = (spec_v(v, "BlueGreen", blueGreen={"autoPromotionEnabled": False}) for v in ("v1", "v2", "v3"))
    p = plan(v1, RolloutState(), {}, T0, replicas=1)
    p = plan(v1, p.state, converged(p), T0, replicas=1)
    p = plan(v2, p.state, converged(p), T0, replicas=1)
    aborted = plan(v2, p.state, converged(p), T0, replicas=1, actions=Actions(abort=True))
    assert sizes(aborted) == {"blue": (v1.revision, 1)}
    assert aborted.aborted and aborted.state.aborted_revision == v2.revision
    assert [e.reason for e in aborted.events] == ["RolloutAborted"]
    still = plan(v2, aborted.state, converged(aborted), T0, replicas=1)
    assert still.aborted and sizes(still) == {"blue": (v1.revision, 1)}
    retry = plan(v3, still.state, converged(still), T0, replicas=1)
    assert not retry.aborted and sizes(retry)["green"] == (v3.revision, 1)


def test_blue_green_abort_after_promotion_switches_back_during_scale_down_delay() -> None:
    v1, v2 = spec_v("v1", "BlueGreen"), spec_v("v2", "BlueGreen")
    p = plan(v1, RolloutState(), {}, T0, replicas=1)
    p = plan(v1, p.state, converged(p), T0, replicas=1)
    p = plan(v2, p.state, converged(p), T0, replicas=1)
    cluster = converged(p)
    p = plan(v2, p.state, cluster, T0, replicas=1)  # ready and autoPromotionSeconds 0: promoted
    assert p.services[""] == "green"
    back = plan(v2, p.state, cluster, T0 + timedelta(seconds=5), replicas=1, actions=Actions(abort=True))
    assert back.services == {"": "blue", "-preview": "green"}
    assert back.state.stable_revision == v1.revision and back.state.aborted_revision == v2.revision
    assert sizes(back) == {"blue": (v1.revision, 1)}


def test_blue_green_new_revision_during_preview_restarts_readiness() -> None:
    bg = {"blueGreen": {"autoPromotionSeconds": 60}}
    v1, v2, v3 = (spec_v(v, "BlueGreen", **bg) for v in ("v1", "v2", "v3"))
    p = plan(v1, RolloutState(), {}, T0, replicas=1)
    p = plan(v1, p.state, converged(p), T0, replicas=1)
    p = plan(v2, p.state, converged(p), T0, replicas=1)
    p = plan(v2, p.state, converged(p), T0, replicas=1)
    assert p.state.preview_ready_time == T0
    p3 = plan(v3, p.state, converged(p), T0 + timedelta(seconds=61), replicas=1)
    assert p3.services[""] == "blue"  # the v2 readiness does not promote v3
    assert sizes(p3)["green"] == (v3.revision, 1)


# ---------------------------------------------------------------- canary


def test_canary_split_keeps_the_total() -> None:
    assert canary_split(10, 20) == (8, 2)
    assert canary_split(10, 50) == (5, 5)
    assert canary_split(3, 20) == (2, 1)
    assert canary_split(1, 20) == (1, 1)  # one more than the total: a canary needs a pod
    assert canary_split(4, 100) == (0, 4)
    assert canary_split(4, 0) == (4, 0)
    assert canary_split(0, 50) == (0, 0)


def test_canary_step_by_step() -> None:
    steps = {"canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": 120}}, {"setWeight": 50}, {"pause": {}}]}}
    v1, v2 = spec_v("v1", "Canary", **steps), spec_v("v2", "Canary", **steps)
    p = plan(v1, RolloutState(), {}, T0, replicas=4)
    assert sizes(p) == {"stable": (v1.revision, 4)}
    p = plan(v1, p.state, converged(p), T0, replicas=4)
    assert p.state.stable_revision == v1.revision

    # step 0: setWeight 25 -> 3 stable + 1 canary; waits until the canary is ready
    p = plan(v2, p.state, converged(p), T0, replicas=4)
    assert sizes(p) == {"stable": (v1.revision, 3), "canary": (v2.revision, 1)}
    assert p.state.current_step == 0 and p.state.canary_weight == 25
    assert p.services == {"": None, "-stable": "stable", "-canary": "canary"}
    p = plan(v2, p.state, converged(p, ready=False), T0, replicas=4)
    assert p.state.current_step == 0
    p = plan(v2, p.state, converged(p), T0, replicas=4)
    assert p.state.current_step == 1

    # step 1: pause 120 s
    p = plan(v2, p.state, converged(p), T0 + timedelta(seconds=1), replicas=4)
    assert p.state.next_transition_time == T0 + timedelta(seconds=121)
    assert p.requeue_at == T0 + timedelta(seconds=121)
    p = plan(v2, p.state, converged(p), T0 + timedelta(seconds=120), replicas=4)
    assert p.state.current_step == 1
    p = plan(v2, p.state, converged(p), T0 + timedelta(seconds=121), replicas=4)
    assert p.state.current_step == 2

    # step 2: setWeight 50 -> 2 + 2
    p = plan(v2, p.state, converged(p), T0 + timedelta(seconds=122), replicas=4)
    assert sizes(p) == {"stable": (v1.revision, 2), "canary": (v2.revision, 2)}
    p = plan(v2, p.state, converged(p), T0 + timedelta(seconds=123), replicas=4)
    assert p.state.current_step == 3

    # step 3: pause without duration waits for promote
    p = plan(v2, p.state, converged(p), T0 + timedelta(hours=3), replicas=4)
    assert p.paused and p.state.current_step == 3
    p = plan(v2, p.state, converged(p), T0 + timedelta(hours=3), replicas=4, actions=Actions(promote="step"))
    assert p.state.current_step == 4 and p.consumed == frozenset({"promote"})

    # after the last step: stable takes v2 at its size while the canary keeps serving, then grows, then
    # the canary goes
    p = plan(v2, p.state, converged(p), T0 + timedelta(hours=3), replicas=4)
    assert sizes(p) == {"stable": (v2.revision, 2), "canary": (v2.revision, 2)}
    assert p.state.canary_weight == 100
    p = plan(v2, p.state, converged(p), T0 + timedelta(hours=3), replicas=4)
    assert sizes(p) == {"stable": (v2.revision, 4), "canary": (v2.revision, 2)}
    p = plan(v2, p.state, converged(p), T0 + timedelta(hours=3), replicas=4)
    assert sizes(p) == {"stable": (v2.revision, 4)}
    assert p.state.stable_revision == v2.revision and p.state.current_step is None
    assert [e.reason for e in p.events] == ["RolloutCompleted"]


def test_canary_abort_returns_everything_to_stable() -> None:
    v1, v2 = spec_v("v1", "Canary"), spec_v("v2", "Canary")
    p = plan(v1, RolloutState(), {}, T0, replicas=5)
    p = plan(v1, p.state, converged(p), T0, replicas=5)
    p = plan(v2, p.state, converged(p), T0, replicas=5)
    assert sizes(p) == {"stable": (v1.revision, 4), "canary": (v2.revision, 1)}
    p = plan(v2, p.state, converged(p), T0, replicas=5, actions=Actions(abort=True))
    assert sizes(p) == {"stable": (v1.revision, 5)}
    assert p.aborted and p.state.aborted_revision == v2.revision and p.state.canary_weight == 0


def test_canary_promote_full_skips_the_remaining_steps() -> None:
    v1, v2 = spec_v("v1", "Canary"), spec_v("v2", "Canary")
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    p = plan(v2, p.state, converged(p), T0, replicas=2, actions=Actions(promote="full"))
    assert sizes(p) == {"stable": (v2.revision, 1), "canary": (v2.revision, 1)}
    assert p.consumed == frozenset({"promote"})
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    assert sizes(p) == {"stable": (v2.revision, 2), "canary": (v2.revision, 1)}
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    assert sizes(p) == {"stable": (v2.revision, 2)} and p.state.stable_revision == v2.revision


def test_canary_paused_annotation_holds_the_step() -> None:
    v1, v2 = spec_v("v1", "Canary"), spec_v("v2", "Canary")
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    held = plan(v2, p.state, converged(p), T0, replicas=2, actions=Actions(paused=True))
    assert held.paused and held.state.current_step == 0


def test_canary_new_revision_mid_rollout_restarts_the_steps() -> None:
    v1, v2, v3 = (spec_v(v, "Canary") for v in ("v1", "v2", "v3"))
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    assert p.state.current_step == 1
    p = plan(v3, p.state, converged(p), T0, replicas=2)
    assert p.state.current_step == 0 and sizes(p)["canary"] == (v3.revision, 1)
    assert sizes(p)["stable"] == (v1.revision, 1)


def test_rollout_state_survives_a_restart() -> None:
    """The plan depends only on the saved state and the cluster: the same inputs give the same plan."""
    v1, v2 = spec_v("v1", "Canary"), spec_v("v2", "Canary")
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    p = plan(v2, p.state, converged(p), T0, replicas=2)
    first = plan(v2, p.state, converged(p), T0 + timedelta(seconds=5), replicas=2)
    second = plan(v2, p.state, converged(p), T0 + timedelta(seconds=5), replicas=2)
    assert first == second


def test_asleep_rollout_keeps_tracks_at_zero_without_progress() -> None:
    v1, v2 = spec_v("v1", "Canary"), spec_v("v2", "Canary")
    p = plan(v1, RolloutState(), {}, T0, replicas=2)
    p = plan(v1, p.state, converged(p), T0, replicas=2)
    asleep = plan(v2, p.state, converged(p), T0, replicas=0)
    assert all(n == 0 for _, n in sizes(asleep).values())
    asleep2 = plan(v2, asleep.state, converged(asleep), T0, replicas=0)
    assert asleep2.state.current_step == 0  # a ready 0-pod canary is not progress


# ---------------------------------------------------------------- canary full promotion on a simulated cluster


def test_spec_change_before_the_promotion_is_recorded_keeps_the_promoted_stable_revision() -> None:
    """The stable track rolled to v2 (promotion), but the spec moved to v3 before a reconcile wrote
    stableRevision=v2: v2 is the stable revision, and v3 is a canary against it."""
    v1, v2, v3 = (spec_v(v, "Canary") for v in ("v1", "v2", "v3"))
    p = plan(v1, RolloutState(), {}, T0, replicas=4)
    p = plan(v1, p.state, converged(p), T0, replicas=4)
    p = plan(v2, p.state, converged(p), T0, replicas=4)
    while p.state.stable_revision != v2.revision:  # promote, then let the cluster catch up
        promoting = p
        p = plan(v2, p.state, converged(p), T0, replicas=4, actions=Actions(promote="full"))
    assert promoting.state.stable_revision == v1.revision  # the status the v3 reconcile reads
    cluster = converged(promoting)
    assert cluster["stable"].revision == v2.revision

    p = plan(v3, promoting.state, cluster, T0, replicas=4)
    assert p.state.stable_revision == v2.revision
    assert sizes(p) == {"stable": (v2.revision, 3), "canary": (v3.revision, 1)}
    assert p.state.current_step == 0 and p.state.update_revision == v3.revision
    assert [e.reason for e in p.events] == ["RolloutCompleted"]
    aborted = plan(v3, p.state, converged(p), T0, replicas=4, actions=Actions(abort=True))
    assert aborted.state.stable_revision == v2.revision
    assert sizes(aborted) == {"stable": (v2.revision, 4)}


def test_a_stable_track_still_rolling_is_not_the_stable_revision_yet() -> None:
    v1, v2, v3 = (spec_v(v, "Canary") for v in ("v1", "v2", "v3"))
    p = plan(v1, RolloutState(), {}, T0, replicas=4)
    p = plan(v1, p.state, converged(p), T0, replicas=4)
    p = plan(v2, p.state, converged(p), T0, replicas=4)
    p = plan(v2, p.state, converged(p), T0, replicas=4, actions=Actions(promote="full"))
    assert sizes(p)["stable"] == (v2.revision, 3)
    rolling = converged(p)
    rolling["stable"] = replace(rolling["stable"], replicas=4, updated_replicas=2, ready_replicas=4)  # 2 old left
    p3 = plan(v3, p.state, rolling, T0, replicas=4)
    assert p3.state.stable_revision == v1.revision and p3.events == []
    assert sizes(p3) == {"stable": (v2.revision, 3), "canary": (v3.revision, 1)}  # it keeps rolling to v2
    rolling["stable"] = replace(rolling["stable"], replicas=3, updated_replicas=3, ready_replicas=3)
    assert plan(v3, p3.state, rolling, T0, replicas=4).state.stable_revision == v2.revision


def test_abort_is_ignored_once_the_stable_track_took_the_new_revision() -> None:
    v1, v2 = spec_v("v1", "Canary"), spec_v("v2", "Canary")
    p = plan(v1, RolloutState(), {}, T0, replicas=4)
    p = plan(v1, p.state, converged(p), T0, replicas=4)
    p = plan(v2, p.state, converged(p), T0, replicas=4)
    before = converged(p)
    p = plan(v2, p.state, before, T0, replicas=4, actions=Actions(promote="full"))
    # the stable track has not taken v2 yet: abort still returns to v1
    early = plan(v2, p.state, before, T0, replicas=4, actions=Actions(abort=True))
    assert early.aborted and sizes(early) == {"stable": (v1.revision, 4)}
    p = plan(v2, p.state, converged(p), T0, replicas=4, actions=Actions(abort=True))
    assert not p.aborted and p.state.aborted_revision is None
    assert p.consumed == frozenset({"abort"}) and [e.reason for e in p.events] == ["AbortIgnored"]
    assert sizes(p)["stable"] == (v2.revision, 4)


class SimDeployment:
    """One track's Deployment as the Deployment controller sizes its ReplicaSets (maxSurge 25%,
    maxUnavailable 0): on a scaling event `scale()` resizes the active ReplicaSets (the only one outright,
    even when the template just changed and the new one does not exist yet); otherwise `rolloutRolling`
    surges the newest one and removes old pods as new ones are ready. Pods are ready one sync after creation."""

    def __init__(self) -> None:
        self.revision = ""
        self.template: dict = {}
        self.replicas = 0
        self.sets: dict[str, int] = {}  # ReplicaSet (revision) -> pods, oldest first
        self.ready: dict[str, int] = {}
        self.synced = 0  # the deployment.kubernetes.io/desired-replicas annotation on its ReplicaSets
        self.current = True

    def write(self, revision: str, template: dict, replicas: int) -> None:
        if (revision, replicas) != (self.revision, self.replicas):
            self.current = False
        self.revision, self.template, self.replicas = revision, template, replicas

    def sync(self) -> None:
        surge = math.ceil(self.replicas * 0.25)
        active = [r for r, n in self.sets.items() if n > 0]
        if active and self.replicas != self.synced:  # scaling event
            if len(active) == 1:
                self.sets[active[0]] = self.replicas
            else:  # proportional, the rounding leftover to the newest
                total = sum(self.sets.values())
                add = self.replicas + surge - total
                for r in active:
                    self.sets[r] += add * self.sets[r] // total
                self.sets[active[-1]] += self.replicas + surge - sum(self.sets.values())
        else:
            self.sets.setdefault(self.revision, 0)
            self.sets[self.revision] = self.sets.pop(self.revision)  # newest last
            new = self.sets[self.revision]
            total = sum(self.sets.values())
            if new < self.replicas:
                self.sets[self.revision] += max(0, min(self.replicas + surge - total, self.replicas - new))
            else:
                self.sets[self.revision] = self.replicas
            unavailable = self.sets[self.revision] - self.ready.get(self.revision, 0)
            removable = sum(self.sets.values()) - self.replicas - unavailable
            for r in [r for r in self.sets if r != self.revision]:
                down = max(0, min(self.sets[r], removable))
                self.sets[r] -= down
                removable -= down
        self.ready = {r: min(n, self.ready.get(r, 0)) for r, n in self.sets.items()}
        self.synced, self.current = self.replicas, True

    def tick(self) -> None:
        self.ready = dict(self.sets)

    def state(self) -> TrackState:
        return TrackState(
            exists=True,
            revision=self.revision,
            template=self.template,
            replicas=sum(self.sets.values()),
            ready_replicas=sum(self.ready.values()),
            updated_replicas=self.sets.get(self.revision, 0),
            current=self.current,
            spec_replicas=self.replicas,
        )


def run_on_simulated_cluster(
    spec, state: RolloutState, cluster: dict[str, SimDeployment], replicas: int, actions: Actions, rounds: int = 30
) -> tuple[RolloutState, int, list[Plan]]:
    """Reconcile `rounds` times, the controller syncing twice between reconciles; (state, peak pods, plans)."""
    peak, plans = 0, []
    for i in range(rounds):
        observed = {t: d.state() for t, d in cluster.items()}
        p = plan(spec, state, observed, T0, replicas=replicas, actions=actions if i == 0 else Actions())
        plans.append(p)
        for track in p.tracks:
            cluster.setdefault(track.track, SimDeployment()).write(track.revision, track.template, track.replicas)
        for gone in set(cluster) - {t.track for t in p.tracks}:
            del cluster[gone]
        for _ in range(2):
            for d in cluster.values():
                d.sync()
            peak = max(peak, sum(sum(d.sets.values()) for d in cluster.values()))
            for d in cluster.values():
                d.tick()
        state = p.state
    return state, peak, plans


@pytest.mark.parametrize(("replicas", "weight"), [(4, 50), (10, 30), (10, 10), (2, 50)])
def test_full_promotion_never_scales_the_old_replica_set_up(replicas: int, weight: int) -> None:
    """Promoting a canary never runs more pods than the stable track rolling at its size (plus its surge)
    or the full count, next to the canary: for 4 replicas at 50%, 6 pods, where changing the stable
    track's template and size in one write ran 4 old + 1 new + 2 canary."""
    steps = {"canary": {"steps": [{"setWeight": weight}, {"pause": {}}]}}
    v1, v2 = spec_v("v1", "Canary", **steps), spec_v("v2", "Canary", **steps)
    cluster: dict[str, SimDeployment] = {}
    state, _, _ = run_on_simulated_cluster(v1, RolloutState(), cluster, replicas, Actions(), rounds=5)
    state, _, _ = run_on_simulated_cluster(v2, state, cluster, replicas, Actions(), rounds=5)
    stable, canary = canary_split(replicas, weight)
    assert {t: d.state().ready_replicas for t, d in cluster.items()} == {"stable": stable, "canary": canary}
    assert state.current_step == 1

    state, peak, plans = run_on_simulated_cluster(v2, state, cluster, replicas, Actions(promote="full"))
    assert state.stable_revision == v2.revision
    assert {t: (d.revision, d.state().ready_replicas) for t, d in cluster.items()} == {
        "stable": (v2.revision, replicas)
    }
    assert peak <= max(stable + math.ceil(stable * 0.25), replicas) + canary
    if (replicas, weight) == (4, 50):
        assert peak == 6
    # and in no write does a track change template and grow at once
    for before, after in itertools.pairwise(plans):
        old = {t.track: t for t in before.tracks}
        for t in after.tracks:
            if t.track in old and t.revision != old[t.track].revision:
                assert t.replicas <= old[t.track].replicas


def _ready(objects: list[dict] | None) -> list[dict]:
    """The rendered Deployments, rolled out and ready at their size."""
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


def test_reconcile_names_the_promoted_stable_revision_after_a_spec_change_in_the_window() -> None:
    """Through reconcile.desire, with the status and Deployments as the API server returns them."""
    from gpt_operator.naming import PROMOTE_ANNOTATION
    from gpt_operator.reconcile import desire

    def body(version: str, status: dict, annotations: dict | None = None) -> dict:
        spec = {
            "environment": "staging",
            "replicas": 4,
            "model": {"source": f"builtin:{version}"},
            "rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        }
        meta = {"name": "chat", "namespace": "ml", "generation": 1, "annotations": annotations or {}}
        return {"metadata": meta, "spec": spec, "status": status}

    d = desire(body("v1", {}), [], T0)
    d = desire(body("v1", d.status), _ready(d.objects), T0)
    for _ in range(3):  # to the pause step at 50%
        d = desire(body("v2", d.status), _ready(d.objects), T0)
    assert d.status["phase"] == "Paused" and d.status["canaryWeight"] == 50
    promoting = desire(body("v2", d.status, {PROMOTE_ANNOTATION: "full"}), _ready(d.objects), T0)
    stable = next(o for o in promoting.objects or [] if o["metadata"]["name"] == "chat-stable")
    v2 = stable["metadata"]["labels"]["serving.gpt-operator.dev/revision"]
    assert stable["spec"]["replicas"] == 2  # the template changes at the size the track has
    assert promoting.status["stableRevision"] != v2

    # the stable track rolled to v2; the spec changes to v3 before any reconcile records it
    after = desire(body("v3", promoting.status), _ready(promoting.objects), T0)
    assert after.status["stableRevision"] == v2
    assert after.status["updateRevision"] not in (v2, promoting.status["stableRevision"])
    assert {o["metadata"]["name"]: o["spec"]["replicas"] for o in after.objects or [] if o["kind"] == "Deployment"} == {
        "chat-stable": 2,
        "chat-canary": 2,
    }


def test_a_deployment_mid_rollout_is_not_raised() -> None:
    from gpt_operator.reconcile import track_state
    from gpt_operator.rollout.types import TrackPlan, hold_scale_up

    labels = {"serving.gpt-operator.dev/track": "stable", "serving.gpt-operator.dev/revision": "r2"}
    rolling = track_state(
        {
            "metadata": {"labels": labels, "generation": 3},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 3},
        }
    )
    assert rolling.spec_replicas == 2 and rolling.asked == 2 and not rolling.rolled
    assert hold_scale_up(TrackPlan("stable", "r2", {}, 4), rolling).replicas == 2  # old pods left
    assert hold_scale_up(TrackPlan("stable", "r3", {}, 4), rolling).replicas == 2  # a new template
    assert hold_scale_up(TrackPlan("stable", "r2", {}, 1), rolling).replicas == 1  # shrinking is fine
    rolled = replace(rolling, replicas=2, updated_replicas=2)
    assert rolled.rolled
    assert hold_scale_up(TrackPlan("stable", "r2", {}, 4), rolled).replicas == 4
    assert hold_scale_up(TrackPlan("stable", "r3", {}, 4), rolled).replicas == 2  # template and size: not at once
    unseen = replace(rolled, current=False)  # the controller has not seen the last write yet
    assert hold_scale_up(TrackPlan("stable", "r2", {}, 4), unseen).replicas == 2
    assert hold_scale_up(TrackPlan("stable", "r2", {}, 4), TrackState()).replicas == 4  # a new Deployment
