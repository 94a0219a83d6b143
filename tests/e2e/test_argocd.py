"""Argo CD (built from its Go module by `hack/tools.sh argocd`, run on the host: tests/e2e/argocd.py) syncing
GPTDeployments from a local git repository, checked through Argo CD's own view: the Application's status (sync,
health, and each resource's health from manifests/argocd/health.lua) and its resource-action API (the Lua actions
in manifests/argocd/actions, run by argocd-server with an admin session token)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from .argocd import ArgoCD, GitRepo, running
from .kube import API_VERSION, ROOT, WAKE_UNTIL, Kube, gptd_manifest

pytestmark = pytest.mark.e2e

STEPS = [{"setWeight": 50}, {"pause": {}}]
WAITING = "paused at step 1 (50%); waiting for the promote annotation"
EXAMPLE_APPLICATION = ROOT / "manifests" / "argocd" / "examples" / "application.yaml"
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


@pytest.fixture(scope="module")
def argocd(kube: Kube, namespaces: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoCD]:
    namespace = namespaces(f"e2e-argocd-control-{uuid.uuid4().hex[:5]}")
    with running(kube, namespace, tmp_path_factory.mktemp("argocd")) as argo:
        yield argo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return GitRepo(tmp_path_factory.mktemp("git"))


def _canary(revision: int) -> dict[str, Any]:
    return {
        "environment": "staging",
        "model": {"source": "builtin:tiny"},
        "replicas": 2,
        "env": [{"name": "E2E_REVISION", "value": str(revision)}],
        "rollout": {"strategy": "Canary", "canary": {"steps": STEPS}},
    }


def _application(argocd: ArgoCD, repo: GitRepo, name: str, path: str, destination: str) -> dict[str, Any]:
    """manifests/argocd/examples/application.yaml as shipped (ignoreDifferences, sync policy), pointed at the local
    repository and the test's namespaces."""
    app = yaml.safe_load(EXAMPLE_APPLICATION.read_text())
    app["metadata"] = {"name": name, "namespace": argocd.namespace}
    app["spec"]["source"] = {"repoURL": repo.url, "targetRevision": "main", "path": path}
    app["spec"]["destination"]["namespace"] = destination
    return app


def _synced_to(sha: str) -> Callable[[dict[str, Any]], bool]:
    def check(app: dict[str, Any]) -> bool:
        sync = app.get("status", {}).get("sync", {})
        return bool(sync.get("status") == "Synced" and sync.get("revision") == sha)

    return check


def _app_health(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda app: app.get("status", {}).get("health", {}).get("status") == status


def _ref(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "GPTDeployment", "metadata": {"name": name, "namespace": ns}}


def test_sync_health_through_a_canary_and_the_rollout_actions(
    argocd: ArgoCD, repo: GitRepo, kube: Kube, ns: str
) -> None:
    """Health from our Lua at each stage of a canary that git starts, driven by Argo CD's resource actions."""
    name = "chat"
    sha = repo.commit({"canary/gptd.yaml": gptd_manifest(name, ns, _canary(1))}, "chat: revision 1")
    kube.apply(_application(argocd, repo, "canary", "canary", ns))

    # 1. synced, and Healthy through our check: its message is the Ready condition's ("2/2 replicas ready")
    argocd.wait_app("canary", "Synced to revision 1", _synced_to(sha))
    app = argocd.wait_health("canary", name, "Healthy", "2/2")
    assert _app_health("Healthy")(argocd.wait_app("canary", "app Healthy", _app_health("Healthy")))
    assert kube.gptd(ns, name)["status"]["phase"] == "Available"
    assert app["message"] == "2/2 replicas ready", app  # the Ready condition's message, through health.lua
    actions = argocd.actions("canary", _ref(name, ns))
    assert {n for n, on in actions.items() if on} == {"pause"}, actions

    # 2. a commit changes the revision: Argo CD syncs it, the canary is Progressing, then waits at its pause
    sha = repo.commit({"canary/gptd.yaml": gptd_manifest(name, ns, _canary(2))}, "chat: revision 2")
    argocd.refresh("canary")
    argocd.wait_app("canary", "Synced to revision 2", _synced_to(sha))
    argocd.wait_health("canary", name, "Progressing")
    argocd.wait_health("canary", name, "Suspended", WAITING)
    actions = argocd.actions("canary", _ref(name, ns))
    assert {n for n, on in actions.items() if on} == {"promote", "promote-full", "abort", "pause"}, actions

    # 4. pause and resume (the paused annotation): the step's message says who holds it
    argocd.run_action("canary", _ref(name, ns), "pause")
    assert kube.gptd(ns, name)["metadata"]["annotations"]["serving.gpt-operator.dev/paused"] == "true"
    argocd.wait_health("canary", name, "Suspended", "paused at step 1 (50%)", without="waiting for the promote")
    assert argocd.actions("canary", _ref(name, ns))["resume"]
    argocd.run_action("canary", _ref(name, ns), "resume")
    assert "serving.gpt-operator.dev/paused" not in (kube.gptd(ns, name)["metadata"].get("annotations") or {})
    argocd.wait_health("canary", name, "Suspended", WAITING)

    # promote: past the pause, the canary becomes stable and the app Healthy
    argocd.run_action("canary", _ref(name, ns), "promote")
    argocd.wait_health("canary", name, "Healthy", "2/2")
    status = kube.gptd(ns, name)["status"]
    assert status["stableRevision"] == status["updateRevision"]
    stable = status["stableRevision"]

    # abort a third revision: Degraded in Argo CD; retry runs it again; promote-full finishes it
    sha = repo.commit({"canary/gptd.yaml": gptd_manifest(name, ns, _canary(3))}, "chat: revision 3")
    argocd.refresh("canary")
    argocd.wait_app("canary", "Synced to revision 3", _synced_to(sha))
    argocd.wait_health("canary", name, "Suspended", WAITING)
    argocd.run_action("canary", _ref(name, ns), "abort")
    argocd.wait_health("canary", name, "Degraded", "RolloutAborted")
    argocd.wait_app("canary", "app Degraded", _app_health("Degraded"))
    assert kube.gptd(ns, name)["status"]["stableRevision"] == stable
    actions = argocd.actions("canary", _ref(name, ns))
    assert actions["retry"] and not actions["abort"] and not actions["promote"], actions
    argocd.run_action("canary", _ref(name, ns), "retry")
    argocd.wait_health("canary", name, "Suspended", WAITING)
    argocd.run_action("canary", _ref(name, ns), "promote-full")
    argocd.wait_health("canary", name, "Healthy", "2/2")
    argocd.wait_app("canary", "app Healthy", _app_health("Healthy"))
    assert kube.gptd(ns, name)["status"]["stableRevision"] != stable


def _window_now() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "days": DAYS,
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
    }


def test_replicas_changed_by_the_cluster_are_no_drift_and_wake_runs_from_argocd(
    argocd: ArgoCD, repo: GitRepo, kube: Kube, ns: str
) -> None:
    """ignoreDifferences on /spec/replicas (the example Application's): a scale by the HPA's path (the scale
    subresource) leaves the app Synced and is not reverted; the wake action wakes a sleeping deployment."""
    name = "nightly"
    spec = {
        "environment": "dev",
        "model": {"source": "builtin:tiny"},
        "replicas": 1,
        "schedule": {"timeZone": "UTC", "offWindows": [_window_now()]},
    }
    sha = repo.commit({"nightly/gptd.yaml": gptd_manifest(name, ns, spec)}, "nightly")
    kube.apply(_application(argocd, repo, "nightly", "nightly", ns))
    argocd.wait_app("nightly", "Synced", _synced_to(sha))
    argocd.wait_health("nightly", name, "Suspended")
    assert argocd.actions("nightly", _ref(name, ns))["wake"]

    # wake (the wake-until annotation, 2 h ahead): the operator wakes it, Argo CD shows it Healthy
    argocd.run_action("nightly", _ref(name, ns), "wake")
    until = datetime.strptime(kube.gptd(ns, name)["metadata"]["annotations"][WAKE_UNTIL], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(until.replace(tzinfo=UTC) - datetime.now(UTC) - timedelta(hours=2)) < timedelta(minutes=1)
    argocd.wait_health("nightly", name, "Healthy", "1/1")
    cond = kube.condition(kube.gptd(ns, name), "Sleeping")
    assert cond and cond["reason"] == "WokenByAnnotation", cond

    # 3. the cluster scales it (kubectl scale: the scale subresource the HPA writes): still Synced, not reverted
    kube.run("scale", "gptd", name, "-n", ns, "--replicas=2")
    argocd.wait_health("nightly", name, "Healthy", "2/2")
    for _ in range(3):  # across reconciliations (timeout.reconciliation 10s, self-heal on)
        time.sleep(8)
        app = argocd.wait_app("nightly", "still Synced", _synced_to(sha), timeout=30)
        assert kube.gptd(ns, name)["spec"]["replicas"] == 2
    assert app["status"]["sync"]["status"] == "Synced"

    # positive control: without ignoreDifferences the same scale is drift, and self-heal writes git's 1 back
    kube.run("patch", "application", "nightly", "-n", argocd.namespace, "--type=json",
             "-p", '[{"op": "remove", "path": "/spec/ignoreDifferences"}]')  # fmt: skip
    kube.wait_gptd(ns, name, lambda o: o["spec"]["replicas"] == 1, "spec.replicas reverted to git's 1 by self-heal")
