"""Autoscaling on an LLM signal, on the real node, with the real parts a user runs: Prometheus (built from its Go
module) scrapes the runtime pods, prometheus-adapter (built from its Go module) publishes
`vllm:num_requests_waiting` in the custom metrics API with the rules shipped in
manifests/monitoring/prometheus-adapter, and kube-controller-manager's HPA controller scales the GPTDeployment
through its scale subresource. Load that keeps requests waiting scales it up; when the load ends it scales back.

Prometheus and the adapter run as processes on this machine (no images for them here): Prometheus reaches the
pods on their addresses, and the API server reaches the adapter through an APIService whose Service has an
endpoint on the node's address (198.18.0.1, the aggregator routes to endpoints). What this does not prove: the
adapter and Prometheus as pods (RBAC of their ServiceAccounts, the ServiceMonitor scrape path), KEDA.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ..tools import tool_binary
from .kube import NAME_LABEL, Kube, free_port, gptd_manifest
from .realpods import InClusterClient, on_real_node, real_node_name, service_url, start_moto

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_RULES = ROOT / "manifests/monitoring/prometheus-adapter/configmap.yaml"
NODE_IP = "198.18.0.1"  # hack/k8s/node.sh: the node's address, on this machine's lo
APISERVICE = "v1beta2.custom.metrics.k8s.io"
SIGNAL = "vllm:num_requests_waiting"
CUSTOM_NAME = "vllm_num_requests_waiting"  # the adapter rules' name for it, which the operator's HPA asks for


def _wait_http(url: str, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{what} did not answer {url} in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def metrics_stack(kube: Kube, ns: str, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping the namespace's runtime pods and prometheus-adapter behind an APIService; yields the
    Prometheus URL. The APIService goes first at the end: a dead aggregated API breaks discovery (and so
    namespace deletion) for every later test."""
    kubeconfig = subprocess.run(
        [kube.kubectl, "config", "view", "--raw", "--minify", "--flatten"], capture_output=True, text=True, check=True
    ).stdout
    (tmp_path / "kubeconfig").write_text(kubeconfig)
    prom_port, adapter_port = free_port(), free_port()
    label = "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in NAME_LABEL)
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {
                "job_name": "gpt-runtime",
                "kubernetes_sd_configs": [
                    {"role": "pod", "kubeconfig_file": str(tmp_path / "kubeconfig"), "namespaces": {"names": [ns]}}
                ],
                "relabel_configs": [
                    {"source_labels": [label], "regex": ".+", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["data"]["config.yaml"]
    (tmp_path / "adapter.yaml").write_text(rules)
    prometheus_url = f"http://127.0.0.1:{prom_port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        prom_log = tmp_path / "prometheus.log"
        with prom_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        tool_binary("prometheus"),
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_http(f"{prometheus_url}/-/ready", "prometheus", procs[-1], prom_log)
        adapter_log = tmp_path / "adapter.log"
        certs = tmp_path / "adapter-certs"
        certs.mkdir()
        kc = str(tmp_path / "kubeconfig")
        with adapter_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        tool_binary("prometheus-adapter"),
                        f"--bind-address={NODE_IP}",
                        f"--secure-port={adapter_port}",
                        f"--cert-dir={certs}",
                        f"--lister-kubeconfig={kc}",
                        f"--authentication-kubeconfig={kc}",
                        f"--authorization-kubeconfig={kc}",
                        f"--prometheus-url={prometheus_url}",
                        f"--config={tmp_path / 'adapter.yaml'}",
                        "--metrics-relist-interval=5s",
                        "--v=2",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        kube.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "custom-metrics", "namespace": ns},
                    "spec": {"ports": [{"port": 443, "targetPort": adapter_port, "protocol": "TCP"}]},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {"name": "custom-metrics", "namespace": ns},
                    "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [{"port": adapter_port, "protocol": "TCP"}]}],
                },
                {
                    "apiVersion": "apiregistration.k8s.io/v1",
                    "kind": "APIService",
                    "metadata": {"name": APISERVICE},
                    "spec": {
                        "group": "custom.metrics.k8s.io",
                        "version": "v1beta2",
                        "service": {"name": "custom-metrics", "namespace": ns, "port": 443},
                        "insecureSkipTLSVerify": True,
                        "groupPriorityMinimum": 100,
                        "versionPriority": 100,
                    },
                },
            ]
        )

        def available() -> bool:
            assert procs[-1].poll() is None, f"adapter exited:\n{adapter_log.read_text()[-3000:]}"
            service = kube.get("apiservice", APISERVICE) or {}
            return any(
                c["type"] == "Available" and c["status"] == "True"
                for c in service.get("status", {}).get("conditions", [])
            )

        kube.eventually(available, f"APIService {APISERVICE} Available", timeout=90)
        yield prometheus_url
    finally:
        kube.run("delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=true", check=False)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)


def _custom_metric(kube: Kube, ns: str) -> list[dict]:
    raw = kube.run("get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/{CUSTOM_NAME}")
    return json.loads(raw)["items"]


def _replicas(kube: Kube, ns: str, name: str) -> tuple[int, int]:
    """(spec.replicas the HPA set, ready pods)."""
    obj = kube.gptd(ns, name)
    return obj["spec"]["replicas"], len(kube.ready_pods(ns, f"{NAME_LABEL}={name}"))


def test_requests_waiting_scale_the_deployment_up_and_back_down(
    kube: Kube, ns: str, operator: None, metrics_stack: str
) -> None:
    real_node_name(kube)
    client = InClusterClient(kube, ns, name="load-client").start()
    name = "autoscaled"
    # accounts in a store every replica shares (as production runs several): a pod the autoscaler adds knows the user
    dynamodb = start_moto(kube, ns)
    kube.run(
        "create", "secret", "generic", f"{name}-store", "-n", ns,
        f"--from-literal=GPT_DATABASE_URL=dynamodb://gpt?region=us-east-1&endpoint_url={dynamodb}",
        "--from-literal=AWS_ACCESS_KEY_ID=testing", "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
    )  # fmt: skip
    spec = on_real_node(
        {
            "environment": "staging",
            "model": {"source": "builtin:tiny"},
            "replicas": 1,
            "secretRef": {"name": f"{name}-store"},
            "env": [
                # a slow fake engine and one generation at a time: a few clients keep requests waiting
                {"name": "GPT_MODEL_SOURCE", "value": "fake:echo?delay_ms=150"},
                {"name": "GPT_MAX_CONCURRENT_GENERATIONS", "value": "1"},
                {"name": "GPT_RATE_LIMIT_FREE", "value": "100000"},
                {"name": "GPT_QUOTA_FREE", "value": "0,0,0,0"},
            ],
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 2,
                "targetCPUUtilizationPercentage": 0,
                "targetMemoryUtilizationPercentage": 0,
                "scaleDownStabilizationSeconds": 15,
                "metrics": [{"name": SIGNAL, "averageValue": "1"}],
            },
        }
    )
    kube.apply(gptd_manifest(name, ns, spec))
    kube.wait_ready(ns, name, 1, timeout=240)
    hpa = kube.get("hpa", name, ns)
    assert hpa is not None and hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == CUSTOM_NAME

    # the shipped adapter rules publish the runtime's series under the name the HPA asks for, per pod
    items = kube.eventually(lambda: _custom_metric(kube, ns), f"{CUSTOM_NAME} in the custom metrics API", timeout=90)
    assert {i["describedObject"]["kind"] for i in items} == {"Pod"} and float(items[0]["value"].rstrip("m")) == 0

    url = service_url(kube, ns, name)
    signed = client.run("signup", url, f"load-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery")
    assert signed["status"] == 200, signed
    started = time.monotonic()
    load = client.popen("load", url, signed["body"]["access_token"], "90", "8")
    kube.eventually(lambda: _replicas(kube, ns, name) == (2, 2), "2 ready replicas under load", timeout=80)
    scaled_up = time.monotonic() - started
    held: list[tuple[int, int]] = []
    while load.poll() is None:  # the load goes on: the HPA keeps both pods (8 clients, 1 generation at a time)
        held.append(_replicas(kube, ns, name))
        time.sleep(2)
    result = client.finish(load, timeout=60)
    assert held and all(replicas == 2 for replicas, _ in held), held
    assert set(result["statuses"]) == {"200"} and result["statuses"]["200"] > 50, result
    load_ended = time.monotonic()

    kube.eventually(lambda: _replicas(kube, ns, name) == (1, 1), "back to 1 replica after the load", timeout=150)
    scaled_down = time.monotonic() - load_ended
    print(f"\nscale-up under load: {scaled_up:.0f} s; scale-down after the load: {scaled_down:.0f} s")
    events = kube.run("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", check=False)
    assert "SuccessfulRescale" in events or "New size" in events, events
