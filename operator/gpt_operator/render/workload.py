"""One Deployment per track and one immutable runtime ConfigMap per revision (pure)."""

from __future__ import annotations

import json
from typing import Any

from gpt_operator.naming import (
    REVISION_LABEL,
    TEMPLATE_ANNOTATION,
    TRACK_LABEL,
    common_labels,
    config_map_name,
    jwt_secret_name,
    track_deployment_name,
    track_selector,
)
from gpt_operator.render import engine as engine_render
from gpt_operator.render.capacity import placement
from gpt_operator.spec import RUNTIME_PORT, GPTDeploymentSpec, ResourcesSpec, RollingUpdateSpec

DATA_DIR = "/data"
MODELS_DIR = "/models"
RUNTIME_UID = 10001
# The runtime image converts the built-in models at build time into its read-only /models; other sources
# (hf:, s3:) are converted at start into the pod's writable data volume.
IMAGE_MODELS_DIR = "/models"
MODEL_CACHE_DIR = "/model-cache"  # model.cache's claim, in the init container and the runtime alike
MODEL_CACHE_VOLUME = "gpt-model-cache"
# After a pod is told to stop, kube-proxy and every other node take a moment to drop it from the Service; it
# keeps serving meanwhile, so no new connection lands on a closed port during a rollout.
PRESTOP_SLEEP_SECONDS = 5
# What the grace period keeps after the preStop sleep and the runtime's drain: closing backends, exiting.
SHUTDOWN_MARGIN_SECONDS = 5


def spec_from_template(template: dict[str, Any]) -> GPTDeploymentSpec:
    """The pod-deciding spec recorded on a track (see GPTDeploymentSpec.pod_template_spec)."""
    return GPTDeploymentSpec.model_validate({k: v for k, v in template.items() if v is not None})


def _model_source(source: str) -> tuple[str, dict[str, Any] | None]:
    """The runtime's GPT_MODEL_SOURCE, and a read-only volume for pvc: sources."""
    if not source.startswith("pvc:"):
        return source, None
    claim, _, path = source[len("pvc:") :].partition("/")
    volume = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    return f"{MODELS_DIR}/{claim}/{path}".rstrip("/"), volume


def _cache_dir(spec: GPTDeploymentSpec, source: str) -> str:
    """Where the model is copied: the image's own (built-ins), the shared claim, or the pod's emptyDir."""
    if source.startswith("builtin:"):
        return IMAGE_MODELS_DIR
    return MODEL_CACHE_DIR if spec.model.cache is not None else f"{DATA_DIR}/models"


def model_cache_claim(name: str, namespace: str, spec: GPTDeploymentSpec) -> dict[str, Any] | None:
    """The PersistentVolumeClaim of `model.cache`, shared by every pod of every track (None without one)."""
    cache = spec.model.cache
    if cache is None:
        return None
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": model_cache_claim_name(name), "namespace": namespace, "labels": common_labels(name)},
        "spec": {"accessModes": [cache.access_mode], "resources": {"requests": {"storage": cache.size}}},
    }
    if cache.storage_class_name:
        claim["spec"]["storageClassName"] = cache.storage_class_name
    return claim


def model_cache_claim_name(name: str) -> str:
    return f"{name}-model-cache"


def runtime_config(spec: GPTDeploymentSpec) -> dict[str, str]:
    """The runtime's settings (GPT_* environment) for one revision. Beside an engine container, the runtime's
    model is the engine on loopback (render/engine.py)."""
    if spec.engine.external:
        source = engine_render.runtime_model_source(spec)
        # a builtin's tokenizer (counting prompt tokens) is in the image, converted at build time
        cache_dir = IMAGE_MODELS_DIR if spec.model.source.startswith("builtin:") else f"{DATA_DIR}/models"
    else:
        source, _ = _model_source(spec.model.source)
        cache_dir = _cache_dir(spec, source)
    data = {
        "GPT_HOST": "0.0.0.0",
        "GPT_PORT": str(RUNTIME_PORT),
        "GPT_DATA_DIR": DATA_DIR,
        "GPT_MODEL_CACHE_DIR": cache_dir,
        "GPT_LOG_FORMAT": "json",
        "GPT_MODEL_SOURCE": source,
        "GPT_MODEL_DTYPE": spec.model.dtype,
    }
    if spec.model.cache is not None and source.startswith("hf:") and not spec.engine.external:
        data["HF_HUB_CACHE"] = f"{MODEL_CACHE_DIR}/hf"  # where the init container puts the snapshot
    if spec.model.revision:
        data["GPT_MODEL_REVISION"] = spec.model.revision
    if spec.model.max_context_tokens:
        data["GPT_MAX_CONTEXT_TOKENS"] = str(spec.model.max_context_tokens)
    if spec.model.quantize:
        data["GPT_MODEL_QUANTIZE"] = spec.model.quantize
    return data


def config_map(name: str, namespace: str, template: dict[str, Any], revision: str) -> dict[str, Any]:
    spec = spec_from_template(template)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(name, revision),
            "namespace": namespace,
            "labels": {**common_labels(name), REVISION_LABEL: revision},
        },
        "immutable": True,
        "data": runtime_config(spec),
    }


def _resources(resources: ResourcesSpec) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    limits: dict[str, Any] = {"memory": resources.memory}
    if resources.gpu:
        requests["nvidia.com/gpu"] = str(resources.gpu)
        limits["nvidia.com/gpu"] = str(resources.gpu)
    return {"requests": requests, "limits": limits}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _env_from(name: str, revision: str, spec: GPTDeploymentSpec) -> list[dict[str, Any]]:
    """The runtime ConfigMap, then the operator's JWT Secret, then the user's Secret: a later source wins in
    Kubernetes, so a GPT_JWT_SECRET in the user's Secret overrides the generated one."""
    env_from: list[dict[str, Any]] = [
        {"configMapRef": {"name": config_map_name(name, revision)}},
        {"secretRef": {"name": jwt_secret_name(name)}},
    ]
    if spec.secret_ref:
        env_from.append({"secretRef": {"name": spec.secret_ref.name}})
    return env_from


def _label_env(variable: str, label: str) -> dict[str, Any]:
    """An environment variable holding one of the pod's own labels (downward API)."""
    return {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}}


def shutdown_timeout_seconds(spec: GPTDeploymentSpec) -> int:
    """The runtime's drain budget after SIGTERM (GPT_SHUTDOWN_TIMEOUT_S): what the grace period leaves after
    the preStop sleep and a margin for closing, so open streams end before the kubelet's SIGKILL."""
    return max(1, spec.effective_termination_grace_seconds - PRESTOP_SLEEP_SECONDS - SHUTDOWN_MARGIN_SECONDS)


def _env(name: str, spec: GPTDeploymentSpec) -> list[dict[str, Any]]:
    """The pod's revision and track (GET /health reports them), its drain budget, the engine's API key (beside an
    engine), then the user's spec.env. A user entry of the same name replaces ours: server-side apply refuses
    duplicate names in a container's env. (The drain budget is here, not in the immutable ConfigMap, so existing
    revisions' ConfigMaps stay as they are; the key is a Secret's, never in a ConfigMap.)"""
    user = [e.wire() for e in spec.env or []]
    taken = {e["name"] for e in user}
    ours = [
        _label_env("GPT_REVISION", REVISION_LABEL),
        _label_env("GPT_TRACK", TRACK_LABEL),
        {"name": "GPT_SHUTDOWN_TIMEOUT_S", "value": str(shutdown_timeout_seconds(spec))},
    ]
    if spec.engine.external:
        ours.append(engine_render.runtime_env(name))
    return [e for e in ours if e["name"] not in taken] + user


def _topology_spread(name: str, track: str, spec: GPTDeploymentSpec) -> list[dict[str, Any]]:
    """The user's constraints (a missing labelSelector selects the track's pods), or by default: spread each
    track over zones where possible."""
    own = {"labelSelector": {"matchLabels": track_selector(name, track)}}
    if spec.capacity.topology_spread_constraints:
        return [{**own, **c.wire()} for c in spec.capacity.topology_spread_constraints]
    return [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            **own,
        }
    ]


def _pod_options(spec: GPTDeploymentSpec) -> dict[str, Any]:
    """serviceAccountName, imagePullSecrets and priorityClassName, where the spec sets them."""
    out: dict[str, Any] = {}
    if spec.service_account_name:
        out["serviceAccountName"] = spec.service_account_name
    if spec.image_pull_secrets:
        out["imagePullSecrets"] = [s.wire() for s in spec.image_pull_secrets]
    if spec.priority_class_name:
        out["priorityClassName"] = spec.priority_class_name
    return out


def container_security() -> dict[str, Any]:
    """What every container the operator renders runs with: no privilege escalation, read-only root, no
    capabilities."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _resources_without_gpu(spec: GPTDeploymentSpec) -> dict[str, Any]:
    """spec.resources for an init container that copies a model: no GPU."""
    resources = _resources(spec.resources or ResourcesSpec())
    for part in ("requests", "limits"):
        resources.get(part, {}).pop("nvidia.com/gpu", None)
    return resources


def _fetch_model(name: str, revision: str, spec: GPTDeploymentSpec, cache_mount: dict[str, str]) -> dict[str, Any]:
    """The init container that fills the shared model cache once (gpt_model.fetch): the runtime's image,
    settings and Secrets (S3 credentials, HF_TOKEN), no GPU."""
    resources = _resources_without_gpu(spec)
    return {
        "name": "fetch-model",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["python", "-m", "gpt_model.fetch"],
        "envFrom": _env_from(name, revision, spec),
        "env": [e.wire() for e in spec.env or []],
        "resources": resources,
        "securityContext": container_security(),
        "volumeMounts": [cache_mount, {"name": "tmp", "mountPath": "/tmp"}],
    }


def pod_template(name: str, track: str, template: dict[str, Any], revision: str) -> dict[str, Any]:
    spec = spec_from_template(template)
    resources = spec.resources or ResourcesSpec()
    engine = spec.engine.external
    _, model_volume = _model_source(spec.model.source)
    mounts: list[dict[str, Any]] = [{"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    if model_volume is not None:
        volumes.append(model_volume)
        if not engine:  # beside an engine, the engine reads the claim (render/engine.py)
            claim = model_volume["persistentVolumeClaim"]["claimName"]
            mounts.append({"name": "model", "mountPath": f"{MODELS_DIR}/{claim}", "readOnly": True})
    init_containers: list[dict[str, Any]] = []
    containers: list[dict[str, Any]] = []
    cache_claim = model_cache_claim_name(name) if spec.model.cache is not None else None
    if engine:
        # The engine loads the model (from the cache claim when model.cache is set), the runtime none.
        volumes += engine_render.engine_volumes(spec, cache_claim)
        if engine_render.fetches(spec):
            init_containers.append(
                engine_render.fetch_container(
                    spec, _env_from(name, revision, spec), _resources_without_gpu(spec), container_security()
                )
            )
        containers.append(
            engine_render.engine_container(name, spec, RUNTIME_PORT, _resources(resources), container_security())
        )
    elif cache_claim is not None:
        cache_mount = {"name": MODEL_CACHE_VOLUME, "mountPath": MODEL_CACHE_DIR}
        volumes.append({"name": MODEL_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache_claim}})
        mounts.append(cache_mount)
        init_containers.append(_fetch_model(name, revision, spec, cache_mount))
    # The user's extra volumes and mounts come last; spec.py refuses the names and paths used above.
    mounts += [m.wire() for m in spec.volume_mounts]
    volumes += [v.wire() for v in spec.volumes]
    container: dict[str, Any] = {
        "name": "runtime",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "envFrom": _env_from(name, revision, spec),
        "env": _env(name, spec),
        # Beside an engine, spec.resources (GPUs included) are the engine's; the runtime gets runtimeResources.
        "resources": engine_render.runtime_resources(spec) if engine else _resources(resources),
        # Loading a model takes a while: the startup probe allows 10 minutes before liveness applies.
        "startupProbe": _probe("/health", 10, 60),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "livenessProbe": _probe("/health", 10, 3),
        "readinessProbe": _probe("/ready", 5, 3),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    containers.insert(0, container)
    pod_spec: dict[str, Any] = {
        **({"initContainers": init_containers} if init_containers else {}),
        "containers": containers,
        # The preStop sleep, then the runtime's drain (GPT_SHUTDOWN_TIMEOUT_S), then SIGKILL: longer on spot.
        "terminationGracePeriodSeconds": spec.effective_termination_grace_seconds,
        # No docker-link variables for the namespace's Services: they would put GPT_* names in the runtime's
        # environment (a Service `gpt` sets GPT_PORT=tcp://IP:PORT; only the ConfigMap's value overrides it).
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": volumes,
        "topologySpreadConstraints": _topology_spread(name, track, spec),
        **placement(spec.capacity, spec.effective_capacity_type, resources.gpu),
        **_pod_options(spec),
    }
    # The user's labels never replace the operator's (its selectors and revision); its own prefix is refused
    # by spec.py. The user's annotations may replace the prometheus.io ones (e.g. scrape: "false").
    labels = {**spec.pod_labels, **common_labels(name), TRACK_LABEL: track, REVISION_LABEL: revision}
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(RUNTIME_PORT),
        "prometheus.io/path": "/metrics",
        **spec.pod_annotations,
    }
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def deployment(
    name: str,
    namespace: str,
    track: str,
    template: dict[str, Any],
    revision: str,
    replicas: int,
    rolling_update: RollingUpdateSpec | None = None,
) -> dict[str, Any]:
    """The Deployment of one track. Its replicas come from the operator's split, never from an HPA."""
    rolling = rolling_update or RollingUpdateSpec()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": track_deployment_name(name, track),
            "namespace": namespace,
            "labels": {**common_labels(name), TRACK_LABEL: track, REVISION_LABEL: revision},
            "annotations": {TEMPLATE_ANNOTATION: json.dumps(template, sort_keys=True, separators=(",", ":"))},
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 900,
            "selector": {"matchLabels": track_selector(name, track)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": rolling.max_surge, "maxUnavailable": rolling.max_unavailable},
            },
            "template": pod_template(name, track, template, revision),
        },
    }
