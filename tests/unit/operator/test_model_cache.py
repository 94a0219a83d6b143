"""model.cache: one PersistentVolumeClaim per GPTDeployment, filled once by each pod's fetch-model init container."""

from __future__ import annotations

from datetime import UTC, datetime

import kubernetes_validate
import pytest
from gpt_operator.reconcile import desire
from gpt_operator.schema import apply_defaults, validation_problems
from gpt_operator.spec import parse_spec

from .test_crd import SCHEMA

pytestmark = pytest.mark.unit
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
K8S = kubernetes_validate.latest_version()


def body(model: dict) -> dict:
    return {
        "apiVersion": "serving.gpt-operator.dev/v1alpha1",
        "kind": "GPTDeployment",
        "metadata": {"name": "chat", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"environment": "staging", "replicas": 3, "model": model},
    }


def children(model: dict) -> list[dict]:
    d = desire(body(model), [], NOON)
    assert d.objects is not None, d.problems
    return d.objects


def test_an_s3_model_with_a_cache_gets_one_claim_and_a_fetch_init_container() -> None:
    objects = children({"source": "s3://models/gpt/v1", "cache": {"size": "20Gi", "storageClassName": "efs"}})
    (claim,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    kubernetes_validate.validate(claim, K8S, strict=True)
    assert claim["metadata"]["name"] == "chat-model-cache"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "efs",
    }
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert cm["data"]["GPT_MODEL_CACHE_DIR"] == "/model-cache"
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    kubernetes_validate.validate(dep, K8S, strict=True)
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "gpt-model-cache", "persistentVolumeClaim": {"claimName": "chat-model-cache"}} in pod["volumes"]
    (init,) = pod["initContainers"]
    assert init["name"] == "fetch-model" and init["command"] == ["python", "-m", "gpt_model.fetch"]
    assert init["image"] == pod["containers"][0]["image"]
    assert init["envFrom"] == pod["containers"][0]["envFrom"]  # the same settings and Secrets (S3 keys)
    assert {"name": "gpt-model-cache", "mountPath": "/model-cache"} in init["volumeMounts"]
    assert {"name": "gpt-model-cache", "mountPath": "/model-cache"} in pod["containers"][0]["volumeMounts"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_hf_model_cache_points_the_hub_cache_at_the_claim() -> None:
    objects = children({"source": "hf:org/model", "cache": {"size": "5Gi", "accessMode": "ReadWriteOnce"}})
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert cm["data"]["HF_HUB_CACHE"] == "/model-cache/hf"
    (claim,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in claim["spec"]


def test_the_fetch_container_asks_for_no_gpu() -> None:
    model = {"source": "s3://models/gpt/v1", "cache": {"size": "20Gi"}}
    raw = body(model)
    raw["spec"]["resources"] = {"cpu": "2", "memory": "8Gi", "gpu": 1}
    d = desire(raw, [], NOON)
    assert d.objects is not None, d.problems
    (dep,) = [o for o in d.objects if o["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" in pod["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in pod["initContainers"][0]["resources"].get("limits", {})


def test_without_a_cache_there_is_no_claim_and_no_init_container() -> None:
    objects = children({"source": "s3://models/gpt/v1"})
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    assert "initContainers" not in dep["spec"]["template"]["spec"]


@pytest.mark.parametrize("source", ["builtin:tiny", "pvc:models/gpt", "/mnt/models"])
def test_a_cache_for_a_source_that_needs_no_copy_is_refused(source: str) -> None:
    with pytest.raises(ValueError, match=r"model\.cache is for s3:// and hf: sources"):
        parse_spec({"model": {"source": source, "cache": {"size": "1Gi"}}})
    d = desire(body({"source": source, "cache": {"size": "1Gi"}}), [], NOON)
    assert d.objects is None and "model.cache" in "; ".join(d.problems)


def test_the_crd_schema_checks_the_cache() -> None:
    ok = {"spec": {"model": {"source": "s3://m/k", "cache": {"size": "20Gi"}}}}
    assert validation_problems(ok, SCHEMA) == []
    assert apply_defaults(ok, SCHEMA)["spec"]["model"]["cache"]["accessMode"] == "ReadWriteMany"
    for bad in ({"size": "lots"}, {"size": "1Gi", "accessMode": "ReadOnlyMany"}, {}):
        assert validation_problems({"spec": {"model": {"source": "s3://m/k", "cache": bad}}}, SCHEMA), bad
