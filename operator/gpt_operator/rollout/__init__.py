"""Rollout strategies as pure state machines: `plan(spec, status, observed, now, ...) -> Plan`.

See types.py for the state kept in the CR status; rolling.py, bluegreen.py and canary.py for the strategies.
"""

from __future__ import annotations

from datetime import datetime

from gpt_operator.rollout import bluegreen, canary, rolling
from gpt_operator.rollout.types import Actions, Event, Plan, RolloutState, TrackPlan, TrackState, canary_split
from gpt_operator.spec import GPTDeploymentSpec

__all__ = ["Actions", "Event", "Plan", "RolloutState", "TrackPlan", "TrackState", "canary_split", "plan"]

_STRATEGIES = {"RollingUpdate": rolling.plan, "BlueGreen": bluegreen.plan, "Canary": canary.plan}


def plan(
    spec: GPTDeploymentSpec,
    status: RolloutState,
    observed: dict[str, TrackState],
    now: datetime,
    *,
    replicas: int,
    actions: Actions = Actions(),
) -> Plan:
    """Dispatch to the spec's strategy. `replicas` is the total wanted now (0 while asleep)."""
    return _STRATEGIES[spec.rollout.strategy](spec, status, observed, now, replicas=replicas, actions=actions)
