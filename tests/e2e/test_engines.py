"""`spec.engine.type: llamacpp` on the real node: llama.cpp's server beside the runtime in each pod, the runtime
answering conversations through it over loopback, and a canary from the builtin engine to llama.cpp that splits
traffic like any other change.

The engine image is gpt-operator.local/llama-server:e2e (hack/images/build.sh llama-server): llama.cpp's
`llama-server`, laid out like the official image, built here from the llama.cpp that the pinned llama-cpp-python
sdist vendors. What this does not prove: the official ghcr.io image itself (no registry here), vLLM (no GPU),
and GPU offload (`--n-gpu-layers`).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from .kube import NAME_LABEL, PROMOTE, REVISION_LABEL, TRACK_LABEL, Kube, gptd_manifest
from .realpods import InClusterClient, on_real_node, service_url

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("free_the_node")]
LLAMA_SERVER_IMAGE = "gpt-operator.local/llama-server:e2e"
LLAMACPP = {"type": "llamacpp", "image": LLAMA_SERVER_IMAGE, "parallel": 2}
ENGINE_RESOURCES = {"cpu": "100m", "memory": "1Gi"}


def _llamacpp_spec(replicas: int, **extra: Any) -> dict[str, Any]:
    spec = {
        "environment": "staging",
        "model": {"source": "builtin:smollm2-135m", "maxContextTokens": 4096},
        "replicas": replicas,
        "engine": LLAMACPP,
        **extra,
    }
    return on_real_node(spec, ENGINE_RESOURCES)


def _pod(kube: Kube, ns: str, selector: str) -> dict[str, Any]:
    (pod,) = kube.ready_pods(ns, selector)
    return pod


def test_a_llamacpp_deployment_runs_both_containers_and_converses_through_llama_cpp(
    kube: Kube, ns: str, client: InClusterClient
) -> None:
    name = "llama"
    kube.apply(gptd_manifest(name, ns, _llamacpp_spec(1)))
    kube.wait_ready(ns, name, 1, timeout=420)
    pod = _pod(kube, ns, f"{NAME_LABEL}={name}")
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert set(statuses) == {"runtime", "engine"}, statuses
    assert all(c["ready"] and c["restartCount"] == 0 for c in statuses.values()), statuses
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["name"] == "fetch-engine-model" and fetch["state"]["terminated"]["exitCode"] == 0

    url = service_url(kube, ns, name)
    answer = client.run("converse", url, f"llama-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery")
    assert answer["status"] == 200, answer
    assert answer["model"] == "smollm2-135m"  # llama-server's --alias: llama.cpp answered, not the builtin engine
    assert answer["content"].strip() and 0 < answer["usage"]["completion_tokens"] <= 16, answer

    # The engine listens on the pod's IP for the kubelet's probes, but nobody else gets in without the key.
    engine_port = next(
        p["containerPort"] for c in pod["spec"]["containers"] if c["name"] == "engine" for p in c["ports"]
    )
    direct = client.run("post", f"http://{pod['status']['podIP']}:{engine_port}/v1/chat/completions")
    assert direct["status"] == 401, direct
    engine_log = kube.run("logs", "-n", ns, pod["metadata"]["name"], "-c", "engine")
    assert "model.gguf" in engine_log


def test_a_canary_from_the_builtin_engine_to_llama_cpp_splits_traffic_then_promotes(
    kube: Kube, ns: str, client: InClusterClient
) -> None:
    name = "swap"
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    builtin = on_real_node(
        {"environment": "staging", "model": {"source": "builtin:tiny"}, "replicas": 2, "rollout": rollout}
    )
    kube.apply(gptd_manifest(name, ns, builtin))
    kube.wait_ready(ns, name, 2, timeout=300)
    kube.apply(gptd_manifest(name, ns, _llamacpp_spec(2, rollout=rollout)))
    kube.wait_gptd(
        ns, name, lambda o: o["status"].get("canaryWeight") == 50 and o["status"].get("phase") == "Paused", "at 50%"
    )

    def split() -> bool:
        sizes = {t: len(kube.ready_pods(ns, f"{NAME_LABEL}={name},{TRACK_LABEL}={t}")) for t in ("stable", "canary")}
        return sizes == {"stable": 1, "canary": 1}

    kube.eventually(split, "1 stable (builtin) + 1 canary (llama.cpp) pod ready", timeout=420)
    stable_pod = _pod(kube, ns, f"{NAME_LABEL}={name},{TRACK_LABEL}=stable")
    canary_pod = _pod(kube, ns, f"{NAME_LABEL}={name},{TRACK_LABEL}=canary")
    assert [c["name"] for c in stable_pod["spec"]["containers"]] == ["runtime"]
    assert sorted(c["name"] for c in canary_pod["spec"]["containers"]) == ["engine", "runtime"]
    stable, canary = (p["metadata"]["labels"][REVISION_LABEL] for p in (stable_pod, canary_pod))

    url = service_url(kube, ns, name)
    kube.eventually(lambda: len(kube.endpoint_ips(ns, name)) == 2, "2 endpoints behind the Service")
    result = client.run("count", url, "200", timeout=300)
    assert result["failures"] == [], result
    # one pod each: Binomial(200, 0.5), mean 100, sd ~7; 4 sd either way fails a correct split with p < 1e-4
    n, p = 200, 0.5
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert mean - 4 * sd <= result["revisions"].get(canary, 0) <= mean + 4 * sd, result
    assert set(result["revisions"]) == {stable, canary}, result

    # each track answers with its own engine (one pod each, so each pod's own SQLite holds the account)
    email = f"swap-{uuid.uuid4().hex[:8]}@example.com"
    on_stable = client.run("converse", f"http://{stable_pod['status']['podIP']}:8000", email, "correct horse battery")
    on_canary = client.run("converse", f"http://{canary_pod['status']['podIP']}:8000", email, "correct horse battery")
    assert (on_stable["status"], on_canary["status"]) == (200, 200), (on_stable, on_canary)
    assert on_stable["model"] == "builtin-tiny" and on_canary["model"] == "smollm2-135m"

    kube.annotate("gptd", name, ns, PROMOTE, "full")
    done = kube.wait_ready(ns, name, 2, timeout=420)
    assert done["status"]["stableRevision"] == canary
    kube.eventually(
        lambda: {p["metadata"]["labels"][REVISION_LABEL] for p in kube.pods(ns, f"{NAME_LABEL}={name}")} == {canary},
        "every pod on llama.cpp",
        timeout=300,
    )
    after = client.run("count", url, "40", timeout=120)
    assert after == {"revisions": {canary: 40}, "failures": []}, after
