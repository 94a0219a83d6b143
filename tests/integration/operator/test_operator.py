"""The real kopf operator against a Kubernetes API emulator (kmock) over HTTP: what a user sees."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
CONFIGMAPS = "v1/configmaps"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
GPTD = "serving.gpt-operator.dev/v1alpha1/gptdeployments"


def condition(obj: dict, kind: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


async def test_create_renders_owned_children_and_reports_status(cluster, operator, gptd, eventually) -> None:
    created = await cluster.put_object(GPTD, gptd(environment="staging", replicas=2))
    uid = created["metadata"]["uid"]

    dep = await eventually(lambda: cluster.get(DEPLOYMENTS, "chat"))
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["ownerReferences"][0]["uid"] == uid
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    assert cluster.names(SERVICES) == ["chat"]
    assert len(cluster.names(CONFIGMAPS)) == 1

    pending = await eventually(lambda: (o := cluster.get(GPTD, "chat")) and o.get("status", {}).get("phase") and o)
    assert pending["status"]["phase"] in ("Pending", "Progressing")
    assert pending["status"]["observedGeneration"] == 1

    await cluster.settle_deployments()
    available = await eventually(lambda: (o := cluster.get(GPTD, "chat"))["status"]["phase"] == "Available" and o)
    assert available["status"]["ready"] == "2/2"
    assert condition(available, "Ready")["status"] == "True"
    assert available["status"]["capacityType"] == "spot"
