"""kubectl as a user runs it, and the polling every end-to-end assertion needs (used by conftest and tests)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "gptdeployments.yaml"
SAMPLES = ROOT / "manifests" / "samples"
PREREQS = Path(__file__).resolve().parent / "prereqs"
GROUP = "serving.gpt-operator.dev"
API_VERSION = f"{GROUP}/v1alpha1"
CRD_NAME = f"gptdeployments.{GROUP}"
WAKE_UNTIL = f"{GROUP}/wake-until"
PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
NAME_LABEL = f"{GROUP}/name"
TRACK_LABEL = f"{GROUP}/track"
REVISION_LABEL = f"{GROUP}/revision"
TIMEOUT = float(os.environ.get("GPT_E2E_TIMEOUT", "90"))
OPERATOR_NAMESPACE = "gpt-operator-system"
# The node that runs containers (kwok's nodes only pretend): cluster.sh --node and kind-e2e.sh label it.
REAL_NODE_LABEL = ("gpt-operator.dev/e2e-node", "real")

T = TypeVar("T")


def kubectl_binary() -> str | None:
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    found = shutil.which("kubectl")
    if found:
        return found
    state = Path(os.environ.get("GPT_K8S_CLUSTER_DIR", Path(os.environ.get("TMPDIR", "/tmp")) / "gpt-operator-k8s"))
    bin_dir = state / "bin-dir"
    if bin_dir.exists():
        candidate = Path(bin_dir.read_text().strip()) / "kubectl"
        if candidate.exists():
            return str(candidate)
    return None


class KubectlError(AssertionError):
    pass


class Kube:
    """kubectl, as a user runs it, plus the polling every end-to-end assertion needs."""

    def __init__(self, kubectl: str, log_path: Path | None = None) -> None:
        self.kubectl = kubectl
        self.operator_log: Path | None = log_path

    # --- kubectl ---

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(
            [self.kubectl, *args], input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def attempt(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return the result whether or not it failed (for rejections)."""
        return subprocess.run([self.kubectl, *args], input=input, capture_output=True, text=True, timeout=60)

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        out = self.run("get", kind, name, *ns, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        sel = ["-l", selector] if selector else []
        return self.json("get", kind, "-n", namespace, *sel)["items"]

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]] | str, *extra: str) -> str:
        text = obj if isinstance(obj, str) else yaml.safe_dump_all(obj if isinstance(obj, list) else [obj])
        return self.run(
            "apply", "--server-side", "--field-manager=e2e-user", "--force-conflicts", "-f", "-", *extra, input=text
        )

    def patch_merge(self, kind: str, name: str, namespace: str, patch: dict[str, Any]) -> None:
        self.run("patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))

    def annotate(self, kind: str, name: str, namespace: str, key: str, value: str | None) -> None:
        arg = f"{key}-" if value is None else f"{key}={value}"
        self.run("annotate", kind, name, "-n", namespace, arg, "--overwrite")

    # --- what the GPTDeployment's user looks at ---

    def gptd(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get("gptdeployment", name, namespace)
        assert obj is not None, f"GPTDeployment {namespace}/{name} is gone"
        return obj

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods not being deleted."""
        return [p for p in self.list("pods", namespace, selector) if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        def ready(pod: dict[str, Any]) -> bool:
            conds = pod.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        return [p for p in self.pods(namespace, selector) if ready(p)]

    def endpoint_ips(self, namespace: str, service: str) -> set[str]:
        """The ready addresses behind a Service, from its EndpointSlices (what kube-proxy would route to)."""
        ips: set[str] = set()
        for eps in self.list("endpointslices", namespace, f"kubernetes.io/service-name={service}"):
            for ep in eps.get("endpoints") or []:
                if ep.get("conditions", {}).get("ready", True):
                    ips.update(ep.get("addresses", []))
        return ips

    def node_labels(self) -> dict[str, dict[str, str]]:
        return {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in self.json("get", "nodes")["items"]}

    def condition(self, obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
        for cond in obj.get("status", {}).get("conditions", []) or []:
            if cond.get("type") == type_:
                return cond
        return None

    # --- waiting ---

    def eventually(self, check: Callable[[], T], what: str, timeout: float = TIMEOUT, interval: float = 0.5) -> T:
        """Call `check` until it returns a truthy value without raising; fail with its last word."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                value = check()
                if value:
                    return value
                last = value
            except (AssertionError, KubectlError, KeyError, IndexError, TypeError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{self.operator_log_tail()}"
                )
            time.sleep(interval)

    def wait_gptd(
        self, namespace: str, name: str, check: Callable[[dict[str, Any]], Any], what: str, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.gptd(namespace, name)
            return obj if check(obj) else None

        return self.eventually(probe, f"GPTDeployment {namespace}/{name}: {what}", timeout)

    def wait_ready(
        self, namespace: str, name: str, replicas: int | None = None, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Ready=True for the current generation (and `replicas` ready pods when given)."""

        def ready(obj: dict[str, Any]) -> bool:
            status = obj.get("status") or {}
            cond = self.condition(obj, "Ready")
            return bool(
                cond
                and cond["status"] == "True"
                and status.get("observedGeneration") == obj["metadata"]["generation"]
                and (replicas is None or status.get("readyReplicas") == replicas)
            )

        return self.wait_gptd(namespace, name, ready, f"Ready ({replicas} replicas)" if replicas else "Ready", timeout)

    def operator_log_tail(self, lines: int = 30) -> str:
        """The operator's last log lines: its log file when it runs here, else its pod's (kubectl logs)."""
        if self.operator_log is None:
            proc = subprocess.run(
                [self.kubectl, "-n", OPERATOR_NAMESPACE, "logs", "deployment/gpt-operator", f"--tail={lines}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            text = proc.stdout or proc.stderr
        elif self.operator_log.exists():
            text = "\n".join(self.operator_log.read_text(errors="replace").splitlines()[-lines:])
        else:
            return ""
        return "\n--- operator log (last lines) ---\n" + text


@contextlib.contextmanager
def session_operator_scaled_to_zero(kube: Kube) -> Iterator[None]:
    """The session's operator (manifests/base, watching every namespace; if deployed) at 0 replicas while a test
    runs an operator of its own (helm install, Argo CD), so two operators never reconcile the same GPTDeployment;
    then back to its replicas. With GPT_E2E_OPERATOR=local the session's operator is a process of the pytest run
    and cannot be paused: run such tests in the default `cluster` mode."""
    existing = kube.get("deployment", "gpt-operator", OPERATOR_NAMESPACE)
    replicas = existing["spec"].get("replicas", 1) if existing else 0
    if existing:
        kube.run("-n", OPERATOR_NAMESPACE, "scale", "deployment/gpt-operator", "--replicas=0")
        kube.eventually(
            lambda: not kube.list("pods", OPERATOR_NAMESPACE, "app.kubernetes.io/name=gpt-operator"),
            "the session's operator pods gone",
            timeout=60,
        )
    try:
        yield
    finally:
        if existing:
            kube.run("-n", OPERATOR_NAMESPACE, "scale", "deployment/gpt-operator", f"--replicas={replicas}")
            kube.run(
                "-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/gpt-operator", "--timeout=180s", timeout=200
            )


def gptd_manifest(
    name: str, namespace: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": "GPTDeployment", "metadata": meta, "spec": spec}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def awake_for(hours: float = 3) -> dict[str, str]:
    """The wake-until annotation that keeps a scheduled (dev/test) deployment awake whatever the hour."""
    return {WAKE_UNTIL: rfc3339(datetime.now(UTC) + timedelta(hours=hours))}


def load_samples() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "GPTDeployment":
                docs.append(doc)
    return docs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
