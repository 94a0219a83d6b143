"""The PodDisruptionBudget for prod, and for staging on spot (see GPTDeploymentSpec.pdb_enabled): voluntary
evictions (node drains, upgrades, spot interruption handlers, consolidation) take one pod at a time."""

from __future__ import annotations

from typing import Any

from gpt_operator.naming import common_labels, instance_selector


def pdb(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(name)},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": instance_selector(name)},
            # Pods that never became ready may be evicted, so a broken rollout cannot block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
