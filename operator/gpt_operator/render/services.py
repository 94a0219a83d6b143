"""Services: `<name>` for clients, plus `<name>-preview` (blue-green) or `<name>-stable`/`-canary` (pure)."""

from __future__ import annotations

from typing import Any

from gpt_operator.naming import REVISION_LABEL, TRACK_LABEL, common_labels, instance_selector
from gpt_operator.spec import GROUP, ServiceSpec

SERVICE_ROLE_LABEL = f"{GROUP}/service"  # "client" for `<name>`, "track" for the others


def service(
    name: str,
    namespace: str,
    suffix: str,
    track: str | None,
    svc: ServiceSpec,
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Service selecting one track, or every track of the deployment when `track` is None, or `selector` (the
    activator's, while the deployment sleeps idle)."""
    if selector is None:
        selector = instance_selector(name) if track is None else {**instance_selector(name), TRACK_LABEL: track}
    role = "client" if suffix == "" else "track"
    labels = {**common_labels(name), SERVICE_ROLE_LABEL: role}
    meta: dict[str, Any] = {"name": f"{name}{suffix}", "namespace": namespace, "labels": labels}
    if svc.annotations:
        meta["annotations"] = dict(sorted(svc.annotations.items()))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            # Only the client-facing Service takes the configured type; track Services stay internal.
            "type": svc.type if suffix == "" else "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def service_monitor(name: str, namespace: str) -> dict[str, Any]:
    """A Prometheus Operator ServiceMonitor scraping /metrics of the client-facing Service."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(name)},
        "spec": {
            "selector": {"matchLabels": {**common_labels(name), SERVICE_ROLE_LABEL: "client"}},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
            # Series carry the track and revision (as serving_gpt_operator_dev_track=...), so canary analysis
            # can compare the canary with the stable pods behind the one client Service.
            "podTargetLabels": [TRACK_LABEL, REVISION_LABEL],
        },
    }
