"""The operator installed with `helm install charts/gpt-operator` (hack/tools.sh helm) on the real cluster: watching
one namespace with Roles there (no cluster-wide rights), it reconciles a GPTDeployment to Ready; `helm uninstall`
removes the operator and its RBAC and leaves the CRD and the GPTDeployment.

Two operators must not reconcile the same GPTDeployment: the session's operator (manifests/base, in
gpt-operator-system) watches every namespace, so while this module runs it is scaled to 0 and afterwards back
to its replicas. The helm release gets its own namespace and its own names (release `gpt-helm`: objects
`gpt-helm-gpt-operator`, so no cluster-scoped name meets the base's). With GPT_E2E_OPERATOR=local the session's
operator is a process of this run and cannot be paused: run this module in the default `cluster` mode.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..tools import tool_binary
from .kube import CRD_NAME, NAME_LABEL, ROOT, Kube, gptd_manifest, session_operator_scaled_to_zero
from .realpods import ON_REAL_NODE

pytestmark = pytest.mark.e2e

CHART = ROOT / "charts" / "gpt-operator"
RELEASE = "gpt-helm"
FULLNAME = f"{RELEASE}-gpt-operator"
OPERATOR_IMAGE = os.environ.get("GPT_E2E_OPERATOR_IMAGE", "ghcr.io/gpt-operator/gpt-operator:0.1.0")


class Helm:
    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert not check or result.returncode == 0, f"helm {' '.join(args)}: {result.stdout}{result.stderr}"
        return result


@pytest.fixture(scope="module")
def session_operator_paused(kube: Kube, crd: str) -> Iterator[None]:
    """The base's operator (if deployed) at 0 replicas for this module, then back to what it had."""
    with session_operator_scaled_to_zero(kube):
        yield


@pytest.fixture(scope="module")
def namespaces_for_helm(kube: Kube) -> Iterator[tuple[str, str]]:
    """(the release's namespace, made by `helm install --create-namespace`; the watched one, made here), both
    deleted at the end."""
    suffix = uuid.uuid4().hex[:5]
    release_ns, apps_ns = f"e2e-helm-op-{suffix}", f"e2e-helm-apps-{suffix}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": apps_ns}})
    kube.eventually(lambda: kube.get("serviceaccount", "default", apps_ns), f"namespace {apps_ns} ready")
    try:
        yield release_ns, apps_ns
    finally:
        kube.run("delete", "gptd", "--all", "-n", apps_ns, "--wait=false", check=False)
        for ns in (apps_ns, release_ns):
            kube.run("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_helm_install_reconciles_and_uninstall_cleans_up(
    kube: Kube, session_operator_paused: None, namespaces_for_helm: tuple[str, str], tmp_path: Path
) -> None:
    release_ns, apps_ns = namespaces_for_helm
    helm = Helm(tool_binary("helm"), tmp_path / "helm-home")
    repository, tag = OPERATOR_IMAGE.rsplit(":", 1)
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag},
        "watchNamespaces": [apps_ns],
        "nodeSelector": dict(ON_REAL_NODE),  # the node that runs containers, as tests/e2e/operator does
        "extraEnv": [{"name": "GPT_OPERATOR_RESYNC_SECONDS", "value": "2"}],
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    try:
        helm.run(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            release_ns,
            "--create-namespace",
            "--values",
            str(values_file),
            "--wait",
            "--timeout",
            "180s",
        )
        # helm's --wait returns once replicas - maxUnavailable pods are ready (1 of 2 here): wait for both
        kube.eventually(
            lambda: (
                ((kube.get("deployment", FULLNAME, release_ns) or {}).get("status", {}).get("readyReplicas") == 2)
                or None
            ),
            "both operator replicas ready",
            timeout=180,
        )
        # namespaced RBAC only: a Role in the watched namespace, no ClusterRole to reconcile with
        assert kube.get("role", FULLNAME, apps_ns) is not None
        assert kube.get("clusterrole", FULLNAME) is None
        lease = kube.eventually(lambda: kube.get("lease", "gpt-operator", release_ns), "the leader's Lease")
        assert lease["spec"]["holderIdentity"].startswith("gpt-operator@")

        kube.apply(gptd_manifest("helmed", apps_ns, {"environment": "staging", "model": {"source": "builtin:tiny"}}))
        kube.wait_ready(apps_ns, "helmed", 1, timeout=180)
        child = kube.get("deployment", "helmed", apps_ns)
        assert child is not None
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("GPTDeployment", "helmed")
        assert kube.pods(apps_ns, f"{NAME_LABEL}=helmed")
    finally:
        uninstall = helm.run(
            "uninstall", RELEASE, "--namespace", release_ns, "--wait", "--timeout", "120s", check=False
        )
    assert uninstall.returncode == 0, uninstall.stderr
    for kind, name, ns in [
        ("deployment", FULLNAME, release_ns),
        ("serviceaccount", FULLNAME, release_ns),
        ("role", f"{FULLNAME}-leader-election", release_ns),
        ("rolebinding", f"{FULLNAME}-leader-election", release_ns),
        ("role", FULLNAME, apps_ns),
        ("rolebinding", FULLNAME, apps_ns),
        ("clusterrole", f"{FULLNAME}-rollout-operator", None),
    ]:
        assert kube.get(kind, name, ns) is None, f"{kind} {name} left after helm uninstall"
    kube.eventually(
        lambda: not kube.list("pods", release_ns, "app.kubernetes.io/name=gpt-operator"), "operator pods gone"
    )
    assert not helm.run("list", "--namespace", release_ns, "--short").stdout.strip()
    # Helm never deletes a chart's CRDs, so the GPTDeployment (and what it runs) outlives the operator.
    assert kube.get("crd", CRD_NAME) is not None
    assert kube.gptd(apps_ns, "helmed")
