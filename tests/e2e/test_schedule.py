"""Sleep schedules on a real cluster, with the real clock: windows are placed around the current time (no
clock injection needed), and one test waits for the operator's timer to cross a window edge by itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .kube import NAME_LABEL, WAKE_UNTIL, Kube, gptd_manifest, rfc3339

pytestmark = pytest.mark.e2e

DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M")


def _window(start: datetime, end: datetime) -> dict[str, Any]:
    """An every-day UTC window; end <= start means the next day, so windows across midnight work too."""
    return {"days": DAYS, "start": _hhmm(start), "end": _hhmm(end)}


def _spec(windows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "environment": "dev",
        "model": {"source": "builtin:tiny"},
        "replicas": 2,
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
        "schedule": {"timeZone": "UTC", "offWindows": windows},
        **extra,
    }


def _asleep(kube: Kube, ns: str, name: str, reason: str, timeout: float = 90) -> dict[str, Any]:
    def check(obj: dict[str, Any]) -> bool:
        cond = kube.condition(obj, "Sleeping")
        return bool(
            cond and cond["status"] == "True" and cond["reason"] == reason and obj["status"].get("phase") == "Sleeping"
        )

    obj = kube.wait_gptd(ns, name, check, f"asleep ({reason})", timeout)
    kube.eventually(lambda: not kube.pods(ns, f"{NAME_LABEL}={name}"), f"{name}: no pods while asleep")
    kube.eventually(
        lambda: not kube.list("horizontalpodautoscalers", ns, f"{NAME_LABEL}={name}"),
        f"{name}: HPA removed while asleep",
    )
    assert kube.get("deployment", name, ns)["spec"]["replicas"] == 0
    ready = kube.condition(kube.gptd(ns, name), "Ready")
    assert ready and ready["status"] == "False"
    return obj


def _awake(kube: Kube, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    obj = kube.wait_ready(ns, name, 2, timeout)
    sleeping = kube.condition(obj, "Sleeping")
    assert sleeping and sleeping["status"] == "False"
    assert len(kube.ready_pods(ns, f"{NAME_LABEL}={name}")) == 2
    kube.eventually(lambda: kube.list("horizontalpodautoscalers", ns, f"{NAME_LABEL}={name}"), f"{name}: HPA back")
    return obj


def test_off_window_sleeps_and_wake_until_wakes(kube: Kube, ns: str) -> None:
    name = "nightly"
    now = datetime.now(UTC)
    covering = _window(now - timedelta(hours=1), now + timedelta(hours=1))
    kube.apply(gptd_manifest(name, ns, _spec([covering])))
    asleep = _asleep(kube, ns, name, "OffWindow")
    assert asleep["status"]["savedReplicas"] == 2

    # wake early by annotation, as an on-call engineer would
    kube.annotate("gptd", name, ns, WAKE_UNTIL, rfc3339(now + timedelta(hours=1)))
    woken = _awake(kube, ns, name)
    assert kube.condition(woken, "Sleeping")["reason"] == "WokenByAnnotation"

    # the annotation gone, the window applies again; moving the window away wakes it for good
    kube.annotate("gptd", name, ns, WAKE_UNTIL, None)
    _asleep(kube, ns, name, "OffWindow")
    later = _window(now + timedelta(hours=3), now + timedelta(hours=4))
    kube.apply(gptd_manifest(name, ns, _spec([later])))
    awake = _awake(kube, ns, name)
    assert awake["status"].get("nextTransitionTime"), "the next sleep time is shown in status"


def test_suspend_stops_it_by_hand(kube: Kube, ns: str) -> None:
    name = "suspended"
    kube.apply(gptd_manifest(name, ns, _spec([])))
    _awake(kube, ns, name)
    kube.patch_merge("gptd", name, ns, {"spec": {"suspend": True}})
    _asleep(kube, ns, name, "Suspended")
    kube.patch_merge("gptd", name, ns, {"spec": {"suspend": False}})
    _awake(kube, ns, name)


def test_timer_crosses_window_edges_by_the_clock(kube: Kube, ns: str) -> None:
    """No spec change: the operator's timer alone puts it to sleep at `start` and wakes it at `end`."""
    name = "edges"
    now = datetime.now(UTC)
    start = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (start - now).total_seconds() < 20:
        start += timedelta(minutes=1)
    end = start + timedelta(minutes=1)
    kube.apply(gptd_manifest(name, ns, _spec([_window(start, end)])))
    _awake(kube, ns, name)
    assert kube.gptd(ns, name)["status"].get("nextTransitionTime") == rfc3339(start)

    _asleep(kube, ns, name, "OffWindow", timeout=(start - datetime.now(UTC)).total_seconds() + 60)
    assert datetime.now(UTC) >= start
    _awake(kube, ns, name, timeout=(end - datetime.now(UTC)).total_seconds() + 60)
    assert datetime.now(UTC) >= end
