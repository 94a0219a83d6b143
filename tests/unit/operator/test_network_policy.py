"""The runtime pods' NetworkPolicy: off by default, ingress from clients and Prometheus, egress as the spec says."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from gpt_operator.render import render_children
from gpt_operator.render.network import network_policy
from gpt_operator.rollout import Plan, RolloutState, TrackPlan
from gpt_operator.schema import apply_defaults, crd_version_schema, validation_problems
from gpt_operator.spec import parse_spec
from pydantic import ValidationError

pytestmark = pytest.mark.unit
K8S = kubernetes_validate.latest_version()
ROOT = Path(__file__).resolve().parents[3]
SCHEMA = crd_version_schema(yaml.safe_load((ROOT / "crds" / "gptdeployments.yaml").read_text()), "v1alpha1")
SOURCE = {"source": "builtin:tiny"}
API_PORT = [{"port": 8000, "protocol": "TCP"}]


def policy_of(**fields) -> dict:
    spec = parse_spec({"model": SOURCE, "networkPolicy": {"enabled": True, **fields}})
    obj = network_policy("demo", "ml", spec.network_policy)
    kubernetes_validate.validate(obj, K8S, strict=True)
    return obj


def children(network: dict | None) -> list[dict]:
    spec = parse_spec({"model": SOURCE, **({"networkPolicy": network} if network is not None else {})})
    plan = Plan([TrackPlan("main", spec.revision, spec.pod_template_spec(), 1)], {"": None}, RolloutState())
    return render_children("demo", "ml", spec, plan, asleep=False)


def test_no_network_policy_unless_enabled() -> None:
    """Off by default: a policy that blocks an ingress controller in another namespace must be asked for."""
    assert "NetworkPolicy" not in [o["kind"] for o in children(None)]
    assert "NetworkPolicy" not in [o["kind"] for o in children({"enabled": False, "egress": []})]
    kinds = [o["kind"] for o in children({"enabled": True})]
    assert kinds[-1] == "NetworkPolicy"


def test_default_policy_admits_the_namespace_and_prometheus_and_leaves_egress_open() -> None:
    obj = policy_of()
    assert obj["metadata"]["name"] == "demo"
    assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gpt-operator"  # so prune finds it
    spec = obj["spec"]
    assert spec["podSelector"] == {"matchLabels": {"serving.gpt-operator.dev/name": "demo"}}  # every track
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": API_PORT},
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": API_PORT,
        },
    ]
    assert "egress" not in spec


def test_named_clients_and_prometheus_replace_the_defaults() -> None:
    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
    web = {"podSelector": {"matchLabels": {"app": "web"}}}
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    spec = policy_of(ingress=[gateway, web], metrics=[prometheus])["spec"]
    assert spec["ingress"] == [{"from": [gateway, web], "ports": API_PORT}, {"from": [prometheus], "ports": API_PORT}]


def test_empty_lists_admit_nobody() -> None:
    assert policy_of(ingress=[], metrics=[])["spec"]["ingress"] == []


def test_egress_list_allows_only_dns_and_the_named_endpoints() -> None:
    redis = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}], "ports": [{"port": 6379}]}
    https = {"ports": [{"port": 443}]}
    spec = policy_of(egress=[redis, https])["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {
            "to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}],
            "ports": [{"port": 6379, "protocol": "TCP"}],
        },
        {"ports": [{"port": 443, "protocol": "TCP"}]},
    ]
    assert policy_of(egress=[])["spec"]["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    ]


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({}, "a peer has ipBlock"),
        ({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, "a peer has ipBlock"),
        ({"ipBlock": {"cidr": "10.0.0.300/8"}}, "is not a CIDR"),
    ],
)
def test_bad_peers_are_refused(peer: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_spec({"model": SOURCE, "networkPolicy": {"enabled": True, "ingress": [peer]}})


def test_crd_schema_accepts_the_policy_and_defaults_agree_with_the_model() -> None:
    raw = {
        "model": SOURCE,
        "networkPolicy": {
            "enabled": True,
            "ingress": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}],
            "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8"}}], "ports": [{"port": "redis"}]}],
        },
    }
    assert validation_problems({"spec": raw}, SCHEMA) == []
    defaulted = apply_defaults(raw, SCHEMA["properties"]["spec"])
    assert parse_spec(defaulted).network_policy == parse_spec(raw).network_policy


@pytest.mark.parametrize(
    ("network", "fragment"),
    [
        ({"enabled": "yes"}, ".spec.networkPolicy.enabled"),
        ({"ingress": [{"ipBlock": {"cidr": "ten/8"}}]}, ".spec.networkPolicy.ingress[0].ipBlock.cidr"),
        ({"egress": [{"ports": [{"protocol": "ICMP"}]}]}, "not one of"),
        ({"egress": [{"too": []}]}, ".spec.networkPolicy.egress[0].too: unknown field"),
    ],
)
def test_crd_schema_refuses_bad_policies(network: dict, fragment: str) -> None:
    problems = validation_problems({"spec": {"model": SOURCE, "networkPolicy": network}}, SCHEMA)
    assert any(fragment in p for p in problems), problems


def test_the_operator_may_apply_and_prune_network_policies() -> None:
    """apply.py lists (prunes) every kind it renders; the operator's ClusterRole allows exactly that."""
    from gpt_operator.apply import CHILD_KINDS

    assert CHILD_KINDS["NetworkPolicy"] == ("networking.k8s.io/v1", "networkpolicies")
    rbac = [d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / "rbac.yaml").read_text()) if d]
    role = next(d for d in rbac if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "gpt-operator")
    rules = [r for r in role["rules"] if "networking.k8s.io" in r["apiGroups"] and "networkpolicies" in r["resources"]]
    assert rules and set(rules[0]["verbs"]) == {"get", "list", "watch", "create", "patch", "delete"}
