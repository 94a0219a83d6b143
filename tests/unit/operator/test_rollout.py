"""Rollout state machines, step by step: rolling update, blue-green and canary."""

from __future__ import annotations

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

    # after the last step: stable takes v2 while the canary keeps serving, then the canary goes
    p = plan(v2, p.state, converged(p), T0 + timedelta(hours=3), replicas=4)
    assert sizes(p) == {"stable": (v2.revision, 4), "canary": (v2.revision, 2)}
    assert p.state.canary_weight == 100
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
    assert sizes(p)["stable"] == (v2.revision, 2)
    assert p.consumed == frozenset({"promote"})


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
