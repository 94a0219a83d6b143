"""Argo CD (built from its Go module by `hack/tools.sh argocd`, run on the host: tests/e2e/argocd.py) syncing
GPTDeployments from a local git repository, checked through Argo CD's own view: the Application's status (sync,
health, and each resource's health from manifests/argocd/health.lua) and its resource-action API (the Lua actions
in manifests/argocd/actions, run by argocd-server with an admin session token)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from .argocd import ArgoCD, GitRepo, running
from .kube import (
    API_VERSION,
    CRD_NAME,
    NAME_LABEL,
    REVISION_LABEL,
    ROOT,
    WAKE_UNTIL,
    Kube,
    gptd_manifest,
    session_operator_scaled_to_zero,
)
from .realpods import ON_REAL_NODE, InClusterClient, on_real_node, service_url

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

    # 2. a commit changes the revision: Argo CD syncs it, and the canary waits at its pause. (Progressing on the way
    # lasts as long as the canary pod takes to be Ready: at once on these kwok nodes, so it can fall between two
    # polls; the operator-from-git test below sees it on a real pod loading its model.)
    sha = repo.commit({"canary/gptd.yaml": gptd_manifest(name, ns, _canary(2))}, "chat: revision 2")
    argocd.refresh("canary")
    argocd.wait_app("canary", "Synced to revision 2", _synced_to(sha))
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


EXAMPLE_OPERATOR = ROOT / "manifests" / "argocd" / "examples" / "operator.yaml"
CHART = ROOT / "charts" / "gpt-operator"
SMOLLM2_RESOURCES = {"cpu": "100m", "memory": "2Gi"}  # as tests/e2e/test_traffic.py's SmolLM2 pods
OPERATOR_IMAGE = os.environ.get("GPT_E2E_OPERATOR_IMAGE", "ghcr.io/gpt-operator/gpt-operator:0.1.0")


@pytest.fixture
def session_operator_paused(kube: Kube) -> Iterator[None]:
    with session_operator_scaled_to_zero(kube):
        yield


def test_argocd_installs_the_operator_from_git_and_a_model_change_rolls_out_as_a_canary(
    argocd: ArgoCD,
    repo: GitRepo,
    kube: Kube,
    namespaces: Callable[[str], str],
    session_operator_paused: None,
) -> None:
    """GitOps end to end: manifests/argocd/examples/operator.yaml installs the operator from charts/gpt-operator in
    git (no other operator runs meanwhile); an Application syncs a GPTDeployment it reconciles; a commit that changes
    model.source (builtin:tiny -> the embedded SmolLM2) starts a canary that Argo CD shows Progressing, then Healthy
    once promoted; deleting the operator's Application uninstalls it and leaves the CRD."""
    suffix = uuid.uuid4().hex[:5]
    apps_ns, operator_ns = namespaces(f"e2e-argocd-apps-{suffix}"), f"e2e-argocd-op-{suffix}"
    repo.add_tree(CHART, "charts/gpt-operator")
    sha = repo.commit({}, "the operator's chart")

    operator_app = yaml.safe_load(EXAMPLE_OPERATOR.read_text())
    operator_app["metadata"]["namespace"] = argocd.namespace
    source = operator_app["spec"]["source"]
    source.update(repoURL=repo.url, targetRevision="main")
    repository, tag = OPERATOR_IMAGE.rsplit(":", 1)
    source["helm"]["releaseName"] = f"gpt-argo-{suffix}"
    source["helm"]["valuesObject"] = {
        "image": {"repository": repository, "tag": tag},
        "watchNamespaces": [apps_ns],  # Roles there only, as `helm install` in test_helm_install.py
        "nodeSelector": dict(ON_REAL_NODE),
        "extraEnv": [{"name": "GPT_OPERATOR_RESYNC_SECONDS", "value": "2"}],
    }
    operator_app["spec"]["destination"]["namespace"] = operator_ns
    try:
        kube.apply(operator_app)
        argocd.wait_app("gpt-operator", "Synced", _synced_to(sha))
        argocd.wait_app("gpt-operator", "Healthy (the operator's Deployment ready)", _app_health("Healthy"))
        ns_labels = (kube.get("namespace", operator_ns) or {})["metadata"]["labels"]
        assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"

        name = "chat"
        # real pods on the real node (a staging deployment would otherwise land on the kwok spot nodes, whose fake
        # pods are Ready at once and run no model), sized for SmolLM2 from the start so the commit changes the model
        # only
        spec: dict[str, Any] = on_real_node(
            {
                "environment": "staging",
                "model": {"source": "builtin:tiny"},
                "replicas": 1,
                "rollout": {"strategy": "Canary", "canary": {"steps": STEPS}},
            },
            SMOLLM2_RESOURCES,
        )
        sha = repo.commit({"models/gptd.yaml": gptd_manifest(name, apps_ns, spec)}, "chat on the tiny model")
        kube.apply(_application(argocd, repo, "models", "models", apps_ns))
        argocd.wait_app("models", "Synced", _synced_to(sha))
        argocd.wait_health("models", name, "Healthy", "1/1", timeout=240)  # reconciled by the operator from git

        spec["model"] = {"source": "builtin:smollm2-135m"}
        sha = repo.commit({"models/gptd.yaml": gptd_manifest(name, apps_ns, spec)}, "chat on SmolLM2")
        argocd.refresh("models")
        argocd.wait_app("models", "Synced to the SmolLM2 commit", _synced_to(sha))
        argocd.wait_health("models", name, "Progressing")  # the canary pod loads SmolLM2 (about a minute)
        argocd.wait_app("models", "app Progressing", _app_health("Progressing"))
        argocd.wait_health("models", name, "Suspended", WAITING, timeout=420)
        argocd.run_action("models", _ref(name, apps_ns), "promote")
        argocd.wait_health("models", name, "Healthy", "1/1", timeout=240)
        argocd.wait_app("models", "app Healthy", _app_health("Healthy"))
        status = kube.gptd(apps_ns, name)["status"]
        assert status["stableRevision"] == status["updateRevision"]

        def one_pod_on(revision: str) -> bool:  # the tiny model's pod gone, the new revision's ready
            pods = [p for p in kube.pods(apps_ns, f"{NAME_LABEL}={name}") if not p["metadata"].get("deletionTimestamp")]
            return [p["metadata"]["labels"][REVISION_LABEL] for p in pods] == [revision] and bool(
                kube.ready_pods(apps_ns, f"{NAME_LABEL}={name}")
            )

        kube.eventually(lambda: one_pod_on(status["stableRevision"]), "one pod, on the promoted revision", timeout=180)
        client = InClusterClient(kube, apps_ns).start()
        email = f"argo-{suffix}@example.com"
        answer = client.run("converse", service_url(kube, apps_ns, name), email, "correct horse battery", timeout=300)
        assert (answer["status"], answer["model"]) == (200, "smollm2-135m-instruct"), answer  # what users now get
    finally:
        kube.run("delete", "applications.argoproj.io", "models", "-n", argocd.namespace, "--wait=false", check=False)
        kube.run("delete", "gptd", "--all", "-n", apps_ns, "--wait=false", check=False)
        kube.run("delete", "applications.argoproj.io", "gpt-operator", "-n", argocd.namespace, "--timeout=120s",
                 check=False, timeout=150)  # fmt: skip
    # the resources finalizer uninstalled the operator; skipCrds kept the CRD (and so every GPTDeployment)
    kube.eventually(lambda: not kube.list("deployments", operator_ns), "the operator's Deployment removed")
    assert kube.get("crd", CRD_NAME) is not None
    kube.run("delete", "namespace", operator_ns, "--wait=false", "--ignore-not-found", check=False)
