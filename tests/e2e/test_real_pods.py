"""The product as users deploy it, on the node that runs containers: the operator in its own pod under its own
RBAC, and every sample in manifests/samples/ serving from real runtime pods that pass their own probes.

Each sample is applied as written except for what this node cannot give, all in `realpods.on_real_node`:
- capacity: the node has no spot/on-demand labels of any cloud, so the capacity type becomes preferred spot and a
  nodeSelector pins the pods to the real node (kwok's nodes would only pretend to run them);
- resources: no GPUs here, and CPU/memory requests small enough for 24 pods on one 2-core node;
- model.source: the samples' hf:, s3: and pvc: models are not reachable here, and builtin:small is too big for
  24 pods; every sample serves the image's builtin:tiny (chat-dev already does, as written), except chat-llamacpp,
  which keeps its builtin:smollm2-135m (llama.cpp reads its GGUF) with the llama-server image built here
  (gpt-operator.local/llama-server:e2e) in place of ghcr.io's;
- namespace: one test namespace for all of them (the kwok suite uses the samples' own namespaces);
- the Secrets that two samples reference are created, as their users would.
What stays as written: environment, replicas, autoscaling, rollout strategy and steps, schedule, service,
secretRef, env (including the prod sample's Redis URL, which does not resolve here: the runtime serves without
its cache, as designed), monitoring.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .kube import NAME_LABEL, OPERATOR_NAMESPACE, Kube, awake_for, load_samples
from .realpods import InClusterClient, on_real_node, real_node_name, service_url

pytestmark = pytest.mark.e2e

OPERATOR_SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:gpt-operator"
REPLICAS = {
    "chat-dev": 1,
    "chat-test": 2,
    "chat-staging": 4,
    "chat": 3,
    "chat-bg": 3,
    "chat-canary": 10,
    "chat-llamacpp": 1,
}
CONTAINERS = {"chat-llamacpp": {"runtime", "engine"}}  # the others: the runtime alone
LLAMA_SERVER_IMAGE = "gpt-operator.local/llama-server:e2e"


@pytest.fixture(scope="module")
def real_node(kube: Kube) -> str:
    return real_node_name(kube)


def test_the_operator_runs_in_its_pod_on_the_real_node(kube: Kube, operator: None, real_node: str) -> None:
    """Deployed from manifests/base: two replicas (one leads), its image, its service account, non-root, each
    Ready by its own probe (the standby answers it too)."""
    assert os.environ.get("GPT_E2E_OPERATOR", "cluster") in ("cluster", "external"), "the operator must run in-cluster"
    pods = kube.eventually(
        lambda: (p := kube.ready_pods(OPERATOR_NAMESPACE, "app.kubernetes.io/name=gpt-operator")) and len(p) == 2 and p,
        "two Ready operator pods",
    )
    for pod in pods:
        assert pod["spec"]["nodeName"] == real_node
        assert pod["spec"]["serviceAccountName"] == "gpt-operator"
        (status,) = pod["status"]["containerStatuses"]
        assert status["image"].endswith("ghcr.io/gpt-operator/gpt-operator:0.1.0")
        assert status["ready"] and status["restartCount"] == 0, status
        uid = kube.run("exec", "-n", OPERATOR_NAMESPACE, pod["metadata"]["name"], "--", "id", "-u").strip()
        assert uid == "65532"


@pytest.fixture(scope="module")
def samples_ns(kube: Kube, namespaces: Callable[[str], str], operator: None, real_node: str) -> Iterator[str]:
    """Every sample applied (awake) into one namespace with the node's overrides, and Ready with all replicas."""
    ns = namespaces("e2e-real-samples")
    for name in ("chat-secrets", "chat-staging-secrets"):
        kube.run("create", "secret", "generic", name, "-n", ns, "--from-literal=GPT_RATE_LIMIT_FREE=120")
    docs = load_samples()
    assert {d["metadata"]["name"] for d in docs} == set(REPLICAS), "samples changed: update REPLICAS"
    for doc in docs:
        doc["metadata"]["namespace"] = ns
        doc["metadata"].setdefault("annotations", {}).update(awake_for())
        doc["spec"] = on_real_node(doc["spec"])
        if doc["spec"].get("engine", {}).get("type") == "llamacpp":
            doc["spec"]["engine"]["image"] = LLAMA_SERVER_IMAGE
        else:
            doc["spec"]["model"] = {**doc["spec"]["model"], "source": "builtin:tiny"}
        doc["spec"]["model"].pop("revision", None)
    kube.apply(docs)
    for name, replicas in REPLICAS.items():
        kube.wait_ready(ns, name, replicas, timeout=420)
    yield ns
    kube.run("delete", "gptd", "--all", "-n", ns, "--wait=false", check=False)  # 24 pods: room for the next module


@pytest.fixture(scope="module")
def client(kube: Kube, samples_ns: str) -> InClusterClient:
    return InClusterClient(kube, samples_ns).start()


@pytest.mark.parametrize("name", list(REPLICAS))
def test_sample_serves_from_real_pods_that_pass_their_probes(
    kube: Kube, samples_ns: str, client: InClusterClient, real_node: str, name: str
) -> None:
    gptd = kube.gptd(samples_ns, name)
    assert gptd["status"]["phase"] == "Available"
    assert gptd["status"]["jwtSecret"] == f"{name}-jwt"
    pods = kube.ready_pods(samples_ns, f"{NAME_LABEL}={name}")
    assert len(pods) == REPLICAS[name]
    for pod in pods:
        assert pod["spec"]["nodeName"] == real_node
        statuses = pod["status"]["containerStatuses"]
        assert {s["name"] for s in statuses} == CONTAINERS.get(name, {"runtime"})
        # Ready: the startup, liveness and readiness probes the operator rendered all pass, first time
        for status in statuses:
            assert status["ready"] and status["started"] and status["restartCount"] == 0, status
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    # The Service answers from inside the cluster, through kube-proxy, with one of its pods' revisions.
    answer = client.run("health", service_url(kube, samples_ns, name))
    assert answer["status"] == 200, answer
    assert answer["body"]["revision"] in {p["metadata"]["labels"]["serving.gpt-operator.dev/revision"] for p in pods}
    assert answer["body"]["instance"] in {p["metadata"]["name"] for p in pods}


def test_the_runtime_runs_as_uid_10001_with_only_data_and_tmp_writable(
    kube: Kube, samples_ns: str, client: InClusterClient
) -> None:
    (pod, *_) = kube.ready_pods(samples_ns, f"{NAME_LABEL}=chat")
    probe = (
        "import os, json\n"
        "out = {'uid': os.getuid()}\n"
        "for d in ['/data', '/tmp', '/', '/opt/venv', '/home/gpt', '/models']:\n"
        "    try:\n"
        "        open(os.path.join(d, '.w'), 'w').close(); os.remove(os.path.join(d, '.w')); out[d] = True\n"
        "    except OSError:\n"
        "        out[d] = False\n"
        "print(json.dumps(out))"
    )
    out = json.loads(kube.run("exec", "-n", samples_ns, pod["metadata"]["name"], "--", "python", "-c", probe))
    assert out == {"uid": 10001, "/data": True, "/tmp": True, "/": False, "/opt/venv": False,
                   "/home/gpt": False, "/models": False}  # fmt: skip


def test_every_write_of_the_operator_is_its_service_accounts(kube: Kube, samples_ns: str) -> None:
    """The API server's audit log: the operator's writes come from its own service account (its RBAC), and
    it wrote each sample's Deployments."""
    path = os.environ.get("GPT_E2E_AUDIT_LOG")
    assert path, "GPT_E2E_AUDIT_LOG is not set: the cluster must keep an audit log (cluster.sh and kind-e2e.sh do)"
    writers: dict[str, set[str]] = {}
    with open(path) as log:
        for line in log:
            event: dict[str, Any] = json.loads(line)
            ref = event.get("objectRef") or {}
            if (
                (
                    ref.get("namespace") == samples_ns
                    and ref.get("resource") == "deployments"
                    and not ref.get("subresource")
                )
                and event["verb"] in ("create", "patch", "update")
                and event["responseStatus"]["code"] < 300
            ):
                writers.setdefault(ref["name"], set()).add(event["user"]["username"])
    for name in ("chat", "chat-dev", "chat-canary-stable", "chat-bg-blue"):
        assert writers.get(name) == {OPERATOR_SA}, (name, writers.get(name))
