"""One reconcile as a user sees it: children, status conditions and phase, events, annotations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gpt_operator.reconcile import desire, track_state

pytestmark = pytest.mark.unit
WEDNESDAY_NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
SATURDAY_NOON = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def body(spec: dict, status: dict | None = None, annotations: dict | None = None, generation: int = 1) -> dict:
    return {
        "apiVersion": "serving.gpt-operator.dev/v1alpha1",
        "kind": "GPTDeployment",
        "metadata": {"name": "demo", "namespace": "ml", "generation": generation, "annotations": annotations or {}},
        "spec": {"model": {"source": "builtin:tiny"}, **spec},
        "status": status or {},
    }


def cluster_from(objects: list[dict], ready: bool = True) -> list[dict]:
    """Deployments as the API would return them after the controller caught up."""
    out = []
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        n = obj["spec"]["replicas"]
        out.append(
            {
                **obj,
                "metadata": {**obj["metadata"], "generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "replicas": n,
                    "readyReplicas": n if ready else 0,
                    "updatedReplicas": n if ready else 0,
                },
            }
        )
    return out


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_first_reconcile_creates_children_and_reports_pending() -> None:
    d = desire(body({"environment": "staging"}), [], WEDNESDAY_NOON)
    assert d.objects is not None
    # staging runs on spot: a PDB makes node drains (interruption, consolidation) take one pod at a time
    assert [o["kind"] for o in d.objects] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    assert d.status["phase"] == "Pending"
    assert d.status["observedGeneration"] == 1
    assert d.status["ready"] == "0/1"
    assert d.status["capacityType"] == "spot"
    assert d.status["selector"] == "serving.gpt-operator.dev/name=demo,serving.gpt-operator.dev/track=main"
    assert d.status["jwtSecret"] == "demo-jwt"
    assert "Secret" not in [o["kind"] for o in d.objects]  # made once by apply.py, never rendered or pruned
    cond = conditions(d.status)
    assert cond["Ready"]["status"] == "False"
    assert cond["Progressing"]["status"] == "True"
    assert all(c["lastTransitionTime"] == "2026-03-04T12:00:00Z" for c in d.status["conditions"])


def test_ready_pods_make_it_available_and_keep_transition_times() -> None:
    first = desire(body({"environment": "staging"}), [], WEDNESDAY_NOON)
    assert first.objects is not None
    later = WEDNESDAY_NOON + timedelta(minutes=3)
    d = desire(body({"environment": "staging"}, status=first.status), cluster_from(first.objects), later)
    assert d.status["phase"] == "Available"
    assert d.status["ready"] == "1/1" and d.status["readyReplicas"] == 1
    cond = conditions(d.status)
    assert cond["Ready"]["status"] == "True"
    assert cond["Ready"]["lastTransitionTime"] == "2026-03-04T12:03:00Z"
    assert cond["Degraded"]["lastTransitionTime"] == "2026-03-04T12:00:00Z"  # unchanged status keeps its time
    assert [e.reason for e in d.events] == ["RolloutCompleted"]


def test_invalid_spec_leaves_children_alone_and_says_why() -> None:
    d = desire(
        body({"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}, status={"stableRevision": "abc"}),
        [],
        WEDNESDAY_NOON,
    )
    assert d.objects is None
    assert d.status["phase"] == "Degraded"
    assert d.status["stableRevision"] == "abc"  # rollout state is kept
    degraded = conditions(d.status)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
    assert "minReplicas (4) must not exceed maxReplicas (2)" in degraded["message"]
    assert d.events[0].type == "Warning" and d.events[0].reason == "InvalidSpec"


def test_invalid_spec_event_is_posted_once_per_generation() -> None:
    """Every resync used to post a new Warning (every 10 s, forever)."""
    bad = {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}
    first = desire(body(bad), [], WEDNESDAY_NOON)
    assert [e.reason for e in first.events] == ["InvalidSpec"]
    again = desire(body(bad, status=first.status), [], WEDNESDAY_NOON)
    assert again.events == [] and again.status == first.status
    worse = {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}
    changed = desire(body(worse, status=first.status, generation=2), [], WEDNESDAY_NOON)
    assert [e.reason for e in changed.events] == ["InvalidSpec"]


def test_schema_error_is_reported_with_its_field() -> None:
    d = desire(body({"model": {"source": "ftp://x"}}), [], WEDNESDAY_NOON)
    assert d.objects is None
    assert "spec.model.source" in conditions(d.status)["Degraded"]["message"]


def test_dev_sleeps_at_the_weekend_with_zero_replicas_and_no_hpa() -> None:
    spec = {"environment": "dev", "replicas": 3, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}}
    awake = desire(body(spec), [], WEDNESDAY_NOON)
    assert awake.objects is not None
    assert "HorizontalPodAutoscaler" in [o["kind"] for o in awake.objects]
    d = desire(body(spec, status=awake.status), cluster_from(awake.objects), SATURDAY_NOON)
    assert d.objects is not None
    kinds = [o["kind"] for o in d.objects]
    assert "HorizontalPodAutoscaler" not in kinds
    assert all(o["spec"]["replicas"] == 0 for o in d.objects if o["kind"] == "Deployment")
    assert d.status["phase"] == "Sleeping"
    assert d.status["savedReplicas"] == 3
    assert d.status["nextTransitionTime"] == "2026-03-09T08:00:00Z"
    sleeping = conditions(d.status)["Sleeping"]
    assert sleeping["status"] == "True" and sleeping["reason"] == "OffWindow"
    assert [e.reason for e in d.events] == ["Sleeping"]
    assert d.requeue_at == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)

    monday = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    woke = desire(body(spec, status=d.status), cluster_from(d.objects), monday)
    assert woke.objects is not None
    assert [o["spec"]["replicas"] for o in woke.objects if o["kind"] == "Deployment"] == [3]
    assert "HorizontalPodAutoscaler" in [o["kind"] for o in woke.objects]
    assert [e.reason for e in woke.events] == ["Woken"]


def test_wake_until_annotation_wakes_a_sleeping_deployment() -> None:
    annotations = {"serving.gpt-operator.dev/wake-until": "2026-03-07T15:00:00Z"}
    d = desire(body({"environment": "test"}, annotations=annotations), [], SATURDAY_NOON)
    assert d.objects is not None
    assert [o["spec"]["replicas"] for o in d.objects if o["kind"] == "Deployment"] == [1]
    assert conditions(d.status)["Sleeping"]["reason"] == "WokenByAnnotation"
    assert d.requeue_at == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)


def test_suspend_stops_a_prod_deployment_by_hand() -> None:
    d = desire(body({"environment": "prod", "suspend": True}), [], WEDNESDAY_NOON)
    assert d.objects is not None
    assert [o["spec"]["replicas"] for o in d.objects if o["kind"] == "Deployment"] == [0]
    assert conditions(d.status)["Sleeping"]["reason"] == "Suspended"


def test_prod_replicas_follow_the_hpa_within_bounds() -> None:
    d = desire(body({"environment": "prod", "replicas": 7}), [], WEDNESDAY_NOON)
    assert d.objects is not None
    assert [o["spec"]["replicas"] for o in d.objects if o["kind"] == "Deployment"] == [7]


def test_promote_annotation_is_consumed_when_used() -> None:
    spec = {
        "rollout": {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False}},
        "environment": "staging",
    }
    first = desire(body(spec), [], WEDNESDAY_NOON)
    assert first.objects is not None
    steady = desire(body(spec, status=first.status), cluster_from(first.objects), WEDNESDAY_NOON)
    new_spec = {**spec, "model": {"source": "builtin:other"}}
    assert steady.objects is not None
    preview = desire(body(new_spec, status=steady.status), cluster_from(steady.objects), WEDNESDAY_NOON)
    assert preview.objects is not None
    waiting = desire(body(new_spec, status=preview.status), cluster_from(preview.objects), WEDNESDAY_NOON)
    assert waiting.status["phase"] == "Paused"
    assert conditions(waiting.status)["Progressing"]["reason"] == "RolloutPaused"
    assert waiting.objects is not None
    promote = {"serving.gpt-operator.dev/promote": "true"}
    done = desire(
        body(new_spec, status=waiting.status, annotations=promote), cluster_from(waiting.objects), WEDNESDAY_NOON
    )
    # (1) acted on and recorded in status; the annotation stays until status holds the record
    assert done.consumed_annotations == []
    assert done.status["activeTrack"] == "green"
    assert done.status["lastActions"] == promote
    assert done.objects is not None
    # (2) the record says "done": the annotation goes, nothing is acted on twice
    again = desire(body(new_spec, status=done.status, annotations=promote), cluster_from(done.objects), WEDNESDAY_NOON)
    assert again.consumed_annotations == ["serving.gpt-operator.dev/promote"]
    assert again.status["activeTrack"] == "green" and again.status["lastActions"] == promote
    assert not [e for e in again.events if e.reason == "AnnotationIgnored"]
    # (3) the annotation is gone: so is the record
    assert again.objects is not None
    after = desire(body(new_spec, status=again.status), cluster_from(again.objects), WEDNESDAY_NOON)
    assert after.status["lastActions"] is None and after.consumed_annotations == []


def canary_at_first_pause() -> tuple[dict, object]:
    """A 4-step canary, paused at its first step: (spec, desired)."""
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    spec = {"environment": "staging", "replicas": 4, "rollout": {"strategy": "Canary", "canary": {"steps": steps}}}
    first = desire(body(spec), [], WEDNESDAY_NOON)
    assert first.objects is not None
    steady = desire(body(spec, status=first.status), cluster_from(first.objects), WEDNESDAY_NOON)
    new_spec = {**spec, "model": {"source": "builtin:other"}}
    assert steady.objects is not None
    paused = desire(body(new_spec, status=steady.status), cluster_from(steady.objects), WEDNESDAY_NOON)
    assert paused.objects is not None
    paused = desire(body(new_spec, status=paused.status), cluster_from(paused.objects), WEDNESDAY_NOON)
    return new_spec, paused


def test_a_step_promote_replayed_after_a_crash_moves_one_step_only() -> None:
    """A crash after status recorded the promote, before the annotation went: the restarted operator sees
    the annotation again and must not promote a second step."""
    spec, paused = canary_at_first_pause()
    step = paused.status["currentStep"]
    promote = {"serving.gpt-operator.dev/promote": "2026-03-04T12:00:00Z"}
    acted = desire(body(spec, status=paused.status, annotations=promote), cluster_from(paused.objects), WEDNESDAY_NOON)
    assert acted.status["currentStep"] > step
    replayed = desire(body(spec, status=acted.status, annotations=promote), cluster_from(acted.objects), WEDNESDAY_NOON)
    assert replayed.status["currentStep"] == acted.status["currentStep"]
    assert replayed.consumed_annotations == ["serving.gpt-operator.dev/promote"]


def test_a_step_promote_lost_before_status_is_acted_on_again_with_the_same_result() -> None:
    """A crash after the children were applied, before status: the same state and annotation give the same
    children and status, so acting again changes nothing that was already done."""
    spec, paused = canary_at_first_pause()
    promote = {"serving.gpt-operator.dev/promote": "x"}
    args = (body(spec, status=paused.status, annotations=promote), cluster_from(paused.objects), WEDNESDAY_NOON)
    first, second = desire(*args), desire(*args)
    assert first.objects == second.objects and first.status == second.status


def test_a_new_promote_with_another_value_is_acted_on() -> None:
    spec, paused = canary_at_first_pause()
    one = {"serving.gpt-operator.dev/promote": "one"}
    acted = desire(body(spec, status=paused.status, annotations=one), cluster_from(paused.objects), WEDNESDAY_NOON)
    assert acted.objects is not None
    settled = acted
    for _ in range(3):  # the canary scales to its new weight, then pauses again
        assert settled.objects is not None
        settled = desire(body(spec, status=settled.status), cluster_from(settled.objects), WEDNESDAY_NOON)
    assert settled.objects is not None and settled.status["phase"] == "Paused"
    two = {"serving.gpt-operator.dev/promote": "two"}
    again = desire(body(spec, status=settled.status, annotations=two), cluster_from(settled.objects), WEDNESDAY_NOON)
    assert again.status["currentStep"] > settled.status["currentStep"]
    assert again.status["lastActions"] == two and again.consumed_annotations == []


def test_stray_promote_annotation_is_dropped_with_a_warning() -> None:
    first = desire(body({"environment": "staging"}), [], WEDNESDAY_NOON)
    assert first.objects is not None
    promote = {"serving.gpt-operator.dev/promote": "true"}
    d = desire(
        body({"environment": "staging"}, status=first.status, annotations=promote),
        cluster_from(first.objects),
        WEDNESDAY_NOON,
    )
    assert d.consumed_annotations == ["serving.gpt-operator.dev/promote"]
    assert any(e.reason == "AnnotationIgnored" for e in d.events)


def test_aborted_canary_is_degraded() -> None:
    spec = {"environment": "staging", "rollout": {"strategy": "Canary"}}
    first = desire(body(spec), [], WEDNESDAY_NOON)
    assert first.objects is not None
    steady = desire(body(spec, status=first.status), cluster_from(first.objects), WEDNESDAY_NOON)
    new_spec = {**spec, "model": {"source": "builtin:other"}}
    assert steady.objects is not None
    canary = desire(body(new_spec, status=steady.status), cluster_from(steady.objects), WEDNESDAY_NOON)
    assert canary.objects is not None
    abort = {"serving.gpt-operator.dev/abort": "true"}
    d = desire(body(new_spec, status=canary.status, annotations=abort), cluster_from(canary.objects), WEDNESDAY_NOON)
    assert d.status["phase"] == "Degraded"
    assert conditions(d.status)["Degraded"]["reason"] == "RolloutAborted"
    assert d.consumed_annotations == [] and d.status["lastActions"] == abort


def test_track_state_reads_deployment_status() -> None:
    dep = {
        "metadata": {
            "generation": 4,
            "labels": {"serving.gpt-operator.dev/revision": "r1", "serving.gpt-operator.dev/track": "main"},
        },
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 3,
            "replicas": 3,
            "readyReplicas": 2,
            "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
        },
    }
    state = track_state(dep)
    assert state.revision == "r1" and state.ready_replicas == 2 and state.updated_replicas == 1
    assert not state.current  # the controller has not seen generation 4 yet
    assert state.failed
    assert not state.ready_at("r1", 1)


def test_stuck_deployment_marks_the_gptdeployment_degraded() -> None:
    first = desire(body({"environment": "staging"}), [], WEDNESDAY_NOON)
    assert first.objects is not None
    stuck = cluster_from(first.objects, ready=False)
    stuck[0]["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    d = desire(body({"environment": "staging"}, status=first.status), stuck, WEDNESDAY_NOON)
    assert d.status["phase"] == "Degraded"
    assert conditions(d.status)["Degraded"]["reason"] == "ProgressDeadlineExceeded"


def test_canary_with_gateway_api_routes_traffic_by_weight() -> None:
    routing = {"gatewayAPI": {"parentRefs": [{"name": "gw", "namespace": "infra"}], "hostnames": ["chat.example.com"]}}
    spec = {
        "environment": "staging",
        "replicas": 4,
        "rollout": {"strategy": "Canary", "canary": {"trafficRouting": routing}},
    }
    first = desire(body(spec), [], WEDNESDAY_NOON)
    assert first.objects is not None
    route = next(o for o in first.objects if o["kind"] == "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": "gw", "namespace": "infra"}]
    assert route["spec"]["hostnames"] == ["chat.example.com"]
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("demo-stable", 100),
        ("demo-canary", 0),
    ]
    steady = desire(body(spec, status=first.status), cluster_from(first.objects), WEDNESDAY_NOON)
    new_spec = {**spec, "model": {"source": "builtin:other"}}
    assert steady.objects is not None
    canary = desire(body(new_spec, status=steady.status), cluster_from(steady.objects), WEDNESDAY_NOON)
    assert canary.objects is not None
    route = next(o for o in canary.objects if o["kind"] == "HTTPRoute")
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [80, 20]


def test_no_http_route_without_traffic_routing() -> None:
    d = desire(body({"rollout": {"strategy": "Canary"}}), [], WEDNESDAY_NOON)
    assert d.objects is not None
    assert "HTTPRoute" not in [o["kind"] for o in d.objects]


def test_apply_failure_keeps_rollout_state_and_reports_degraded() -> None:
    from gpt_operator.status import apply_failed_status

    first = desire(body({"environment": "staging"}), [], WEDNESDAY_NOON)
    assert first.objects is not None
    good = desire(body({"environment": "staging"}, status=first.status), cluster_from(first.objects), WEDNESDAY_NOON)
    later = WEDNESDAY_NOON + timedelta(minutes=1)
    failed = apply_failed_status(good.status, "the API refused a child: 422: bad", later)
    assert failed["phase"] == "Degraded"
    assert failed["stableRevision"] == good.status["stableRevision"]
    assert failed["observedGeneration"] == good.status["observedGeneration"]
    cond = conditions(failed)
    assert (
        cond["Degraded"]["reason"] == "ApplyFailed" and cond["Degraded"]["lastTransitionTime"] == "2026-03-04T12:01:00Z"
    )
    assert cond["Ready"]["status"] == "False"
    assert cond["Sleeping"] == conditions(good.status)["Sleeping"]  # untouched


def test_promote_values_written_by_the_plugin_are_understood() -> None:
    from gpt_operator.reconcile import actions_from_annotations

    key = "serving.gpt-operator.dev/promote"
    assert actions_from_annotations({key: "full@2026-03-04T12:00:00.000000Z"}).promote == "full"
    assert actions_from_annotations({key: "full"}).promote == "full"
    assert actions_from_annotations({key: "step@2026-03-04T12:00:00.000000Z"}).promote == "step"
    assert actions_from_annotations({key: "true"}).promote == "step"


RETRY = "serving.gpt-operator.dev/retry"


def aborted_canary() -> tuple[dict, object]:
    """A canary of a new revision, aborted by the abort annotation (its removal already done): (spec, desired)."""
    spec = {"environment": "staging", "replicas": 2, "rollout": {"strategy": "Canary"}}
    first = desire(body(spec), [], WEDNESDAY_NOON)
    assert first.objects is not None
    steady = desire(body(spec, status=first.status), cluster_from(first.objects), WEDNESDAY_NOON)
    new_spec = {**spec, "model": {"source": "builtin:other"}}
    assert steady.objects is not None
    canary = desire(body(new_spec, status=steady.status), cluster_from(steady.objects), WEDNESDAY_NOON)
    assert canary.objects is not None and canary.status["currentStep"] == 0
    abort = {"serving.gpt-operator.dev/abort": "a1"}
    aborted = desire(
        body(new_spec, status=canary.status, annotations=abort), cluster_from(canary.objects), WEDNESDAY_NOON
    )
    assert aborted.objects is not None and aborted.status["abortedRevision"] == canary.status["updateRevision"]
    return new_spec, aborted


def test_retry_runs_the_aborted_revision_again_from_the_first_step_once() -> None:
    spec, aborted = aborted_canary()
    revision = aborted.status["abortedRevision"]
    retry = {RETRY: "r1"}
    d = desire(body(spec, status=aborted.status, annotations=retry), cluster_from(aborted.objects), WEDNESDAY_NOON)
    assert d.status["abortedRevision"] is None and d.status["phase"] != "Degraded"
    assert d.status["updateRevision"] == revision and d.status["currentStep"] == 0
    assert d.objects is not None
    canary = [o for o in d.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "demo-canary"]
    assert canary and canary[0]["metadata"]["labels"]["serving.gpt-operator.dev/revision"] == revision
    assert [e.reason for e in d.events if e.reason == "RolloutRetried"] == ["RolloutRetried"]
    # recorded with its effect; the annotation goes on the next reconcile, which does not act again
    assert d.status["lastActions"] == retry and d.consumed_annotations == []
    moved = desire(body(spec, status=d.status, annotations=retry), cluster_from(d.objects), WEDNESDAY_NOON)
    assert moved.consumed_annotations == [RETRY] and moved.status["currentStep"] == 1
    assert not [e for e in moved.events if e.reason == "RolloutRetried"]


def test_retry_of_a_revision_that_is_not_aborted_is_dropped_with_a_warning() -> None:
    spec, aborted = aborted_canary()
    newer = {**spec, "model": {"source": "builtin:newer"}}
    d = desire(
        body(newer, status=aborted.status, annotations={RETRY: "r1"}), cluster_from(aborted.objects), WEDNESDAY_NOON
    )
    assert d.consumed_annotations == [RETRY] and d.status["lastActions"] is None
    assert [e.message for e in d.events if e.reason == "AnnotationIgnored"] == [
        f"{RETRY}: revision {d.status['updateRevision']} is not aborted"
    ]


def test_retry_forgets_the_failed_analysis_of_the_aborted_try() -> None:
    spec, aborted = aborted_canary()
    failed = {**aborted.status, "analysis": {"revision": aborted.status["abortedRevision"], "phase": "Failed"}}
    d = desire(body(spec, status=failed, annotations={RETRY: "r1"}), cluster_from(aborted.objects), WEDNESDAY_NOON)
    assert "analysis" in d.status and d.status["analysis"] is None  # a null in the status patch removes it


def test_history_records_each_revision_that_became_stable_newest_first() -> None:
    spec = {"environment": "staging", "rollout": {"strategy": "Canary"}}
    first = desire(body(spec), [], WEDNESDAY_NOON)
    assert first.status["history"] is None and first.objects is not None
    steady = desire(body(spec, status=first.status), cluster_from(first.objects), WEDNESDAY_NOON)
    [one] = steady.status["history"]
    assert one["number"] == 1 and one["revision"] == steady.status["stableRevision"]
    assert one["template"]["model"]["source"] == "builtin:tiny" and "secretRef" not in one["template"]
    assert steady.objects is not None
    again = desire(body(spec, status=steady.status), cluster_from(steady.objects), WEDNESDAY_NOON)
    assert again.status["history"] == steady.status["history"]  # unchanged: no status write at rest
    new_spec = {
        **spec,
        "model": {"source": "builtin:other"},
        "rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}]}},
    }
    d, objects = steady, steady.objects
    for _ in range(6):
        d = desire(body(new_spec, status=d.status), cluster_from(objects), WEDNESDAY_NOON)
        assert d.objects is not None
        objects = d.objects
    assert d.status["stableRevision"] == d.status["updateRevision"] != one["revision"]
    assert [(e["number"], e["revision"]) for e in d.status["history"]] == [
        (2, d.status["stableRevision"]),
        (1, one["revision"]),
    ]
