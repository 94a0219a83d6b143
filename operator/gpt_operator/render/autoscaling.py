"""The HorizontalPodAutoscaler (autoscaling/v2). It scales the GPTDeployment itself through the scale
subresource; the operator then splits that count over the rollout tracks (pure)."""

from __future__ import annotations

from typing import Any

from gpt_operator.naming import common_labels
from gpt_operator.spec import API_VERSION, KIND, AutoscalingSpec


def hpa(name: str, namespace: str, autoscaling: AutoscalingSpec) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = []
    for resource, target in (
        ("cpu", autoscaling.target_cpu_utilization_percentage),
        ("memory", autoscaling.target_memory_utilization_percentage),
    ):
        if target:
            metrics.append(
                {
                    "type": "Resource",
                    "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": target}},
                }
            )
    for metric in autoscaling.metrics:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric.name},
                    "target": {"type": "AverageValue", "averageValue": metric.average_value},
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": metrics,
            # Model pods are slow to start and costly: scale up promptly, scale down after 5 calm minutes.
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }
