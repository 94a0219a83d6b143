"""Where pods may run: spot or on-demand nodes by the provider's label, GPU taints, user selectors.

| provider  | label                                   | spot          | on-demand       |
|-----------|-----------------------------------------|---------------|-----------------|
| karpenter | karpenter.sh/capacity-type              | spot          | on-demand       |
| eks       | eks.amazonaws.com/capacityType          | SPOT          | ON_DEMAND       |
| gke       | cloud.google.com/gke-spot               | "true"        | label absent    |
| aks       | kubernetes.azure.com/scalesetpriority   | spot          | label absent    |

`spot` and `on-demand` are required node affinity; `spot-with-fallback` is a preferred affinity for spot,
so the scheduler (and Karpenter) use spot when there is some and on-demand otherwise. AKS taints its spot
nodes, so spot pods there tolerate that taint.
"""

from __future__ import annotations

from typing import Any

from gpt_operator.spec import CapacitySpec

LABELS: dict[str, tuple[str, str, str | None]] = {
    # provider: (label key, spot value, on-demand value or None when on-demand nodes lack the label)
    "karpenter": ("karpenter.sh/capacity-type", "spot", "on-demand"),
    "eks": ("eks.amazonaws.com/capacityType", "SPOT", "ON_DEMAND"),
    "gke": ("cloud.google.com/gke-spot", "true", None),
    "aks": ("kubernetes.azure.com/scalesetpriority", "spot", None),
}
AKS_SPOT_TOLERATION = {
    "key": "kubernetes.azure.com/scalesetpriority",
    "operator": "Equal",
    "value": "spot",
    "effect": "NoSchedule",
}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GKE_SPOT_TOLERATION = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}


def _spot_term(provider: str) -> dict[str, Any]:
    key, spot, _ = LABELS[provider]
    return {"key": key, "operator": "In", "values": [spot]}


def _on_demand_term(provider: str) -> dict[str, Any]:
    key, spot, on_demand = LABELS[provider]
    if on_demand is None:
        return {"key": key, "operator": "NotIn", "values": [spot]}  # NotIn also matches nodes without the label
    return {"key": key, "operator": "In", "values": [on_demand]}


def placement(capacity: CapacitySpec, capacity_type: str, gpu: int) -> dict[str, Any]:
    """The pod spec fields (affinity, tolerations, nodeSelector) for a capacity choice."""
    provider = capacity.provider
    node_affinity: dict[str, Any] = {}
    if capacity_type == "spot":
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": [_spot_term(provider)]}]
        }
    elif capacity_type == "on-demand":
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": [_on_demand_term(provider)]}]
        }
    elif capacity_type == "spot-with-fallback":
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": 100, "preference": {"matchExpressions": [_spot_term(provider)]}}
        ]
    else:
        raise ValueError(f"unknown capacity type {capacity_type!r}")

    tolerations: list[dict[str, Any]] = []
    if capacity_type in ("spot", "spot-with-fallback"):
        if provider == "aks":
            tolerations.append(AKS_SPOT_TOLERATION)
        if provider == "gke":
            tolerations.append(GKE_SPOT_TOLERATION)
    if gpu > 0:
        tolerations.append(GPU_TOLERATION)
    tolerations += [t.wire() for t in capacity.tolerations]

    out: dict[str, Any] = {"affinity": {"nodeAffinity": node_affinity}}
    if tolerations:
        out["tolerations"] = tolerations
    if capacity.node_selector:
        out["nodeSelector"] = dict(sorted(capacity.node_selector.items()))
    return out
