"""The autoscaler: an HPA (autoscaling/v2) or a KEDA ScaledObject. Either scales the GPTDeployment itself
through the scale subresource; the operator then splits that count over the rollout tracks (pure).

The user names the runtime's Prometheus series (`vllm:num_requests_waiting`). The HPA reads them from the
custom metrics API, where the shipped prometheus-adapter rules publish them with ':' spelled '_'
(`custom_metric_name`); KEDA queries Prometheus for the same series, summed over the pods behind the client
Service, as an AverageValue target (KEDA's HPA divides the sum by the replica count)."""

from __future__ import annotations

from typing import Any

from gpt_operator.apply import quantity
from gpt_operator.naming import common_labels
from gpt_operator.spec import API_VERSION, KIND, AutoscalingSpec


def behavior(autoscaling: AutoscalingSpec) -> dict[str, Any]:
    """Model pods are slow to start and costly: scale up promptly (2 pods a minute), scale down one pod a
    minute once the load has stayed low for `scaleDownStabilizationSeconds` (default 5 minutes)."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
    }


KEDA_API_VERSION = "keda.sh/v1alpha1"


def custom_metric_name(series: str) -> str:
    """The custom metrics API name of a Prometheus series, as the shipped prometheus-adapter rules publish it."""
    return series.replace(":", "_")


def autoscaler(name: str, namespace: str, autoscaling: AutoscalingSpec) -> dict[str, Any]:
    """The object that scales the GPTDeployment, by the chosen provider."""
    if autoscaling.provider == "keda":
        return scaled_object(name, namespace, autoscaling)
    return hpa(name, namespace, autoscaling)


def _resource_targets(autoscaling: AutoscalingSpec) -> list[tuple[str, int]]:
    return [
        (resource, target)
        for resource, target in (
            ("cpu", autoscaling.target_cpu_utilization_percentage),
            ("memory", autoscaling.target_memory_utilization_percentage),
        )
        if target
    ]


def hpa(name: str, namespace: str, autoscaling: AutoscalingSpec) -> dict[str, Any]:
    """An autoscaling/v2 HPA on CPU/memory utilization and the per-pod custom metrics."""
    metrics: list[dict[str, Any]] = [
        {"type": "Resource", "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": t}}}
        for resource, t in _resource_targets(autoscaling)
    ]
    for metric in autoscaling.metrics:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": custom_metric_name(metric.name)},
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
            "behavior": behavior(autoscaling),
        },
    }


def keda_query(series: str, name: str, namespace: str) -> str:
    """The PromQL a KEDA trigger runs: the series summed over the pods behind the client Service `<name>`
    (the labels a ServiceMonitor scrape gives). `series` is a metric name (the CRD's pattern), never PromQL."""
    return f'sum({series}{{namespace="{namespace}",service="{name}"}}) or vector(0)'


def _plain_number(value: str) -> str:
    """KEDA thresholds are plain numbers: '500m' -> '0.5'."""
    number = quantity(value)
    if number is None:
        raise ValueError(f"{value!r} is not a quantity")
    return format(number.normalize(), "f")


def scaled_object(name: str, namespace: str, autoscaling: AutoscalingSpec) -> dict[str, Any]:
    """A KEDA ScaledObject on the GPTDeployment: CPU/memory triggers plus one Prometheus trigger per metric.
    KEDA creates and owns the HPA behind it (`keda-hpa-<name>`, with the same behavior as ours)."""
    triggers: list[dict[str, Any]] = [
        {"type": resource, "metricType": "Utilization", "metadata": {"value": str(t)}}
        for resource, t in _resource_targets(autoscaling)
    ]
    for metric in autoscaling.metrics:
        triggers.append(
            {
                "type": "prometheus",
                "name": custom_metric_name(metric.name),
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": autoscaling.prometheus_url or "",
                    "query": keda_query(metric.name, name, namespace),
                    "threshold": _plain_number(metric.average_value),
                },
            }
        )
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": name},
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "pollingInterval": 15,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(autoscaling)}},
            "triggers": triggers,
        },
    }
