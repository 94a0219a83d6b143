"""End-to-end fixtures: a real API server named by KUBECONFIG, the CRD, the operator, and kubectl.

Runs against whatever `KUBECONFIG` names: the local control plane (`hack/k8s/cluster.sh up`) or a kind
cluster (`hack/kind-e2e.sh`). Without KUBECONFIG in the environment every e2e test is skipped (never a
default ~/.kube/config: the suite installs a CRD and creates namespaces, so it must be asked for).

Everything is checked the way a user checks it: with kubectl. The cluster needs a node that runs containers,
labelled gpt-operator.dev/e2e-node=real (cluster.sh up --node, or kind's node), with the two images on it.
Environment:
  KUBECONFIG              the cluster (required)
  KUBECTL                 the kubectl binary (default: PATH, then the local cluster's bin dir)
  GPT_E2E_OPERATOR        `cluster` (default): deploy the operator from manifests/base (tests/e2e/operator/, which
                          pins it to the real node) with its image and RBAC, and drive it only through the API;
                          `external`: it already runs in the cluster; `local`: run `python -m gpt_operator run`
                          from this checkout for the session (development)
  GPT_E2E_ARTIFACTS       a directory for the operator log (default: a pytest temp dir)
  GPT_E2E_TIMEOUT         seconds each wait allows (default 90)
  GPT_E2E_AUDIT_LOG       the API server's audit log, where the tests can read it (cluster.sh sets it)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .kube import CRD, CRD_NAME, OPERATOR_NAMESPACE, PREREQS, ROOT, Kube, free_port, kubectl_binary
from .realpods import InClusterClient, real_node_name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    ours = [i for i in items if here in Path(str(i.fspath)).resolve().parents]
    for item in ours:
        item.add_marker(pytest.mark.e2e)
    reason = None
    if not os.environ.get("KUBECONFIG"):
        reason = (
            "e2e: KUBECONFIG is not set. Start the local cluster with `hack/k8s/cluster.sh up` and export the "
            "KUBECONFIG it prints (or run hack/kind-e2e.sh on a Docker host)"
        )
    elif kubectl_binary() is None:
        reason = "e2e: no kubectl (set KUBECTL, put it on PATH, or build it with hack/k8s/build.sh)"
    if reason:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=reason))


# --- session fixtures ---


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Kube:
    kubectl = kubectl_binary()
    assert kubectl, "no kubectl"
    artifacts = Path(os.environ.get("GPT_E2E_ARTIFACTS") or tmp_path_factory.mktemp("e2e"))
    artifacts.mkdir(parents=True, exist_ok=True)
    k = Kube(kubectl, artifacts / "operator.log")
    result = k.attempt("get", "--raw", "/readyz")
    if result.returncode != 0 or "ok" not in result.stdout:
        pytest.fail(
            f"e2e: the API server in KUBECONFIG={os.environ.get('KUBECONFIG')} is not ready: "
            f"{result.stderr.strip() or result.stdout.strip()}",
            pytrace=False,
        )
    return k


@pytest.fixture(scope="session")
def crd(kube: Kube) -> str:
    """The GPTDeployment CRD from crds/, established; plus the prerequisites in tests/e2e/prereqs/."""
    kube.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.run("apply", "--server-side", "--force-conflicts", "-f", str(PREREQS))
    kube.run("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    kube.run("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com", "--timeout=60s")
    # Discovery in kubectl and the operator catches up with a new CRD within seconds.
    kube.eventually(lambda: kube.attempt("get", "gptd", "-A").returncode == 0, "gptd in discovery")
    return CRD_NAME


@pytest.fixture(scope="session")
def operator(kube: Kube, crd: str) -> Iterator[None]:
    """The operator for the whole session: deployed in the cluster from manifests/base (`cluster`), already
    there (`external`), or started from this checkout (`local`)."""
    mode = os.environ.get("GPT_E2E_OPERATOR", "cluster")
    if mode in ("cluster", "external"):
        kube.operator_log = None  # read with kubectl logs
        if mode == "cluster":
            kube.run("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "tests" / "e2e" / "operator"))
        kube.run(
            "-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/gpt-operator", "--timeout=180s", timeout=200
        )
        yield
        return
    assert kube.operator_log is not None
    env = {
        **os.environ,
        "GPT_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
        "GPT_OPERATOR_RESYNC_SECONDS": os.environ.get("GPT_OPERATOR_RESYNC_SECONDS", "2"),
        "GPT_OPERATOR_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    with kube.operator_log.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpt_operator", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        time.sleep(3)
        if proc.poll() is not None:
            pytest.fail(
                f"the operator exited with {proc.returncode} at start{kube.operator_log_tail(60)}", pytrace=False
            )
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def namespaces(kube: Kube, operator: None) -> Iterator[Callable[[str], str]]:
    """make(name) creates a namespace for this session; all are deleted (children first, by the GC) at the end,
    while the operator still runs."""
    made: list[str] = []

    def make(name: str) -> str:
        if name not in made:
            kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"gpt-operator.dev/e2e": "true"}},
                }
            )
            kube.eventually(lambda: kube.get("serviceaccount", "default", name), f"namespace {name} ready")
            made.append(name)
        return name

    yield make
    # GPTDeployments first, while their namespace still takes writes (the operator's last reconcile and
    # its finalizer), then the namespaces.
    for name in made:
        kube.run("delete", "gptd", "--all", "-n", name, "--wait=false", check=False)
    for name in made:
        kube.run("wait", "--for=delete", "gptd", "--all", "-n", name, "--timeout=60s", check=False, timeout=70)
    for name in made:
        kube.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    for name in made:
        kube.run("wait", "--for=delete", f"namespace/{name}", "--timeout=60s", check=False, timeout=70)


@pytest.fixture(scope="module")
def ns(namespaces: Callable[[str], str], request: pytest.FixtureRequest) -> str:
    """A fresh namespace for one test module."""
    stem = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    return namespaces(f"e2e-{stem}-{uuid.uuid4().hex[:5]}")


@pytest.fixture(scope="module")
def client(kube: Kube, ns: str, operator: None) -> InClusterClient:
    """A client pod in the module's namespace, on the real node (a module without one fails, never skips)."""
    real_node_name(kube)
    return InClusterClient(kube, ns).start()


@pytest.fixture
def free_the_node(kube: Kube, ns: str) -> Iterator[None]:
    """Each test's GPTDeployments go when it ends: the node has room for one test's pods at a time (modules opt in
    with `pytest.mark.usefixtures("free_the_node")`)."""
    yield
    kube.run("delete", "gptd", "--all", "-n", ns, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _dump_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "kube" in request.fixturenames:
        kube: Kube = request.getfixturevalue("kube")
        with contextlib.suppress(Exception):
            print(kube.run("get", "gptd,deploy,svc,pods", "-A", "-o", "wide", "-l", "!component", check=False))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
