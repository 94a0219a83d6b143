"""A Gateway API HTTPRoute splitting traffic between the canary and stable Services by weight (pure)."""

from __future__ import annotations

from typing import Any

from gpt_operator.naming import common_labels
from gpt_operator.spec import GatewayAPIRouting


def http_route(name: str, namespace: str, routing: GatewayAPIRouting, port: int, canary_weight: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "parentRefs": [ref.wire() for ref in routing.parent_refs],
        "rules": [
            {
                "backendRefs": [
                    {"name": f"{name}-stable", "port": port, "weight": 100 - canary_weight},
                    {"name": f"{name}-canary", "port": port, "weight": canary_weight},
                ]
            }
        ],
    }
    if routing.hostnames:
        spec["hostnames"] = list(routing.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(name)},
        "spec": spec,
    }
