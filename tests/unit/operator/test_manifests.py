"""manifests/: the operator's kustomize base and the samples, checked against Kubernetes and the CRD."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from gpt_operator.__main__ import main, render_documents
from gpt_operator.apply import CHILD_KINDS
from gpt_operator.schema import crd_version_schema, validation_problems

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
K8S = kubernetes_validate.latest_version()
CRD = yaml.safe_load((ROOT / "crds" / "gptdeployments.yaml").read_text())
SCHEMA = crd_version_schema(CRD, "v1alpha1")
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
SAMPLES = [p for p in SAMPLES if p.name not in ("kustomization.yaml", "namespaces.yaml")]
BASE = ROOT / "manifests" / "base"
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def base_objects() -> list[dict]:
    out = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def test_one_sample_per_environment_and_strategy() -> None:
    docs = [yaml.safe_load(p.read_text()) for p in SAMPLES]
    assert {d["spec"]["environment"] for d in docs} == {"dev", "test", "staging", "prod"}
    strategies = {d["spec"].get("rollout", {}).get("strategy", "RollingUpdate") for d in docs}
    assert strategies == {"RollingUpdate", "BlueGreen", "Canary"}
    listed = yaml.safe_load((ROOT / "manifests" / "samples" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(["namespaces.yaml", *(p.name for p in SAMPLES)])


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_passes_the_crd_schema_and_renders_valid_objects(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert validation_problems(doc, SCHEMA) == []
    objects, problems = render_documents(path.read_text(), NOON, SCHEMA)
    assert problems == []
    assert any(o["kind"] == "Deployment" for o in objects)
    for obj in objects:
        assert obj["metadata"]["namespace"] == doc["metadata"]["namespace"]
        if obj["kind"] not in ("ServiceMonitor", "HTTPRoute"):  # not built-in kinds
            kubernetes_validate.validate(obj, K8S, strict=True)


def test_render_reports_schema_errors_and_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: serving.gpt-operator.dev/v1alpha1\nkind: GPTDeployment\nmetadata: {name: x}\n"
        "spec: {model: {source: 'builtin:tiny'}, environment: qa}\n"
    )
    assert main(["render", str(bad), "--crd", str(ROOT / "crds" / "gptdeployments.yaml")]) == 1
    assert "GPTDeployment x: .spec.environment: 'qa' not one of" in capsys.readouterr().err


def test_render_command_prints_yaml_objects() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt_operator",
            "render",
            "manifests/samples/prod-rolling.yaml",
            "--now",
            "2026-03-04T12:00:00Z",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert [o["kind"] for o in objects] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ]


def test_base_objects_are_valid_kubernetes() -> None:
    for obj in base_objects():
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_operator_deployment_is_two_replicas_with_a_lease_probes_and_limits() -> None:
    dep = next(o for o in base_objects() if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["GPT_OPERATOR_LIVENESS_ENDPOINT"]["value"] == "http://0.0.0.0:8080/healthz"
    role = next(o for o in base_objects() if o["kind"] == "Role" and o["metadata"]["name"].endswith("leader-election"))
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"]["memory"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_operator_pod_names_its_metrics_port_for_a_pod_monitor() -> None:
    """GET /metrics and /healthz share port 8080, named `metrics` (a PodMonitor's port; no Service is needed)."""
    dep = next(o for o in base_objects() if o["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8080} in c["ports"]
    assert c["livenessProbe"]["httpGet"]["port"] == c["readinessProbe"]["httpGet"]["port"] == "metrics"


def test_rbac_allows_every_child_kind_and_nothing_cluster_wide_beyond_need() -> None:
    role = next(o for o in base_objects() if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "gpt-operator")
    allowed: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                allowed.setdefault((group, resource), set()).update(rule["verbs"])
    plural = {
        "ConfigMap": ("", "configmaps"),
        "Deployment": ("apps", "deployments"),
        "Service": ("", "services"),
        "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
        "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
        "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"),
        "HTTPRoute": ("gateway.networking.k8s.io", "httproutes"),
        "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    }
    kinds = set()
    for path in SAMPLES:
        objects, _ = render_documents(path.read_text(), NOON, SCHEMA)
        kinds |= {o["kind"] for o in objects}
    for kind in kinds:
        assert {"get", "list", "create", "patch", "delete"} <= allowed[plural[kind]], kind
    for kind, (api_version, resource) in CHILD_KINDS.items():  # every kind the informer watches and prunes
        group = api_version.split("/")[0] if "/" in api_version else ""
        assert {"get", "list", "watch", "create", "patch", "delete"} <= allowed.get((group, resource), set()), kind
    assert allowed[("serving.gpt-operator.dev", "gptdeployments/status")] == {"get", "patch"}
    assert "delete" not in allowed[("serving.gpt-operator.dev", "gptdeployments")]
    assert not any("*" in verbs for verbs in allowed.values())
    # Only the shared JWT Secret: created when missing, never listed, patched or deleted (GC deletes it).
    assert allowed[("", "secrets")] == {"get", "create"}


def test_dockerfile_installs_only_the_operator_extra_as_non_root() -> None:
    text = (ROOT / "Dockerfile.operator").read_text()
    assert 'pip install -c constraints.txt ".[operator]"' in text  # the operator extra, pinned
    assert "USER 65532" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = project["dependencies"] + project["optional-dependencies"]["operator"]
    assert not [d for d in installed if d.split("=")[0].strip().lower() in ("torch", "transformers", "numpy")]


def test_kustomize_base_builds_with_the_crd_in_the_operator_namespace() -> None:
    assert shutil.which("kubectl"), "kubectl is needed on PATH (a failure, never a skip)"
    out = subprocess.run(
        ["kubectl", "kustomize", "manifests/base"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    objects = list(yaml.safe_load_all(out))
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
        ]
    )
    role = next(o for o in objects if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "gpt-operator-system"  # the Lease's namespace, from kustomize
    dep = next(o for o in objects if o["kind"] == "Deployment")
    assert dep["metadata"]["namespace"] == "gpt-operator-system"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/gpt-operator/gpt-operator:0.1.0"
