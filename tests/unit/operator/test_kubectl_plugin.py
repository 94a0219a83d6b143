from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gpt_operator.history import UndoError
from gpt_operator.kubectl_plugin import (
    CLEAR_SCREEN,
    annotation_changes,
    current_revision,
    describe,
    gitops_managed,
    human_age,
    parse_duration,
    retry_problem,
    table,
    undo_patch,
    watch,
    watch_view,
)
from gpt_operator.spec import parse_spec

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


def gptd(status: dict, spec: dict | None = None, **meta: object) -> dict:
    return {
        "metadata": {"name": "chat", "namespace": "ml", "generation": 2, "resourceVersion": "41", **meta},
        "spec": spec or {"model": {"source": "builtin:tiny"}, "rollout": {"strategy": "Canary"}},
        "status": status,
    }


def pod(name: str, track: str, revision: str, ready: bool = True, **meta: object) -> dict:
    labels = {f"{GROUP}/track": track, f"{GROUP}/revision": revision}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {"name": name, "labels": labels, **meta},
        "status": {"phase": "Running", "conditions": conditions},
    }


def test_retry_writes_a_unique_annotation_and_only_applies_to_the_aborted_spec_revision():
    stamp = NOW.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert annotation_changes("retry", now=NOW) == {f"{GROUP}/retry": stamp}
    obj = gptd({})
    revision = current_revision(obj)
    assert retry_problem(gptd({"abortedRevision": revision, "phase": "Degraded"})) is None
    assert (
        retry_problem(gptd({"phase": "Available"}))
        == "gptdeployment chat: no aborted rollout to retry (phase Available)"
    )
    moved_on = retry_problem(gptd({"abortedRevision": "0123456789"}))
    assert moved_on is not None and f"the spec now asks for revision {revision}" in moved_on


def test_undo_patches_the_previous_revisions_fields_back_under_the_read_resource_version():
    old_spec = {"model": {"source": "builtin:tiny"}, "replicas": 2}
    new_spec = {**old_spec, "image": "ghcr.io/gpt-operator/gpt-runtime:9.9.9"}
    old = parse_spec(old_spec)
    history = [
        {"number": 2, "revision": parse_spec(new_spec).revision, "template": parse_spec(new_spec).pod_template_spec()},
        {
            "number": 1,
            "revision": old.revision,
            "template": {k: v for k, v in old.pod_template_spec().items() if v is not None},
        },
    ]
    patch, entry = undo_patch(gptd({"history": history}, spec=new_spec))
    assert entry["number"] == 1
    assert patch == {"metadata": {"resourceVersion": "41"}, "spec": {"image": None}}
    with pytest.raises(UndoError, match="already runs"):
        undo_patch(gptd({"history": history}, spec=new_spec), "2")
    with pytest.raises(UndoError, match="no earlier revision"):
        undo_patch(gptd({}, spec=new_spec))
    assert gitops_managed(gptd({}, annotations={"argocd.argoproj.io/tracking-id": "app:x"}))
    assert not gitops_managed(gptd({}))


def test_the_watch_view_shows_each_tracks_traffic_and_pods():
    obj = gptd({"phase": "Progressing", "canaryWeight": 25, "currentStep": 1})
    pods = [
        pod("chat-canary-1", "canary", "b2", ready=False),
        pod("chat-stable-1", "stable", "a1"),
        pod("chat-stable-2", "stable", "a1", deletionTimestamp="2026-03-06T21:30:00Z"),
    ]
    view = watch_view(obj, pods)
    assert "phase:       Progressing" in view and "step:        1" in view
    lines = view.splitlines()
    stable = lines.index(next(line for line in lines if line.startswith("  stable")))
    assert "75% of traffic" in lines[stable] and "1/2 pods ready" in lines[stable]
    assert lines[stable + 1].split() == ["chat-stable-1", "Ready", "revision", "a1"]
    assert lines[stable + 2].split() == ["chat-stable-2", "Terminating", "revision", "a1"]
    assert "25% of traffic" in lines[stable + 3] and "0/1 pods ready" in lines[stable + 3]
    assert lines[stable + 4].split() == ["chat-canary-1", "NotReady", "revision", "b2"]
    blue_green = gptd({"activeTrack": "green", "previewTrack": "blue"}, spec={"rollout": {"strategy": "BlueGreen"}})
    assert "active (Service chat)" in watch_view(blue_green, [pod("chat-green-1", "green", "c3")])


def test_watch_redraws_on_change_and_ends_at_the_phase_or_the_timeout():
    frames = [
        gptd({"phase": "Progressing", "canaryWeight": 25, "currentStep": 0, "observedGeneration": 2}),
        gptd({"phase": "Progressing", "canaryWeight": 25, "currentStep": 0, "observedGeneration": 2}),
        gptd({"phase": "Progressing", "canaryWeight": 50, "currentStep": 1, "observedGeneration": 2}),
        gptd({"phase": "Available", "observedGeneration": 1}),  # the operator has not seen generation 2 yet
        gptd({"phase": "Available", "observedGeneration": 2}),
    ]
    clock = iter(range(100))
    written: list[str] = []
    fetches = iter(frames)
    code = watch(
        lambda: (next(fetches), []),
        until="Available",
        timeout_s=60,
        write=written.append,
        clear=False,
        clock=lambda: next(clock),
        sleep=lambda _: None,
    )
    assert code == 0 and len(written) == 3  # a frame that did not change is not drawn again
    assert next(fetches, None) is None  # it went on past the Available of the older generation
    assert "canary:      25%" in written[0] and "canary:      50%" in written[1] and "step:        1" in written[1]
    assert "phase:       Available" in written[-1]
    ticks = iter(range(0, 100, 10))
    timed_out: list[str] = []
    code = watch(
        lambda: (frames[0], []),
        until="Available",
        timeout_s=30,
        write=timed_out.append,
        clear=True,
        clock=lambda: next(ticks),
        sleep=lambda _: None,
    )
    assert code == 1 and timed_out[0].startswith(CLEAR_SCREEN)
    assert timed_out[-1] == "timed out after 30s waiting for phase Available (phase is Progressing)\n"


def test_list_prints_one_row_per_deployment_as_kubectl_get_aligns_them():
    items = [
        gptd(
            {"phase": "Progressing", "ready": "3/4", "canaryWeight": 25, "currentStep": 1},
            spec={"environment": "prod", "rollout": {"strategy": "Canary", "canary": {"steps": [{}, {}, {}]}}},
            creationTimestamp="2026-03-06T19:25:00Z",
        ),
        {
            "metadata": {"name": "docs", "namespace": "dev", "creationTimestamp": "2026-03-06T21:29:15Z"},
            "spec": {"environment": "dev"},
            "status": {"phase": "Available", "ready": "1/1"},
        },
    ]
    assert table(items, all_namespaces=True, now=NOW).splitlines() == [
        "NAMESPACE   NAME   ENV    STRATEGY        PHASE         READY   CANARY/STEP   AGE",
        "dev         docs   dev    RollingUpdate   Available     1/1     -             45s",
        "ml          chat   prod   Canary          Progressing   3/4     25% 1/3       125m",
    ]
    assert table(items[1:], all_namespaces=False, now=NOW).splitlines()[0].startswith("NAME   ENV")


def test_ages_read_as_kubectl_prints_them():
    cases = {5: "5s", 119: "119s", 330: "5m30s", 600: "10m", 11400: "3h10m", 72000: "20h", 367200: "4d6h"}
    for seconds, text in cases.items():
        assert human_age(timedelta(seconds=seconds)) == text
    assert human_age(timedelta(days=30)) == "30d" and human_age(timedelta(days=740)) == "2y10d"
    assert parse_duration("90s") == timedelta(seconds=90)
