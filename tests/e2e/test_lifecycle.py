"""`kubectl scale gptd` through the scale subresource, and deletion: the controller-manager's garbage
collector removes every child through its ownerReferences."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .kube import NAME_LABEL, Kube, gptd_manifest

pytestmark = pytest.mark.e2e

CHILD_KINDS = "deployments,replicasets,pods,services,configmaps,horizontalpodautoscalers,poddisruptionbudgets"


def _spec(**extra: Any) -> dict[str, Any]:
    # staging: spot capacity and no default schedule, so the result does not depend on the hour
    return {"environment": "staging", "model": {"source": "builtin:tiny"}, **extra}


def _children(kube: Kube, ns: str, name: str) -> list[str]:
    items = kube.json("get", CHILD_KINDS, "-n", ns, "-l", f"{NAME_LABEL}={name}")["items"]
    return [f"{i['kind']}/{i['metadata']['name']}" for i in items if not i["metadata"].get("deletionTimestamp")]


def test_kubectl_scale_goes_through_the_scale_subresource(kube: Kube, ns: str) -> None:
    kube.apply(gptd_manifest("scaled", ns, _spec(replicas=1)))
    kube.wait_ready(ns, "scaled", 1)

    kube.run("scale", "gptd", "scaled", "-n", ns, "--replicas=3")
    assert kube.gptd(ns, "scaled")["spec"]["replicas"] == 3
    obj = kube.wait_ready(ns, "scaled", 3)
    assert obj["status"]["ready"] == "3/3"
    assert len(kube.ready_pods(ns, f"{NAME_LABEL}=scaled")) == 3
    assert kube.get("deployment", "scaled", ns)["spec"]["replicas"] == 3

    path = f"/apis/serving.gpt-operator.dev/v1alpha1/namespaces/{ns}/gptdeployments/scaled/scale"
    scale = json.loads(kube.run("get", "--raw", path))
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == obj["status"]["selector"]

    kube.run("scale", "gptd", "scaled", "-n", ns, "--replicas=0")
    kube.eventually(lambda: not kube.pods(ns, f"{NAME_LABEL}=scaled"), "scaled to zero pods")
    kube.run("scale", "gptd", "scaled", "-n", ns, "--replicas=2")
    kube.wait_ready(ns, "scaled", 2)


@pytest.mark.parametrize("cascade", ["background", "foreground"])
def test_deleting_the_gptdeployment_garbage_collects_every_child(kube: Kube, ns: str, cascade: str) -> None:
    name = f"doomed-{cascade}"
    spec = _spec(replicas=2, rollout={"strategy": "BlueGreen"}) if cascade == "foreground" else _spec(replicas=2)
    kube.apply(gptd_manifest(name, ns, spec))
    kube.wait_ready(ns, name, 2)
    before = _children(kube, ns, name)
    assert any(c.startswith("Deployment/") for c in before)
    assert any(c.startswith("Service/") for c in before)
    assert sum(c.startswith("Pod/") for c in before) == 2

    kube.run("delete", "gptd", name, "-n", ns, f"--cascade={cascade}", "--timeout=90s", timeout=100)
    assert kube.get("gptd", name, ns) is None
    kube.eventually(lambda: _children(kube, ns, name) == [], f"every child of {name} gone", timeout=90)
