"""charts/gpt-operator with the real helm (hack/tools.sh helm): it lints, its default render is manifests/base object
by object (kubectl kustomize), a changed chart makes that comparison fail, and each value renders what it says."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ...tools import tool_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "gpt-operator"
NAMESPACE = "gpt-operator-system"
K8S = kubernetes_validate.latest_version()

Key = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """helm(*args) -> CompletedProcess, with Helm's config, cache and data in a temporary directory."""
    binary = tool_binary("helm")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    return run


def render(helm: Any, *values: str, release: str = "gpt-operator") -> dict[Key, dict]:
    """`helm template` with the CRDs, each `values` item a --set, parsed into objects by key."""
    args = ["template", release, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    for value in values:
        args += ["--set", value]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return by_key(yaml.safe_load_all(result.stdout))


def kustomize_base() -> dict[Key, dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", "manifests/base"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return by_key(yaml.safe_load_all(out))


def by_key(documents: Any) -> dict[Key, dict]:
    objects: dict[Key, dict] = {}
    for doc in documents:
        if doc:
            key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
            assert key not in objects, f"{key} rendered twice"
            objects[key] = doc
    return objects


def expected_from_base(base: dict[Key, dict]) -> dict[Key, dict]:
    """manifests/base as the chart must render it. The one normalisation, for a reason: no Namespace. A release's
    namespace exists before its objects (`helm install --create-namespace`), so a chart cannot create its own; the
    README labels it for Pod Security `restricted` as manifests/base/namespace.yaml does. Nothing else differs:
    the chart adds no Helm labels, and its crds/ is the repository's CRD itself (a symlink)."""
    return {key: obj for key, obj in base.items() if key[0] != "Namespace"}


def differences(expected: dict[Key, dict], actual: dict[Key, dict]) -> list[str]:
    """Objects missing or extra, and each differing field of the others as `kind/namespace/name: path`."""
    out = [f"missing {key}" for key in expected if key not in actual]
    out += [f"extra {key}" for key in actual if key not in expected]
    for key in expected.keys() & actual.keys():
        out += [f"{'/'.join(key)}: {path}" for path in field_differences(expected[key], actual[key], "")]
    return sorted(out)


def field_differences(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(a.keys() | b.keys()) for p in field_differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in field_differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "."]


def deployment(objects: dict[Key, dict]) -> dict:
    return objects[("Deployment", NAMESPACE, "gpt-operator")]


def operator_env(objects: dict[Key, dict]) -> dict[str, Any]:
    container = deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def assert_valid_kubernetes(objects: dict[Key, dict]) -> None:
    for key, obj in objects.items():
        if key[0] not in ("CustomResourceDefinition", "PodMonitor"):
            kubernetes_validate.validate(obj, K8S, strict=True)


# --- lint and package ---


@pytest.mark.parametrize("values", [[], ["watchNamespaces={ml,ml-staging}", "metrics.podMonitor.enabled=true"]])
def test_helm_lint_passes(helm: Any, values: list[str]) -> None:
    args = ["lint", str(CHART), "--strict", "--namespace", NAMESPACE]
    for value in values:
        args += ["--set", value]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_lint_catches_a_broken_template(helm: Any, tmp_path: Path) -> None:
    """Positive control of the lint: a copy of the chart with a template that does not parse fails."""
    copy = tmp_path / "gpt-operator"
    subprocess.run(["cp", "-rL", str(CHART), str(copy)], check=True)
    broken = copy / "templates" / "serviceaccount.yaml"
    broken.write_text(broken.read_text().replace("{{ include", "{{ includ"))
    result = helm("lint", str(copy), "--strict")
    assert result.returncode != 0
    assert 'function "includ" not defined' in result.stdout


def test_the_packaged_chart_holds_the_crd_itself(helm: Any, tmp_path: Path) -> None:
    """crds/gptdeployments.yaml in the chart is a symlink to the repository's crds/ (one source, no copy to keep
    in step); `helm package` follows it, so the archive carries the CRD's text."""
    assert (CHART / "crds" / "gptdeployments.yaml").is_symlink()
    result = helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "gpt-operator-0.1.0.tgz") as archive:
        member = archive.getmember("gpt-operator/crds/gptdeployments.yaml")
        assert member.isfile()
        packaged = archive.extractfile(member)
        assert packaged is not None
        assert packaged.read() == (ROOT / "crds" / "gptdeployments.yaml").read_bytes()


# --- the default render is manifests/base ---


def test_default_render_equals_the_kustomize_base_object_by_object(helm: Any) -> None:
    rendered, base = render(helm), kustomize_base()
    assert differences(expected_from_base(base), rendered) == []
    assert [key for key in base if key not in rendered] == [("Namespace", "", NAMESPACE)]
    assert_valid_kubernetes(rendered)


def test_the_comparison_reports_a_changed_chart(helm: Any) -> None:
    """Positive control: a render that differs from the base in one field is reported, at that field."""
    expected = expected_from_base(kustomize_base())
    assert differences(expected, render(helm, "image.tag=other")) == [
        "Deployment/gpt-operator-system/gpt-operator: .spec.template.spec.containers[0].image"
    ]
    assert differences(expected, render(helm, "rbac.rolloutOperatorRole=false")) == [
        "missing ('ClusterRole', '', 'gpt-operator-rollout-operator')"
    ]


def test_chart_and_base_pin_the_same_image() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    base = yaml.safe_load((ROOT / "manifests" / "base" / "kustomization.yaml").read_text())
    assert chart["appVersion"] == base["images"][0]["newTag"]


# --- values render what they say ---


def test_watch_namespaces_turn_the_cluster_role_into_roles_per_namespace(helm: Any) -> None:
    rendered = render(helm, "watchNamespaces={ml,ml-staging}")
    assert operator_env(rendered)["GPT_OPERATOR_NAMESPACES"] == "ml,ml-staging"
    cluster_roles = sorted(key[2] for key in rendered if key[0] in ("ClusterRole", "ClusterRoleBinding"))
    assert cluster_roles == ["gpt-operator-rollout-operator"]
    cluster_role = kustomize_base()[("ClusterRole", "", "gpt-operator")]
    cluster_only = {"customresourcedefinitions", "namespaces"}
    namespaced_rules = [r for r in cluster_role["rules"] if not cluster_only & set(r["resources"])]
    for ns in ("ml", "ml-staging"):
        assert rendered[("Role", ns, "gpt-operator")]["rules"] == namespaced_rules
        binding = rendered[("RoleBinding", ns, "gpt-operator")]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gpt-operator"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpt-operator", "namespace": NAMESPACE}]
    assert ("Role", NAMESPACE, "gpt-operator-leader-election") in rendered  # the Lease stays in the release's
    assert_valid_kubernetes(rendered)


def test_replicas_log_level_resources_and_placement(helm: Any) -> None:
    rendered = render(
        helm,
        "replicas=3",
        "logLevel=DEBUG",
        "resources.requests.cpu=200m",
        "resources.limits.memory=1Gi",
        "nodeSelector.pool=system",
        "tolerations[0].key=dedicated,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
        "image.pullPolicy=Always",
    )
    dep = deployment(rendered)
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    assert operator_env(rendered)["GPT_OPERATOR_LOG_LEVEL"] == "DEBUG"
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "200m", "memory": "128Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["securityContext"]["runAsNonRoot"] is True  # still the base's non-root pod
    assert_valid_kubernetes(rendered)


def test_leader_election_off_runs_one_replica_without_the_lease_role(helm: Any) -> None:
    rendered = render(helm, "leaderElection.enabled=false", "replicas=1")
    assert operator_env(rendered)["GPT_OPERATOR_LEADER_ELECTION"] == "false"
    assert deployment(rendered)["spec"]["replicas"] == 1
    assert not [key for key in rendered if key[2] == "gpt-operator-leader-election"]
    refused = render_failure(helm, "leaderElection.enabled=false")  # 2 replicas by default
    assert "leaderElection.enabled=false needs replicas: 1" in refused


def test_bad_log_settings_are_refused(helm: Any) -> None:
    assert 'logLevel "LOUD"' in render_failure(helm, "logLevel=LOUD")
    assert 'logFormat "xml"' in render_failure(helm, "logFormat=xml")


def test_the_pod_monitor_is_manifests_monitoring_s(helm: Any) -> None:
    assert not [key for key in render(helm) if key[0] == "PodMonitor"]
    rendered = render(helm, "metrics.podMonitor.enabled=true")
    monitor = yaml.safe_load((ROOT / "manifests" / "monitoring" / "operator-podmonitor.yaml").read_text())
    assert rendered[("PodMonitor", NAMESPACE, "gpt-operator")] == monitor
    labelled = render(helm, "metrics.podMonitor.enabled=true", "metrics.podMonitor.labels.release=prom")
    labels = labelled[("PodMonitor", NAMESPACE, "gpt-operator")]["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/name": "gpt-operator", "release": "prom"}


def test_another_release_name_names_every_object_after_it(helm: Any) -> None:
    rendered = render(helm, "watchNamespaces={team-a}", release="team-a")
    names = {key[2] for key in rendered if key[0] != "CustomResourceDefinition"}
    assert names == {
        "team-a-gpt-operator",
        "team-a-gpt-operator-leader-election",
        "team-a-gpt-operator-rollout-operator",
    }
    dep = rendered[("Deployment", NAMESPACE, "team-a-gpt-operator")]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "team-a-gpt-operator"


def render_failure(helm: Any, *values: str) -> str:
    args = ["template", "gpt-operator", str(CHART), "--namespace", NAMESPACE]
    for value in values:
        args += ["--set", value]
    result = helm(*args)
    assert result.returncode != 0, f"rendered although it should not: {values}"
    return result.stderr


def test_the_argocd_example_renders_as_argo_cd_renders_it(helm: Any, tmp_path: Path) -> None:
    """manifests/argocd/examples/operator.yaml's Helm source, rendered as Argo CD's repo-server does (`helm template`
    with its release name, values and --skip-crds): the operator without the CRD. (An invalid value in the example,
    e.g. logLevel "info", fails here; it failed once.)"""
    app = yaml.safe_load((ROOT / "manifests" / "argocd" / "examples" / "operator.yaml").read_text())
    source, destination = app["spec"]["source"], app["spec"]["destination"]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(source["helm"]["valuesObject"]))
    args = ["template", source["helm"]["releaseName"], str(ROOT / source["path"]), "--namespace",
            destination["namespace"], "--values", str(values), "--skip-crds"]  # fmt: skip
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    objects = by_key(yaml.safe_load_all(result.stdout))
    kinds = {kind for kind, _, _ in objects}
    assert "Deployment" in kinds and "CustomResourceDefinition" not in kinds, sorted(kinds)
