"""Docs and samples that work as written: `kubectl apply -f crds/`, sample namespaces and prerequisites, and
every operator setting documented in manifests/README.md."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from gpt_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SAMPLES_DIR = ROOT / "manifests" / "samples"
SAMPLES = [p for p in sorted(SAMPLES_DIR.glob("*.yaml")) if p.name not in ("kustomization.yaml", "namespaces.yaml")]
KUBECTL_READS = (".yaml", ".yml", ".json")  # what `kubectl apply -f DIR` reads from a directory


def test_kubectl_apply_f_crds_reads_only_custom_resource_definitions() -> None:
    """A kustomization.yaml in crds/ made `kubectl apply -f crds/` fail: it is `crds/Kustomization` now."""
    read = [p for p in (ROOT / "crds").iterdir() if p.suffix in KUBECTL_READS]
    assert read, "no CRD in crds/"
    for path in read:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] == "CustomResourceDefinition", path.name
    assert (ROOT / "crds" / "Kustomization").exists()  # kustomize reads this name; kubectl apply -f skips it


def test_crds_and_the_base_still_build_with_kustomize() -> None:
    assert shutil.which("kubectl"), "kubectl is needed on PATH (a failure, never a skip)"
    for target in ("crds", "manifests/base"):
        out = subprocess.run(["kubectl", "kustomize", target], cwd=ROOT, capture_output=True, text=True, check=True)
        kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
        assert "CustomResourceDefinition" in kinds, target


def test_every_reference_to_the_crds_folder_still_resolves() -> None:
    """hack/, tests/, manifests/, docs and the images may name crds/ paths: none names the old kustomization."""
    mentions = []
    for folder in ("hack", "tests", "manifests", "docs", ".github"):
        base = ROOT / folder
        if base.exists():
            mentions += [
                p for p in base.rglob("*") if p.is_file() and p.suffix in (".py", ".sh", ".yaml", ".yml", ".md")
            ]
    mentions += [ROOT / "README.md", *ROOT.glob("Dockerfile*")]
    for path in mentions:
        text = path.read_text(errors="ignore")
        assert "crds/" + "kustomization.yaml" not in text, path


def test_samples_namespaces_come_first_and_cover_every_sample() -> None:
    namespaces = {d["metadata"]["name"] for d in yaml.safe_load_all((SAMPLES_DIR / "namespaces.yaml").read_text())}
    used = {yaml.safe_load(p.read_text())["metadata"]["namespace"] for p in SAMPLES}
    assert used <= namespaces
    listed = yaml.safe_load((SAMPLES_DIR / "kustomization.yaml").read_text())["resources"]
    assert listed[0] == "namespaces.yaml"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_each_sample_names_its_prerequisites_at_its_top(path: Path) -> None:
    header = path.read_text().split("apiVersion:")[0]
    assert "# Prerequisites:" in header
    namespace = yaml.safe_load(path.read_text())["metadata"]["namespace"]
    assert f"namespace {namespace} (namespaces.yaml)" in header
    spec = yaml.safe_load(path.read_text())["spec"]
    if "secretRef" in spec:
        assert f"Secret {spec['secretRef']['name']}" in header
    if spec["model"]["source"].startswith("pvc:"):
        claim = spec["model"]["source"][4:].split("/")[0]
        assert f"PersistentVolumeClaim {claim}" in header
    if "analysis" in str(spec) or spec.get("monitoring", {}).get("serviceMonitor"):
        assert "Prometheus" in header


def test_every_operator_setting_is_documented() -> None:
    readme = (ROOT / "manifests" / "README.md").read_text()
    missing = [
        f"GPT_OPERATOR_{n.upper()}" for n in OperatorSettings.model_fields if f"GPT_OPERATOR_{n.upper()}" not in readme
    ]
    assert missing == []
