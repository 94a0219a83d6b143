"""The GPTDeployment CRD: structural, validated by the Kubernetes schema, and agreeing with spec.py."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from gpt_operator.schema import apply_defaults, crd_version_schema, structural_problems, validation_problems
from gpt_operator.spec import parse_spec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "gptdeployments.yaml").read_text())
SCHEMA = crd_version_schema(CRD, "v1alpha1")
SPEC_SCHEMA = SCHEMA["properties"]["spec"]


def _rules(node: dict) -> list[str]:
    found = [v["rule"] for v in node.get("x-kubernetes-validations", [])]
    for sub in node.get("properties", {}).values():
        found += _rules(sub)
    if "items" in node:
        found += _rules(node["items"])
    return found


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(CRD, kubernetes_validate.latest_version(), strict=True)


def test_schema_is_structural() -> None:
    assert structural_problems(SCHEMA) == []


def test_names_scope_and_short_name() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "gptdeployments.serving.gpt-operator.dev"
    assert spec["group"] == "serving.gpt-operator.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "GPTDeployment"
    assert spec["names"]["shortNames"] == ["gptd"]


def test_status_and_scale_subresources() -> None:
    version = CRD["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns() -> None:
    columns = [c["name"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Env", "Strategy", "Ready", "Phase", "Age"]


def test_cross_field_rules_are_cel_validations() -> None:
    rules = _rules(SPEC_SCHEMA)
    assert "self.minReplicas <= self.maxReplicas" in rules
    assert "self.start != self.end || has(self.endDay)" in rules
    assert "self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()" in rules
    assert "has(self.setWeight) != has(self.pause)" in rules


def test_api_server_defaults_agree_with_the_operator_model() -> None:
    """What the API server stores after defaulting parses to the same spec as the bare manifest."""
    raw = {
        "model": {"source": "hf:org/model"},
        "autoscaling": {},
        "rollout": {"strategy": "BlueGreen", "blueGreen": {}},
        "capacity": {},
        "service": {},
    }
    defaulted = apply_defaults(raw, SPEC_SCHEMA)
    assert defaulted["environment"] == "dev"
    assert defaulted["replicas"] == 1
    assert defaulted["autoscaling"]["targetCPUUtilizationPercentage"] == 70
    assert defaulted["rollout"]["blueGreen"]["scaleDownDelaySeconds"] == 30
    bare = apply_defaults({"model": {"source": "builtin:tiny"}}, SPEC_SCHEMA)
    assert bare["rollout"] == {"strategy": "RollingUpdate"}  # the Strategy printer column is never empty
    assert validation_problems({"spec": defaulted}, SCHEMA) == []
    assert parse_spec(defaulted) == parse_spec(raw)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({}, ".spec: model is required"),
        ({"model": {"source": "ftp://nope"}}, ".spec.model.source"),
        ({"model": {"source": "builtin:tiny"}, "environment": "qa"}, "not one of"),
        ({"model": {"source": "builtin:tiny"}, "replicas": 1001}, "above the maximum"),
        ({"model": {"source": "builtin:tiny"}, "resources": {"gpu": -1}}, "below the minimum"),
        ({"model": {"source": "builtin:tiny"}, "capacity": {"provider": "ibm"}}, ".spec.capacity.provider"),
        ({"model": {"source": "builtin:tiny"}, "schedule": {"holidays": ["2026-13-01"]}}, "is not a date"),
        ({"model": {"source": "builtin:tiny"}, "rollout": {"strategy": "Recreate"}}, ".spec.rollout.strategy"),
        ({"model": {"source": "builtin:tiny"}, "typo": True}, ".spec.typo: unknown field"),
        ({"model": {"source": "builtin:tiny", "quantize": "int4"}}, ".spec.model.quantize"),
    ],
)
def test_schema_rejects_bad_specs(spec: dict, fragment: str) -> None:
    problems = validation_problems({"spec": spec}, SCHEMA)
    assert any(fragment in p for p in problems), problems
