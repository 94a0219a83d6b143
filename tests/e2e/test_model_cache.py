"""model.cache on the real node: an s3:// model (moto's S3 in the namespace) copied once into one shared
PersistentVolumeClaim by the pods' fetch-model init containers, then served by both replicas from it.

The claim binds to a static hostPath PersistentVolume made here; the directory is created on this machine,
which is the real node of `hack/k8s/cluster.sh up --node` (on kind, the node is a container: not covered).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kube import NAME_LABEL, Kube, gptd_manifest
from .realpods import InClusterClient, on_real_node, real_node_name, service_url, start_moto

pytestmark = pytest.mark.e2e
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
UPLOAD = """
import os, sys
from gpt_model.checkpoint import build_tiny, save_checkpoint
from gpt_model.s3 import upload_dir
import boto3
boto3.client("s3").create_bucket(Bucket="models")
model, tok = build_tiny(seed=11)
save_checkpoint("/tmp/ckpt", model, tok)
print(len(upload_dir("/tmp/ckpt", "s3://models/tiny/v1")))
"""


@pytest.fixture()
def volume(kube: Kube, ns: str) -> Iterator[str]:
    """A static PersistentVolume pre-bound to the claim the operator will create."""
    path = Path(f"/var/lib/gpt-operator-e2e/model-cache-{uuid.uuid4().hex[:6]}")
    path.mkdir(parents=True)
    path.chmod(0o777)  # the pods run as uid 10001; hostPath volumes get no fsGroup
    name = f"e2e-{path.name}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"gpt-operator.dev/e2e": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": ns, "name": "cached-model-cache"},
            },
        }
    )
    yield str(path)
    kube.run("delete", "gptd", "cached", "-n", ns, "--ignore-not-found", "--wait=true", check=False, timeout=120)
    kube.run("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)


def test_an_s3_model_is_copied_once_into_the_shared_claim_and_served_by_both_pods(
    kube: Kube, ns: str, operator: None, volume: str
) -> None:
    real_node_name(kube)
    endpoint = start_moto(kube, ns)
    client = InClusterClient(kube, ns, name="uploader").start()
    env = " ".join(f"{k}={v}" for k, v in {**AWS, "AWS_ENDPOINT_URL": endpoint}.items())
    uploaded = kube.run(
        "exec", "-i", "-n", ns, client.name, "--", "env", *env.split(), "python", "-", input=UPLOAD, timeout=120
    )
    objects = int(uploaded.strip().splitlines()[-1])
    assert objects >= 3  # config, weights, tokenizer files

    spec = on_real_node(
        {
            "environment": "staging",
            "replicas": 2,
            "model": {"source": "s3://models/tiny/v1", "cache": {"size": "1Gi"}},
            "env": [{"name": k, "value": v} for k, v in {**AWS, "AWS_ENDPOINT_URL": endpoint}.items()],
        }
    )
    kube.apply(gptd_manifest("cached", ns, spec))
    kube.wait_ready(ns, "cached", 2, timeout=300)
    claim = kube.get("persistentvolumeclaim", "cached-model-cache", ns)
    assert claim is not None and claim["status"]["phase"] == "Bound"
    assert claim["metadata"]["ownerReferences"][0]["name"] == "cached"

    pods = kube.pods(ns, f"{NAME_LABEL}=cached")
    reports = [
        json.loads(kube.run("logs", "-n", ns, p["metadata"]["name"], "-c", "fetch-model").strip().splitlines()[-1])
        for p in pods
    ]
    assert sorted(r["written"] for r in reports)[0] == 0, reports  # one pod found the model there already
    assert sum(r["written"] for r in reports) == objects + 1, reports  # each object copied once (+ ETag record)
    assert (Path(volume) / "s3" / "models" / "tiny" / "v1" / "config.json").exists()
    health = client.run("health", service_url(kube, ns, "cached"))
    assert health["status"] == 200 and health["body"]["status"] == "ok", health
