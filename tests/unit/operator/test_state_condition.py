"""Condition StateShared: staging/prod running on pod-local SQLite and in-memory limits is said loudly, once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gpt_operator.reconcile import desire
from gpt_operator.spec import parse_spec
from gpt_operator.status import STATE_SETTINGS, state_condition

pytestmark = pytest.mark.unit

NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday: awake in every environment
SHARED = [
    {"name": "GPT_DATABASE_URL", "value": "dynamodb://gpt-prod?region=eu-west-1"},
    {"name": "GPT_FILES_URL", "value": "s3://gpt-files/prod"},
    {"name": "GPT_QUEUE_URL", "value": "sqs://gpt-jobs"},
    {"name": "GPT_RATELIMIT_URL", "value": "redis://redis:6379/1"},
    {"name": "GPT_CACHE_URL", "value": "rediss://redis:6379/0"},
]


def condition_of(**fields):
    return state_condition(parse_spec({"model": {"source": "builtin:tiny"}, **fields}))


def body(spec: dict, generation: int = 1, status: dict | None = None) -> dict:
    return {
        "metadata": {"name": "chat", "namespace": "ml", "generation": generation, "uid": "u1"},
        "spec": {"model": {"source": "builtin:tiny"}, **spec},
        "status": status or {},
    }


def state_of(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "StateShared")


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_default_stores_outside_dev_are_pod_local_and_warned_about(environment: str) -> None:
    condition, warn = condition_of(environment=environment)
    assert (condition.status, condition.reason) == ("False", "PodLocalState")
    assert warn
    for key in STATE_SETTINGS:
        assert key in condition.message
    assert "GPT_DATABASE_URL=dynamodb://" in condition.message


def test_dev_with_one_replica_is_pod_local_but_quiet() -> None:
    condition, warn = condition_of(environment="dev")
    assert condition.status == "False"
    assert not warn


def test_several_replicas_on_sqlite_are_warned_about_even_in_dev() -> None:
    condition, warn = condition_of(environment="dev", replicas=3)
    assert warn
    assert condition.message.startswith("up to 3 replicas each keep their own SQLite database")
    condition, warn = condition_of(environment="test", autoscaling={"minReplicas": 1, "maxReplicas": 4})
    assert warn and "up to 4 replicas" in condition.message


def test_every_store_shared_is_true() -> None:
    condition, warn = condition_of(environment="prod", env=SHARED)
    assert (condition.status, condition.reason, warn) == ("True", "SharedStores", False)


def test_an_explicit_local_url_is_pod_local_even_with_a_secret() -> None:
    env = [*SHARED[1:], {"name": "GPT_DATABASE_URL", "value": "sqlite:////data/gpt.db"}]
    condition, warn = condition_of(environment="prod", env=env, secretRef={"name": "chat-secrets"})
    assert condition.status == "False" and warn
    assert "GPT_DATABASE_URL (accounts and conversations)" in condition.message
    assert "GPT_CACHE_URL" not in condition.message


def test_settings_that_may_be_in_the_secret_are_unknown_not_a_false_alarm() -> None:
    condition, warn = condition_of(environment="prod", env=SHARED[:2], secretRef={"name": "chat-secrets"})
    assert (condition.status, condition.reason, warn) == ("Unknown", "SetInSecret", False)
    assert "GPT_QUEUE_URL, GPT_RATELIMIT_URL, GPT_CACHE_URL not in spec.env" in condition.message
    assert "Secret chat-secrets" in condition.message
    assert "does not read" in condition.message


def test_reconcile_reports_the_condition_and_warns_once_per_generation() -> None:
    first = desire(body({"environment": "staging"}), [], NOON)
    assert state_of(first.status)["status"] == "False"
    warnings = [e for e in first.events if e.reason == "PodLocalState"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    # the timer's next pass, same generation: the condition stays, the event is not repeated
    again = desire(body({"environment": "staging"}, status=first.status), [], NOON)
    assert state_of(again.status) == state_of(first.status)
    assert not [e for e in again.events if e.reason == "PodLocalState"]
    # a new generation (any spec change) says it again
    changed = desire(body({"environment": "staging", "replicas": 1}, generation=2, status=again.status), [], NOON)
    assert [e.reason for e in changed.events].count("PodLocalState") == 1
    # fixed: True, and no event
    fixed = desire(body({"environment": "staging", "env": SHARED}, generation=3, status=changed.status), [], NOON)
    assert state_of(fixed.status)["status"] == "True"
    assert not [e for e in fixed.events if e.reason == "PodLocalState"]


def test_condition_types_are_unique_in_status() -> None:
    status = desire(body({"environment": "prod"}), [], NOON).status
    types = [c["type"] for c in status["conditions"]]
    assert len(types) == len(set(types))
    assert "StateShared" in types
