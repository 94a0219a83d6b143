"""Scale to zero when idle (spec.schedule.idle): the idle clock, the activator, and the client Service's switch,
through one reconcile at a time as a user would see them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gpt_operator.activity import parse_last_request
from gpt_operator.reconcile import activity_url, desire
from gpt_operator.schedule import evaluate
from gpt_operator.spec import IdleSpec, ScheduleSpec, default_off_windows, parse_spec, validate

from .test_reconcile import body, cluster_from, conditions

pytestmark = pytest.mark.unit
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday, inside the default working hours
# the client Service's selector of a RollingUpdate deployment: its pods
RUNTIME_PODS = {"serving.gpt-operator.dev/name": "demo", "serving.gpt-operator.dev/track": "main"}
IDLE = {"environment": "dev", "schedule": {"idle": {"sleepAfterSeconds": 600, "nodeSelector": {"pool": "cpu"}}}}


def by_kind_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def replicas(objects: list[dict]) -> list[int]:
    return [
        o["spec"]["replicas"] for o in objects if o["kind"] == "Deployment" and "activator" not in o["metadata"]["name"]
    ]


def test_idle_clock_sleeps_after_the_last_request_and_a_request_wakes() -> None:
    schedule = ScheduleSpec(idle=IdleSpec(sleep_after_seconds=600))
    last = NOON - timedelta(seconds=599)
    awake = evaluate(schedule, NOON, last_request=last)
    assert not awake.asleep and awake.next_transition == last + timedelta(seconds=600)
    asleep = evaluate(schedule, NOON + timedelta(seconds=1), last_request=last)
    assert asleep.asleep and asleep.reason == "Idle" and "the next request wakes it" in asleep.message
    # no scheduled wake: the operator's gpt_operator_wake_timestamp_seconds (and its "asleep past its wake time"
    # alert) must not take the next off window's start for one
    with_windows = ScheduleSpec(off_windows=default_off_windows(), idle=IdleSpec(sleep_after_seconds=600))
    assert evaluate(with_windows, NOON + timedelta(seconds=1), last_request=last).next_transition is None
    assert not evaluate(schedule, NOON + timedelta(seconds=1), last_request=NOON).asleep  # a request came
    woken = evaluate(schedule, NOON + timedelta(seconds=1), last_request=last, wake_until=NOON + timedelta(hours=1))
    assert not woken.asleep and woken.next_transition == NOON + timedelta(hours=1)  # idle again after the annotation
    assert not evaluate(ScheduleSpec(), NOON, last_request=last - timedelta(days=1)).asleep  # no idle: no idle sleep


def test_an_off_window_wins_over_the_idle_clock() -> None:
    schedule = ScheduleSpec(
        off_windows=[{"days": ["Wed"], "start": "11:00", "end": "13:00"}], idle={"sleepAfterSeconds": 600}
    )
    state = evaluate(schedule, NOON, last_request=NOON)
    assert state.asleep and state.reason == "OffWindow"


def test_a_new_idle_deployment_starts_its_clock_and_renders_the_activator() -> None:
    d = desire(body(IDLE), [], NOON)
    assert d.objects is not None and d.status["lastRequestTime"] == "2026-03-04T12:00:00Z"
    objects = by_kind_name(d.objects)
    activator = objects[("Deployment", "demo-activator")]
    pod = activator["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["nodeSelector"] == {"pool": "cpu"}
    assert "serving.gpt-operator.dev/name" not in activator["spec"]["template"]["metadata"]["labels"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["GPT_ACTIVATOR_UPSTREAM"] == "http://$(DEMO_RUNTIME_SERVICE_HOST):$(DEMO_RUNTIME_SERVICE_PORT)"
    assert objects[("Service", "demo-runtime")]["spec"]["selector"] == {"serving.gpt-operator.dev/name": "demo"}
    names = [(o["kind"], o["metadata"]["name"]) for o in d.objects]
    assert names.index(("Service", "demo-runtime")) < names.index(("Deployment", "demo-activator"))
    # no runtime pod is Ready yet: the client Service points at the activator, which holds requests
    assert objects[("Service", "demo")]["spec"]["selector"] == {"serving.gpt-operator.dev/activator": "demo"}


def test_the_client_service_goes_back_to_the_runtime_once_a_pod_is_ready() -> None:
    first = desire(body(IDLE), [], NOON)
    assert first.objects is not None
    ready = desire(body(IDLE, status=first.status), cluster_from(first.objects), NOON + timedelta(seconds=30))
    assert ready.objects is not None
    assert by_kind_name(ready.objects)[("Service", "demo")]["spec"]["selector"] == RUNTIME_PODS


def test_idle_sleep_zero_pods_activator_answers_then_a_held_request_wakes_it() -> None:
    first = desire(body(IDLE), [], NOON)
    assert first.objects is not None
    cluster = cluster_from(first.objects)
    # requests come in until 12:05, as the pods report through the client Service
    served = desire(
        body(IDLE, status=first.status), cluster, NOON + timedelta(minutes=6), None, NOON + timedelta(minutes=5)
    )
    assert served.status["lastRequestTime"] == "2026-03-04T12:05:00Z"
    assert served.requeue_at == NOON + timedelta(minutes=15)  # when the idle time is up
    # a pod whose clock runs ahead cannot push the idle time into the future
    ahead = desire(body(IDLE, status=first.status), cluster, NOON, None, NOON + timedelta(hours=1))
    assert ahead.status["lastRequestTime"] == "2026-03-04T12:00:00Z"

    asleep = desire(body(IDLE, status=served.status), cluster, NOON + timedelta(minutes=15, seconds=1))
    assert asleep.objects is not None and asleep.status["phase"] == "Sleeping"
    assert conditions(asleep.status)["Sleeping"]["reason"] == "Idle"
    assert replicas(asleep.objects) == [0]
    objects = by_kind_name(asleep.objects)
    assert objects[("Deployment", "demo-activator")]["spec"]["replicas"] == 1
    assert objects[("Service", "demo")]["spec"]["selector"] == {"serving.gpt-operator.dev/activator": "demo"}
    assert [e.reason for e in asleep.events] == ["Sleeping"]

    # the activator holds a request at 13:00: its gauge reads 13:00, the deployment wakes
    at = NOON + timedelta(hours=1)
    woke = desire(body(IDLE, status=asleep.status), cluster_from(asleep.objects), at, None, at)
    assert woke.objects is not None and replicas(woke.objects) == [1]
    assert [e.reason for e in woke.events] == ["Woken"]
    # the model is loading: the activator keeps the Service until a runtime pod is Ready
    loading = cluster_from(woke.objects, ready=False)
    still = desire(body(IDLE, status=woke.status), loading, at + timedelta(seconds=20))
    assert still.objects is not None
    assert by_kind_name(still.objects)[("Service", "demo")]["spec"]["selector"] == {
        "serving.gpt-operator.dev/activator": "demo"
    }


def test_an_off_window_leaves_the_service_on_the_runtime_not_the_activator() -> None:
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    d = desire(body(IDLE), [], saturday)
    assert d.objects is not None and conditions(d.status)["Sleeping"]["reason"] == "OffWindow"
    assert by_kind_name(d.objects)[("Service", "demo")]["spec"]["selector"] == RUNTIME_PODS


def test_turning_idle_off_removes_the_activator_and_the_clock() -> None:
    first = desire(body(IDLE), [], NOON)
    off = desire(body({"environment": "dev"}, status=first.status), cluster_from(first.objects or []), NOON)
    assert off.objects is not None and off.status["lastRequestTime"] is None
    assert not [
        o for o in off.objects if "activator" in o["metadata"]["name"] or o["metadata"]["name"] == "demo-runtime"
    ]


def test_prod_refuses_idle_sleep() -> None:
    spec = parse_spec(
        {"model": {"source": "builtin:tiny"}, "environment": "prod", "schedule": {"idle": {"sleepAfterSeconds": 600}}}
    )
    assert any("spec.schedule.idle" in p for p in validate(spec))


def test_activity_is_read_through_the_client_services_cluster_ip() -> None:
    services = [{"metadata": {"name": "demo"}, "spec": {"clusterIP": "198.19.0.7"}}]
    assert activity_url(body(IDLE), services) == "http://198.19.0.7:80/metrics"
    assert activity_url(body({"environment": "dev"}), services) is None  # no idle: nothing read
    assert activity_url(body(IDLE), []) is None  # no Service yet


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# HELP x\ngpt_last_request_timestamp_seconds 1.7725824e+09\n", datetime(2026, 3, 4, 0, 0, tzinfo=UTC)),
        ("gpt_last_request_timestamp_seconds 0.0\n", None),  # the activator before its first request
        ("gpt_last_request_timestamp_seconds_other 5\n", None),
        ("nothing here\n", None),
    ],
)
def test_the_gauge_is_read_from_the_metrics_text(text: str, expected: datetime | None) -> None:
    assert parse_last_request(text) == expected


def test_pods_whose_last_request_cannot_be_read_are_not_put_to_sleep() -> None:
    """A NetworkPolicy that keeps the operator out must not make a busy deployment sleep every few minutes."""
    first = desire(body(IDLE), [], NOON)
    assert first.objects is not None
    later = NOON + timedelta(hours=2)
    unread = desire(body(IDLE, status=first.status), cluster_from(first.objects), later, activity_read=False)
    assert unread.objects is not None and replicas(unread.objects) == [1]
    assert "cannot be read" in conditions(unread.status)["Sleeping"]["message"]
    # positive control: the same reconcile with the gauge read (no request since noon) sleeps
    read = desire(body(IDLE, status=first.status), cluster_from(first.objects), later)
    assert read.objects is not None and replicas(read.objects) == [0]
