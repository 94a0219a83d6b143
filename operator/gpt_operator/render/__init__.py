"""Pure rendering: a parsed spec and a rollout plan -> the Kubernetes objects the operator wants.

No I/O here; apply.py adds owner references and decides what to apply, kube_apply.py applies it.
"""

from __future__ import annotations

from typing import Any

from gpt_operator.render.activator import RUNTIME_SERVICE_SUFFIX, activator_deployment, activator_selector
from gpt_operator.render.autoscaling import autoscaler
from gpt_operator.render.disruption import pdb
from gpt_operator.render.network import network_policy
from gpt_operator.render.routes import http_route
from gpt_operator.render.services import service, service_monitor
from gpt_operator.render.workload import config_map, deployment, model_cache_claim
from gpt_operator.rollout import Plan
from gpt_operator.spec import GPTDeploymentSpec

__all__ = ["render_children"]


def render_children(
    name: str, namespace: str, spec: GPTDeploymentSpec, plan: Plan, *, asleep: bool, to_activator: bool = False
) -> list[dict[str, Any]]:
    """Every child object, in apply order: ConfigMaps, Deployments, Services, the activator (schedule.idle), then
    HTTPRoute/HPA/PDB/monitoring, NetworkPolicy.

    While asleep the autoscaler (HPA or KEDA ScaledObject) is left out (an HPA's minReplicas cannot be 0); the
    tracks are at 0 by the plan. `to_activator`: the client Service selects the activator's pod instead of the
    runtime's (no runtime pod is Ready).
    """
    objects: list[dict[str, Any]] = []
    seen_revisions: set[str] = set()
    claim = model_cache_claim(name, namespace, spec)
    if claim is not None:
        objects.append(claim)
    for track in plan.tracks:
        if track.revision not in seen_revisions:
            seen_revisions.add(track.revision)
            objects.append(config_map(name, namespace, track.template, track.revision))
    for track in plan.tracks:
        objects.append(
            deployment(
                name,
                namespace,
                track.track,
                track.template,
                track.revision,
                track.replicas,
                spec.rollout.rolling_update,
            )
        )
    for suffix, track_label in plan.services.items():
        selector = activator_selector(name) if to_activator and suffix == "" else None
        objects.append(service(name, namespace, suffix, track_label, spec.service, selector))
    idle = spec.idle_sleep
    if idle is not None:  # the Service first: the activator's pod reads its address from the Service variables
        objects.append(service(name, namespace, RUNTIME_SERVICE_SUFFIX, None, spec.service))
        objects.append(activator_deployment(name, namespace, spec, idle))
    routing = spec.rollout.canary.traffic_routing
    if spec.rollout.strategy == "Canary" and routing is not None and routing.gateway_api is not None:
        weight = plan.state.canary_weight or 0
        objects.append(http_route(name, namespace, routing.gateway_api, spec.service.port, weight))
    if spec.hpa_enabled and spec.autoscaling is not None and not asleep:
        objects.append(autoscaler(name, namespace, spec.autoscaling))
    if spec.pdb_enabled:
        objects.append(pdb(name, namespace))
    if spec.monitoring.service_monitor:
        objects.append(service_monitor(name, namespace))
    if spec.network_policy.enabled:
        objects.append(network_policy(name, namespace, spec.network_policy))
    return objects
