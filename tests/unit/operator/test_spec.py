"""Spec parsing: environment-derived defaults and cross-field validation."""

from __future__ import annotations

import re

import pytest
from gpt_operator.spec import parse_spec, problems_from_error, validate
from pydantic import ValidationError

pytestmark = pytest.mark.unit

MODEL = {"source": "builtin:tiny"}


def test_dev_defaults_are_spot_with_night_and_weekend_schedule() -> None:
    spec = parse_spec({"model": MODEL})
    assert spec.environment == "dev"
    assert spec.effective_capacity_type == "spot"
    assert spec.schedule is not None
    windows = [(w.days, w.start, w.end, w.end_day) for w in spec.schedule.off_windows]
    assert windows == [
        (["Mon", "Tue", "Wed", "Thu"], "20:00", "08:00", None),
        (["Fri"], "20:00", "08:00", "Mon"),
    ]
    assert not spec.hpa_enabled
    assert not spec.pdb_enabled
    assert spec.desired_replicas == 1


def test_prod_defaults_are_on_demand_autoscaled_with_pdb_and_no_schedule() -> None:
    spec = parse_spec({"environment": "prod", "model": MODEL})
    assert spec.effective_capacity_type == "on-demand"
    assert spec.schedule is None
    assert spec.hpa_enabled
    assert spec.autoscaling is not None
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (3, 10)
    assert spec.autoscaling.target_cpu_utilization_percentage == 70
    assert spec.autoscaling.target_memory_utilization_percentage == 80
    assert spec.pdb_enabled
    assert spec.desired_replicas == 3  # spec.replicas 1 is raised to minReplicas


def test_staging_is_spot_without_schedule() -> None:
    spec = parse_spec({"environment": "staging", "model": MODEL})
    assert spec.effective_capacity_type == "spot"
    assert spec.schedule is None


def test_explicit_empty_off_windows_disable_the_default_schedule() -> None:
    spec = parse_spec({"environment": "test", "model": MODEL, "schedule": {"offWindows": []}})
    assert spec.schedule is not None and spec.schedule.off_windows == []


def test_schedule_time_zone_kept_when_windows_defaulted() -> None:
    spec = parse_spec({"model": MODEL, "schedule": {"timeZone": "Europe/Berlin"}})
    assert spec.schedule is not None
    assert spec.schedule.time_zone == "Europe/Berlin"
    assert len(spec.schedule.off_windows) == 2


def test_explicit_capacity_type_wins_over_environment() -> None:
    spec = parse_spec({"environment": "prod", "model": MODEL, "capacity": {"type": "spot-with-fallback"}})
    assert spec.effective_capacity_type == "spot-with-fallback"


def test_replicas_clamped_to_autoscaling_bounds() -> None:
    spec = parse_spec({"model": MODEL, "replicas": 50, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}})
    assert spec.desired_replicas == 5


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"model": {"source": "ftp://x"}}, "model.source"),
        ({"model": MODEL, "environment": "qa"}, "environment"),
        ({"model": MODEL, "schedule": {"timeZone": "Mars/Olympus"}}, "unknown time zone"),
        ({"model": MODEL, "schedule": {"offWindows": [{"days": ["Mon"], "start": "25:00", "end": "08:00"}]}}, "HH:MM"),
        ({"model": MODEL, "resources": {"cpu": "lots"}}, "quantity"),
        ({"model": MODEL, "replicas": -1}, "replicas"),
        ({"model": MODEL, "rollout": {"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}}, "exactly one"),
        ({"model": MODEL, "bogus": 1}, "bogus"),
    ],
)
def test_bad_fields_are_rejected_with_their_path(raw: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_spec(raw)
    assert any(fragment in p for p in problems_from_error(info.value)), problems_from_error(info.value)


def test_validate_reports_cross_field_problems() -> None:
    spec = parse_spec(
        {
            "model": MODEL,
            "autoscaling": {"minReplicas": 5, "maxReplicas": 2},
            "schedule": {"offWindows": [{"days": ["Mon"], "start": "20:00", "end": "20:00"}]},
            "rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}},
        }
    )
    problems = validate(spec)
    assert any("minReplicas (5) must not exceed maxReplicas (2)" in p for p in problems)
    assert any("offWindows[0]: start and end must differ" in p for p in problems)
    assert any("must not decrease" in p for p in problems)


def test_validate_accepts_a_full_good_spec() -> None:
    spec = parse_spec(
        {
            "environment": "prod",
            "model": MODEL,
            "rollout": {
                "strategy": "Canary",
                "canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}]},
            },
            "schedule": {"offWindows": [{"days": ["Fri"], "start": "20:00", "end": "20:00", "endDay": "Sat"}]},
        }
    )
    assert validate(spec) == []


def test_revision_changes_with_pod_template_but_not_with_replicas() -> None:
    a = parse_spec({"model": MODEL, "replicas": 1})
    b = parse_spec({"model": MODEL, "replicas": 4})
    c = parse_spec({"model": {"source": "builtin:small"}})
    assert a.revision == b.revision
    assert a.revision != c.revision
    assert len(a.revision) == 10


def test_model_quantize_int8_is_for_the_builtin_engine_on_cpus_with_float32_weights() -> None:
    assert parse_spec({"model": {"source": "builtin:smollm2-135m", "quantize": "int8"}}).model.quantize == "int8"
    assert parse_spec({"model": {"source": "builtin:smollm2-135m"}}).model.quantize is None
    refused = {
        "model.quantize int8 replaces float32 weights": {
            "model": {"source": "builtin:smollm2-135m", "dtype": "bfloat16", "quantize": "int8"}
        },
        "model.quantize int8 is for the builtin engine on CPUs": {
            "model": {"source": "builtin:smollm2-135m", "quantize": "int8"},
            "engine": {"type": "llamacpp"},
        },
    }
    for message, spec in refused.items():
        with pytest.raises(ValidationError, match=re.escape(message)):
            parse_spec(spec)
    with pytest.raises(ValidationError, match=r"model\.quantize int8 is for the builtin engine on CPUs"):
        parse_spec({"model": {"source": "builtin:smollm2-135m", "quantize": "int8"}, "resources": {"gpu": 1}})
    with pytest.raises(ValidationError, match="quantize"):
        parse_spec({"model": {"source": "builtin:smollm2-135m", "quantize": "int4"}})
