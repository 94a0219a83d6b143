"""Canary analysis (pure): when to measure, what to ask Prometheus, and whether the answers fail.

A metric fails when its value is above its `max`. No data (an empty result) and query errors are
inconclusive: they neither fail nor pass the canary, and are reported in the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gpt_operator.spec import AnalysisSpec, GPTDeploymentSpec


@dataclass(frozen=True)
class Measurement:
    name: str
    max: float
    value: float | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.value is not None and self.value > self.max

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "max": self.max, "passed": not self.failed}
        if self.value is not None:
            out["value"] = self.value
        if self.error:
            out["error"] = self.error
        return out


def queries(analysis: AnalysisSpec, name: str, namespace: str) -> dict[str, str]:
    """Each metric's PromQL with `{{name}}` and `{{namespace}}` filled in."""
    return {m.name: m.query.replace("{{name}}", name).replace("{{namespace}}", namespace) for m in analysis.metrics}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def due(spec: GPTDeploymentSpec, status: dict[str, Any], now: datetime) -> bool:
    """Whether a canary of a new revision is running and its last measurement is older than the interval."""
    analysis = spec.rollout.canary.analysis
    if spec.rollout.strategy != "Canary" or analysis is None:
        return False
    update = spec.revision
    stable = status.get("stableRevision")
    if not stable or stable == update or status.get("abortedRevision") == update:
        return False
    last = status.get("analysis") or {}
    last_time = _parse_time(last.get("time"))
    if last.get("revision") == update and last_time is not None:
        return now >= last_time + timedelta(seconds=analysis.interval_seconds)
    return True


def status_entry(measurements: list[Measurement], revision: str, now: datetime) -> dict[str, Any]:
    return {
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revision": revision,
        "results": [m.wire() for m in measurements],
    }


def failure_message(measurements: list[Measurement]) -> str | None:
    failed = [m for m in measurements if m.failed]
    if not failed:
        return None
    return "; ".join(f"{m.name} = {m.value:g} > {m.max:g}" for m in failed)
