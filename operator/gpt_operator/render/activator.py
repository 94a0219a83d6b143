"""Scale to zero (spec.schedule.idle), rendered (pure): the activator Deployment that answers the client Service
while no runtime pod is Ready. It reaches them, once they are, through the Service `<name>-runtime` (every track's
pods; rendered by services.service like the track Services).

The activator (`python -m gpt_runtime.activator`, in the runtime's own image) holds each request and exports
`gpt_last_request_timestamp_seconds` as the runtime pods do; the operator reads that gauge through the client
Service, so a request to a sleeping deployment is activity that wakes it. The activator needs no Kubernetes
access (no service account token), and finds `<name>-runtime` by the Service variables of its namespace (no
DNS needed), so that Service is applied before it.
"""

from __future__ import annotations

from typing import Any

from gpt_operator.naming import MANAGED_BY, MANAGED_BY_LABEL, common_labels
from gpt_operator.render.workload import RUNTIME_UID, container_security
from gpt_operator.spec import GROUP, RUNTIME_PORT, GPTDeploymentSpec, IdleSpec

ACTIVATOR_LABEL = f"{GROUP}/activator"
RUNTIME_SERVICE_SUFFIX = "-runtime"
ACTIVATOR_SUFFIX = "-activator"


def activator_selector(name: str) -> dict[str, str]:
    """The activator's pods: not the runtime's (no NAME_LABEL), so no runtime Service, PDB or policy selects them."""
    return {ACTIVATOR_LABEL: name}


def _service_variable(service: str, what: str) -> str:
    """The variable Kubernetes sets in pods for a Service that existed when they started (`chat-runtime` ->
    CHAT_RUNTIME_SERVICE_HOST)."""
    return f"{service.upper().replace('-', '_')}_SERVICE_{what}"


def activator_deployment(name: str, namespace: str, spec: GPTDeploymentSpec, idle: IdleSpec) -> dict[str, Any]:
    """One small pod (no GPU, no token, read-only root) holding requests while the deployment sleeps."""
    upstream = f"{name}{RUNTIME_SERVICE_SUFFIX}"
    host, port = _service_variable(upstream, "HOST"), _service_variable(upstream, "PORT")
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}
    container = {
        "name": "activator",
        "image": spec.image,
        "command": ["python", "-m", "gpt_runtime.activator"],
        "env": [
            # expanded by the kubelet from the Service variables (enableServiceLinks)
            {"name": "GPT_ACTIVATOR_UPSTREAM", "value": f"http://$({host}):$({port})"},
            {"name": "GPT_ACTIVATOR_PORT", "value": str(RUNTIME_PORT)},
            {"name": "GPT_ACTIVATOR_WAKE_TIMEOUT_SECONDS", "value": str(idle.wake_timeout_seconds)},
        ],
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "10m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": container_security(),
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "automountServiceAccountToken": False,
        "enableServiceLinks": True,
        # a held request waits for a pod for wakeTimeoutSeconds: a stopping activator lets them finish
        "terminationGracePeriodSeconds": min(idle.wake_timeout_seconds + 30, 3600),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,  # the runtime image's user
            "runAsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if idle.node_selector:
        pod_spec["nodeSelector"] = dict(idle.node_selector)
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [s.wire() for s in spec.image_pull_secrets]
    pod_labels = {"app.kubernetes.io/name": "gpt-activator", MANAGED_BY_LABEL: MANAGED_BY, **activator_selector(name)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{name}{ACTIVATOR_SUFFIX}",
            "namespace": namespace,
            "labels": {**common_labels(name), "app.kubernetes.io/component": "activator"},
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": activator_selector(name)},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }
