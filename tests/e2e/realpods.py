"""What the tests that run real containers share: the node that runs them, a client pod inside the cluster,
and GPTDeployment specs sized for that node."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .kube import REAL_NODE_LABEL, Kube

RUNTIME_IMAGE = os.environ.get("GPT_E2E_RUNTIME_IMAGE", "ghcr.io/gpt-operator/gpt-runtime:0.1.0")
MOTO_IMAGE = os.environ.get("GPT_E2E_MOTO_IMAGE", "gpt-operator.local/moto:e2e")
CLIENT_SCRIPT = Path(__file__).resolve().parent / "incluster_client.py"
ON_REAL_NODE = {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]}
# What a runtime pod with the tiny model needs on this node (measured: about 300 MB resident), so that every
# sample's pods fit on one 2-core node at once.
SMALL_RESOURCES = {"cpu": "50m", "memory": "768Mi"}


def real_node_name(kube: Kube) -> str:
    """The Ready node that runs containers; fails (never skips) when the cluster has none."""
    key, value = REAL_NODE_LABEL
    nodes = kube.json("get", "nodes", "-l", f"{key}={value}")["items"]
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    ]
    assert ready, (
        f"no Ready node labelled {key}={value}: these tests run real containers "
        "(start the cluster with `hack/k8s/cluster.sh up --node`, or use hack/kind-e2e.sh)"
    )
    return ready[0]


def on_real_node(spec: dict[str, Any], resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec with what this node cannot give overridden: capacity selectors (preferred spot instead of required
    capacity labels, pinned to the real node), no GPUs, small CPU/memory requests. Everything else stays."""
    out = json.loads(json.dumps(spec))
    capacity = out.get("capacity", {})
    out["capacity"] = {
        "type": "spot-with-fallback",
        "provider": capacity.get("provider", "karpenter"),
        "nodeSelector": dict(ON_REAL_NODE),
        **({"tolerations": capacity["tolerations"]} if "tolerations" in capacity else {}),
    }
    out["resources"] = {**out.get("resources", {}), **(resources or SMALL_RESOURCES), "gpu": 0}
    return out


class InClusterClient:
    """A pod with the runtime image's Python, idle, used to send requests from inside the cluster."""

    def __init__(self, kube: Kube, namespace: str, name: str = "client") -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    def start(self) -> InClusterClient:
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": {"app": "e2e-client"}},
                "spec": {
                    "nodeSelector": dict(ON_REAL_NODE),
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "client",
                            "image": RUNTIME_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", "import time\nwhile True: time.sleep(3600)"],
                            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                        }
                    ],
                },
            }
        )
        self.kube.run("wait", "--for=condition=Ready", f"pod/{self.name}", "-n", self.namespace, "--timeout=120s")
        return self

    def command(self, *args: str) -> list[str]:
        kubectl = [self.kube.kubectl, "exec", "-i", "-n", self.namespace, self.name, "--"]
        return [*kubectl, "python", "-", *args]

    def run(self, *args: str, timeout: float = 120) -> Any:
        proc = subprocess.run(
            self.command(*args), input=CLIENT_SCRIPT.read_text(), capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, f"client {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}"
        return json.loads(proc.stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start a client command in the background; its script goes in on stdin, which is then closed."""
        proc = subprocess.Popen(
            self.command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdin is not None
        proc.stdin.write(CLIENT_SCRIPT.read_text())
        proc.stdin.close()
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 300) -> Any:
        """Wait for a command started with popen; its JSON result."""
        assert proc.stdout is not None and proc.stderr is not None
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.returncode == 0, f"client command failed ({proc.returncode}): {err.strip()}"
        return json.loads(out)


def service_url(kube: Kube, namespace: str, service: str) -> str:
    """http://CLUSTER-IP:PORT of a Service (the cluster has no DNS add-on; kube-proxy routes the ClusterIP)."""
    svc = kube.get("service", service, namespace)
    assert svc is not None, f"no Service {namespace}/{service}"
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def start_moto(kube: Kube, namespace: str) -> str:
    """moto's server (S3, DynamoDB, SQS) in the namespace, on the real node; its endpoint URL (the ClusterIP)."""
    labels = {"app": "moto"}
    kube.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "moto", "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": dict(ON_REAL_NODE),
                            "enableServiceLinks": False,  # MOTO_PORT=tcp://... from this very Service
                            "containers": [
                                {
                                    "name": "moto",
                                    "image": MOTO_IMAGE,
                                    "imagePullPolicy": "IfNotPresent",
                                    "ports": [{"containerPort": 5000}],
                                    "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 2},
                                }
                            ],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "moto", "namespace": namespace},
                "spec": {"selector": labels, "ports": [{"port": 5000, "targetPort": 5000}]},
            },
        ]
    )
    kube.run("-n", namespace, "rollout", "status", "deployment/moto", "--timeout=120s", timeout=130)
    return service_url(kube, namespace, "moto")
