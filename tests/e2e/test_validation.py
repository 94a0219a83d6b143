"""Bad GPTDeployments are rejected by the API server at `kubectl apply` time, with a message that says why.

Needs only the CRD (its schema and CEL rules), not the operator.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .kube import API_VERSION, CRD, Kube, load_samples

pytestmark = pytest.mark.e2e

SOURCE = {"source": "builtin:tiny"}
CANARY = {"strategy": "Canary"}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "min-above-max",
        {"model": SOURCE, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas must not exceed maxReplicas",
    ),
    (
        "keda-without-prometheus",
        {
            "model": SOURCE,
            "autoscaling": {
                "provider": "keda",
                "metrics": [{"name": "vllm:num_requests_waiting", "averageValue": "4"}],
            },
        },
        "provider keda with metrics needs prometheusURL",
    ),
    (
        "metric-name-is-promql",
        {"model": SOURCE, "autoscaling": {"metrics": [{"name": 'up{job="x"} or vector(9)', "averageValue": "1"}]}},
        "spec.autoscaling.metrics[0].name",
    ),
    (
        "weights-fall",
        {"model": SOURCE, "rollout": {**CANARY, "canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}}},
        "setWeight values must rise",
    ),
    (
        "step-both",
        {"model": SOURCE, "rollout": {**CANARY, "canary": {"steps": [{"setWeight": 10, "pause": {}}]}}},
        "exactly one of setWeight or pause",
    ),
    (
        "no-weight",
        {"model": SOURCE, "rollout": {**CANARY, "canary": {"steps": [{"pause": {"duration": 5}}]}}},
        "at least one setWeight step",
    ),
    (
        "sleep-equals-wake",
        {"model": SOURCE, "schedule": {"offWindows": [{"days": ["Mon"], "start": "20:00", "end": "20:00"}]}},
        "start) and wake time (end) must differ",
    ),
    (
        "bad-time",
        {"model": SOURCE, "schedule": {"offWindows": [{"days": ["Mon"], "start": "25:00", "end": "08:00"}]}},
        "spec.schedule.offWindows[0].start",
    ),
    ("bad-environment", {"model": SOURCE, "environment": "qa"}, 'spec.environment: Unsupported value: "qa"'),
    ("bad-source", {"model": {"source": "ftp://models/gpt"}}, "spec.model.source"),
    ("no-model", {"environment": "dev"}, "spec.model: Required value"),
    ("too-many-gpus", {"model": SOURCE, "resources": {"gpu": 64}}, "spec.resources.gpu"),
    ("unknown-field", {"model": SOURCE, "replica": 3}, 'unknown field "spec.replica"'),
    # pod options: the operator's own labels, volumes and mount paths are refused (CEL)
    (
        "reserved-pod-label",
        {"model": SOURCE, "podLabels": {"serving.gpt-operator.dev/track": "x"}},
        "keys under serving.gpt-operator.dev/ are the operator's own",
    ),
    ("bad-pod-label-value", {"model": SOURCE, "podLabels": {"team": "not ok!"}}, "spec.podLabels.team"),
    (
        "reserved-volume",
        {"model": SOURCE, "volumes": [{"name": "data", "emptyDir": {}}]},
        "the volume names data, tmp, model and gpt-* are the operator's own",
    ),
    (
        "dangling-mount",
        {"model": SOURCE, "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
        "every volumeMounts[].name must name one of spec.volumes",
    ),
    (
        "mount-over-models",
        {
            "model": SOURCE,
            "volumes": [{"name": "x", "emptyDir": {}}],
            "volumeMounts": [{"name": "x", "mountPath": "/models/x"}],
        },
        "/data, /tmp and /models are the runtime's own mount paths",
    ),
    ("short-grace", {"model": SOURCE, "terminationGracePeriodSeconds": 5}, "spec.terminationGracePeriodSeconds"),
    (
        "peer-both-kinds",
        {"model": SOURCE, "networkPolicy": {"ingress": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}},
        "a peer has ipBlock, or namespaceSelector and/or podSelector",
    ),
    (
        "llamacpp-from-hf",
        {"model": {"source": "hf:HuggingFaceTB/SmolLM2-135M-Instruct"}, "engine": {"type": "llamacpp"}},
        "engine llamacpp needs a GGUF model",
    ),
    (
        "vllm-on-cpu-default-image",
        {"model": {"source": "hf:org/name"}, "engine": {"type": "vllm"}},
        "engine vllm needs resources.gpu > 0",
    ),
    (
        "engine-on-the-runtime-port",
        {"model": {"source": "builtin:smollm2-135m"}, "engine": {"type": "llamacpp", "port": 8000}},
        "engine.port must not be 8000",
    ),
    (
        "quantize-bfloat16",
        {"model": {"source": "builtin:smollm2-135m", "dtype": "bfloat16", "quantize": "int8"}},
        "model.quantize int8 replaces float32 weights",
    ),
    (
        "quantize-on-gpu",
        {"model": {"source": "builtin:smollm2-135m", "quantize": "int8"}, "resources": {"gpu": 1}},
        "model.quantize int8 is for the builtin engine on CPUs",
    ),
    (
        "quantize-llamacpp",
        {"model": {"source": "builtin:smollm2-135m", "quantize": "int8"}, "engine": {"type": "llamacpp"}},
        "model.quantize int8 is for the builtin engine on CPUs",
    ),
    (
        "quantize-int4",
        {"model": {"source": "builtin:smollm2-135m", "quantize": "int4"}},
        "Unsupported value",
    ),
    (
        "unknown-engine",
        {"model": SOURCE, "engine": {"type": "sglang"}},
        "Unsupported value",
    ),
]


def _doc(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": API_VERSION,
            "kind": "GPTDeployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(("name", "spec", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_gptdeployment_is_rejected_with_a_clear_message(
    kube: Kube, crd: str, name: str, spec: dict[str, Any], message: str
) -> None:
    result = kube.attempt("apply", "-f", "-", input=_doc(f"invalid-{name}", spec))
    assert result.returncode != 0, f"the API server accepted an invalid GPTDeployment: {result.stdout}"
    assert "is invalid" in result.stderr or "strict decoding error" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert kube.get("gptdeployment", f"invalid-{name}", "default") is None


def test_every_sample_passes_the_api_server(kube: Kube, crd: str) -> None:
    samples = load_samples()
    assert len(samples) >= 6
    for doc in samples:
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": "default"}}
        result = kube.attempt("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc))
        assert result.returncode == 0, f"{doc['metadata']['name']}: {result.stderr}"


def test_defaults_are_filled_in_by_the_api_server(kube: Kube, crd: str) -> None:
    out = kube.run("apply", "--dry-run=server", "-o", "json", "-f", "-", input=_doc("defaults", {"model": SOURCE}))
    spec = yaml.safe_load(out)["spec"]
    assert spec["environment"] == "dev"
    assert spec["replicas"] == 1
    assert spec["model"]["dtype"] == "float32"


def test_kubectl_apply_f_crds_folder_works(kube: Kube, crd: str) -> None:
    """`kubectl apply -f crds/` as manifests/README.md says (the folder's kustomization is `crds/Kustomization`,
    which kubectl apply -f skips)."""
    out = kube.run("apply", "--dry-run=server", "-f", str(CRD.parent))
    assert "customresourcedefinition.apiextensions.k8s.io/gptdeployments.serving.gpt-operator.dev" in out
