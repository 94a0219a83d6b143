"""The NetworkPolicy of a GPTDeployment's runtime pods (pure), rendered when spec.networkPolicy.enabled.

Ingress: the API port from `ingress` (default: every pod of the namespace) and from `metrics` (default: the
namespace `monitoring`, for Prometheus; /metrics is served on the same port, so these peers can call the API too).
Egress: unrestricted while `egress` is absent (S3, DynamoDB, SQS and Cognito sit behind changing public
addresses); with a list, only DNS (port 53 to anywhere, so node-local DNS caches work too) and the listed rules.
Only a CNI that enforces NetworkPolicy (Calico, Cilium, ...) applies it; a plain bridge ignores it.
"""

from __future__ import annotations

from typing import Any

from gpt_operator.naming import common_labels, instance_selector
from gpt_operator.render.workload import RUNTIME_PORT
from gpt_operator.spec import NetworkPolicySpec

DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def network_policy(name: str, namespace: str, policy: NetworkPolicySpec) -> dict[str, Any]:
    api_port = [{"port": RUNTIME_PORT, "protocol": "TCP"}]
    ingress = [
        {"from": [p.wire() for p in policy.ingress], "ports": api_port},
        {"from": [p.wire() for p in policy.metrics], "ports": api_port},
    ]
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": instance_selector(name)},
        "policyTypes": ["Ingress"],
        "ingress": [rule for rule in ingress if rule["from"]],
    }
    if policy.egress is not None:
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = [{"ports": DNS_PORTS}, *(_egress_rule(rule.wire()) for rule in policy.egress)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(name)},
        "spec": spec,
    }


def _egress_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """Empty lists left out: the API server drops them, and a live object must compare equal to this one."""
    return {key: value for key, value in rule.items() if value}
