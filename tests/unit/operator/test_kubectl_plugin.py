from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gpt_operator.kubectl_plugin import annotation_changes, describe, parse_duration

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 6, 21, 30, tzinfo=UTC)
GROUP = "serving.gpt-operator.dev"


def test_commands_map_to_the_operators_annotations():
    stamp = NOW.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert annotation_changes("promote", now=NOW) == {f"{GROUP}/promote": f"step@{stamp}"}
    assert annotation_changes("promote", full=True, now=NOW) == {f"{GROUP}/promote": f"full@{stamp}"}
    assert annotation_changes("abort", now=NOW) == {f"{GROUP}/abort": stamp}
    assert annotation_changes("pause", now=NOW) == {f"{GROUP}/paused": "true"}
    assert annotation_changes("resume", now=NOW) == {f"{GROUP}/paused": None}
    assert annotation_changes("wake", wake_for="90m", now=NOW) == {f"{GROUP}/wake-until": "2026-03-06T23:00:00Z"}
    with pytest.raises(ValueError, match="unknown"):
        annotation_changes("explode", now=NOW)


def test_durations():
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("45m") == timedelta(minutes=45)
    for bad in ("", "soon", "2x", "h"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_status_lines_show_the_rollout_position():
    text = describe(
        {
            "metadata": {"name": "chat"},
            "spec": {"environment": "prod", "rollout": {"strategy": "Canary"}},
            "status": {
                "phase": "Progressing",
                "replicas": 10,
                "readyReplicas": 9,
                "canaryWeight": 20,
                "currentStep": 1,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "CanaryStep"}],
            },
        }
    )
    assert "strategy:    Canary" in text and "phase:       Progressing" in text
    assert "replicas:    9/10 ready" in text and "canary:      20%" in text
    assert "condition:   Progressing (CanaryStep)" in text
