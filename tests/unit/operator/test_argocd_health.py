"""The Argo CD health check (manifests/argocd/health.lua), run in Lua 5.1 like Argo CD's gopher-lua,
on statuses the operator really writes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from gpt_operator.reconcile import desire
from lupa import lua51

pytestmark = pytest.mark.unit

SCRIPT = (Path(__file__).resolve().parents[3] / "manifests" / "argocd" / "health.lua").read_text()
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
SATURDAY = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def health(obj: dict) -> tuple[str, str]:
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return result["status"], result["message"]


def gptd(spec: dict, status: dict | None = None, generation: int = 1) -> dict:
    return {
        "metadata": {"name": "chat", "namespace": "ml", "generation": generation},
        "spec": {"model": {"source": "builtin:tiny"}, **spec},
        "status": status or {},
    }


def ready_cluster(objects: list[dict]) -> list[dict]:
    out = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            n = obj["spec"]["replicas"]
            status = {"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n}
            out.append({**obj, "metadata": {**obj["metadata"], "generation": 1}, "status": status})
    return out


def reconciled(spec: dict, now: datetime = NOON, ready: bool = True) -> dict:
    first = desire(gptd(spec), [], now)
    assert first.objects is not None
    if not ready:
        return gptd(spec, first.status)
    second = desire(gptd(spec, first.status), ready_cluster(first.objects), now)
    return gptd(spec, second.status)


def test_no_status_yet_is_progressing() -> None:
    assert health(gptd({}))[0] == "Progressing"


def test_available_is_healthy() -> None:
    assert health(reconciled({"environment": "staging"}))[0] == "Healthy"


def test_waiting_for_pods_is_progressing() -> None:
    status, message = health(reconciled({"environment": "staging"}, ready=False))
    assert status == "Progressing"
    assert "rolling out revision" in message


def test_sleeping_is_suspended() -> None:
    status, message = health(reconciled({"environment": "dev"}, now=SATURDAY))
    assert status == "Suspended"
    assert "asleep" in message


def test_invalid_spec_is_degraded() -> None:
    result = desire(gptd({"autoscaling": {"minReplicas": 3, "maxReplicas": 1}}), [], NOON)
    status, message = health(gptd({}, result.status))
    assert status == "Degraded"
    assert message.startswith("InvalidSpec: ")


def test_unobserved_generation_is_progressing() -> None:
    obj = reconciled({"environment": "staging"})
    obj["metadata"]["generation"] = 2
    assert health(obj) == ("Progressing", "Waiting for the operator to observe the latest spec")
