"""The GPTDeployment spec as pydantic models, with defaults derived from `environment`.

The CRD schema (crds/gptdeployments.yaml) rejects malformed objects at `kubectl apply` time; these models
are the operator's own reading of the same spec. Defaults that depend on the environment (capacity type,
shutdown schedule, autoscaling, PDB, resources) cannot be expressed in an OpenAPI schema, so they are
applied here, in one place: `GPTDeploymentSpec.model_validate(obj["spec"])` returns a fully defaulted spec.
`validate(spec)` returns the cross-field problems a schema cannot catch (also enforced by CEL in the CRD).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import re
from datetime import date
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from gpt_operator.success_condition import MAX_LENGTH as CONDITION_MAX_LENGTH
from gpt_operator.success_condition import parse_condition

GROUP = "serving.gpt-operator.dev"
VERSION = "v1alpha1"
KIND = "GPTDeployment"
PLURAL = "gptdeployments"
API_VERSION = f"{GROUP}/{VERSION}"

Environment = Literal["dev", "test", "staging", "prod"]
CapacityType = Literal["auto", "spot", "on-demand", "spot-with-fallback"]
Provider = Literal["karpenter", "eks", "gke", "aks"]
Strategy = Literal["RollingUpdate", "BlueGreen", "Canary"]
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: tuple[Weekday, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
NON_PROD: frozenset[str] = frozenset({"dev", "test", "staging"})

DEFAULT_IMAGE = "ghcr.io/gpt-operator/gpt-runtime:0.1.0"
MODEL_SOURCE_RE = re.compile(
    r"^(builtin:[A-Za-z0-9._-]+|hf:[A-Za-z0-9._/-]+|s3://[a-z0-9.-]+/.+|pvc:[a-z0-9.-]+/.*|/.+)$"
)
HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A label or annotation key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Keys under the operator's own prefix (its selector labels among them) are refused in podLabels/podAnnotations.
RESERVED_KEY_PREFIX = f"{GROUP}/"
# The pod volumes the operator renders (see render/workload.py and render/engine.py) and the prefixes kept for
# them and future ones; a user's extra volume must use another name. Likewise for the paths the runtime container
# (and the fetch-engine-model init container, which gets the user's mounts too) mounts.
RESERVED_VOLUME_NAMES: frozenset[str] = frozenset({"data", "tmp", "model"})
RESERVED_VOLUME_PREFIXES: tuple[str, ...] = ("gpt-", "engine-")
RESERVED_MOUNT_PATHS: tuple[str, ...] = ("/data", "/tmp", "/models", "/model-cache", "/engine-model")
# How long a stopping pod may take (preStop sleep, then the runtime's drain of open streams), by capacity:
# a spot node gives about 2 minutes' notice (AWS), so spot pods get more than on-demand ones.
GRACE_SECONDS_ON_DEMAND = 60
GRACE_SECONDS_SPOT = 90


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields rejected like a structural schema."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The object as it appears in the Kubernetes resource (camelCase, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ModelCacheSpec(_Model):
    """One PersistentVolumeClaim for the model, shared by every pod of the GPTDeployment and filled once by
    the pods' `fetch-model` init container (s3:// and hf: sources)."""

    size: str
    storage_class_name: str | None = Field(default=None, min_length=1, max_length=253)
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"

    @field_validator("size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not QUANTITY_RE.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return value


class ModelSpec(_Model):
    source: str = Field(min_length=1)
    revision: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    quantize: Literal["int8"] | None = None  # int8 matmul weights on the CPU (the builtin engine)
    max_context_tokens: int | None = Field(default=None, ge=16, le=1_048_576)
    cache: ModelCacheSpec | None = None

    @model_validator(mode="after")
    def _cache_needs_a_download(self) -> ModelSpec:
        if self.cache is not None and not self.source.startswith(("s3://", "hf:")):
            raise ValueError("model.cache is for s3:// and hf: sources (the others need no copy)")
        return self

    @model_validator(mode="after")
    def _quantize_needs_float32(self) -> ModelSpec:
        if self.quantize is not None and self.dtype != "float32":
            raise ValueError(QUANTIZE_DTYPE_MESSAGE)
        return self

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not MODEL_SOURCE_RE.match(value):
            raise ValueError(
                "model.source must be builtin:NAME, hf:ORG/NAME, an absolute local dir, "
                "s3://bucket/key or pvc:CLAIM/path"
            )
        return value


EngineType = Literal["builtin", "vllm", "llamacpp"]
# The engine images used when spec.engine.image is unset: pinned here, in one place (documented in
# manifests/README.md). A default is recorded in each revision's template, so changing a pin here rolls out a new
# revision rather than changing running pods behind the operator's back.
ENGINE_IMAGES: dict[str, str] = {
    "vllm": "vllm/vllm-openai:v0.11.0",  # CUDA only
    "llamacpp": "ghcr.io/ggml-org/llama.cpp:server",  # CPU
    "llamacpp-gpu": "ghcr.io/ggml-org/llama.cpp:server-cuda",  # when resources.gpu > 0
}
RUNTIME_PORT = 8000  # the runtime's own port (render/workload.py); an engine must listen elsewhere
# The one built-in model an external engine can serve: the runtime image ships its GGUF (and its HF weights).
ENGINE_BUILTIN_SOURCE = "builtin:smollm2-135m"
LLAMACPP_SOURCE_MESSAGE = (
    "engine llamacpp needs a GGUF model: builtin:smollm2-135m, s3://BUCKET/KEY.gguf, pvc:CLAIM/PATH.gguf or "
    "/PATH.gguf (hf: sources are not supported)"
)
VLLM_SOURCE_MESSAGE = (
    "engine vllm serves builtin:smollm2-135m, hf:ORG/NAME, an s3:// prefix, pvc:CLAIM/PATH or an absolute dir; "
    "other builtin: models run only on the builtin engine"
)
VLLM_GPU_MESSAGE = "engine vllm needs resources.gpu > 0 (its default image is CUDA-only), or an engine.image of its own"
QUANTIZE_DTYPE_MESSAGE = "model.quantize int8 replaces float32 weights: it needs model.dtype float32"
QUANTIZE_ENGINE_MESSAGE = (
    "model.quantize int8 is for the builtin engine on CPUs: not with engine vllm or llamacpp (they load quantized "
    "formats of their own), nor with resources.gpu > 0"
)


def engine_source_problem(engine: str, source: str) -> str | None:
    """Why `source` cannot be served by `engine` (None when it can); the CRD's CEL rules say the same."""
    if engine == "llamacpp":
        gguf = source.startswith(("s3://", "pvc:", "/")) and source.endswith(".gguf")
        return None if source == ENGINE_BUILTIN_SOURCE or gguf else LLAMACPP_SOURCE_MESSAGE
    if engine == "vllm" and source.startswith("builtin:") and source != ENGINE_BUILTIN_SOURCE:
        return VLLM_SOURCE_MESSAGE
    return None


class ResourceList(_Model):
    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not QUANTITY_RE.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return value


class RuntimeResources(_Model):
    """The runtime container's resources beside an engine (spec.resources, GPUs included, go to the engine).
    Each of requests and limits, when given, replaces its default as a whole."""

    requests: ResourceList = Field(default_factory=lambda: ResourceList(cpu="250m", memory="512Mi"))
    limits: ResourceList = Field(default_factory=lambda: ResourceList(memory="1Gi"))


class EngineSpec(_Model):
    """Where generation runs: `builtin` (the runtime's own engine) or an inference server in a second container
    of the same pod (vLLM, llama.cpp's llama-server), which the runtime calls on loopback (render/engine.py)."""

    type: EngineType = "builtin"
    image: str | None = Field(default=None, min_length=1, max_length=512)
    port: int = Field(default=8081, ge=1024, le=65535)
    gpu_memory_utilization: float = Field(default=0.9, ge=0.1, le=0.99)
    parallel: int = Field(default=8, ge=1, le=256)
    extra_args: list[str] = Field(default_factory=list, max_length=64)
    runtime_resources: RuntimeResources = Field(default_factory=RuntimeResources)

    @field_validator("port")
    @classmethod
    def _not_the_runtimes(cls, value: int) -> int:
        if value == RUNTIME_PORT:
            raise ValueError(f"engine.port must not be {RUNTIME_PORT}, the runtime's port")
        return value

    @field_validator("extra_args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        if any(len(arg) > 4096 for arg in value):
            raise ValueError("an engine.extraArgs entry is longer than 4096 characters")
        return value

    @property
    def external(self) -> bool:
        """An engine container runs beside the runtime."""
        return self.type != "builtin"

    def effective_image(self, gpu: int) -> str:
        if self.image:
            return self.image
        if self.type == "llamacpp":
            return ENGINE_IMAGES["llamacpp-gpu" if gpu > 0 else "llamacpp"]
        return ENGINE_IMAGES[self.type]


class PodsMetric(_Model):
    """A per-pod target on one of the runtime's Prometheus series, e.g. `vllm:num_requests_waiting`."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    average_value: str

    @field_validator("average_value")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not QUANTITY_RE.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return value


class AutoscalingSpec(_Model):
    """How the replica count follows load: an HPA (default) or a KEDA ScaledObject; both scale the GPTDeployment
    through its scale subresource. `metrics` name Prometheus series of the runtime (e.g.
    `vllm:num_requests_waiting`), averaged per pod."""

    enabled: bool = True
    provider: Literal["hpa", "keda"] = "hpa"
    prometheus_url: str | None = Field(default=None, alias="prometheusURL", pattern=r"^https?://")
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    # 0 turns a resource target off (e.g. to scale on LLM signals alone, or where no metrics-server runs)
    target_cpu_utilization_percentage: int | None = Field(
        default=70, ge=0, le=100, alias="targetCPUUtilizationPercentage"
    )
    target_memory_utilization_percentage: int | None = Field(default=80, ge=0, le=100)
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    metrics: list[PodsMetric] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keda_needs_prometheus(self) -> AutoscalingSpec:
        if self.provider == "keda" and self.metrics and not self.prometheus_url:
            raise ValueError("autoscaling.provider keda with metrics needs autoscaling.prometheusURL")
        return self


class ResourcesSpec(_Model):
    cpu: str = "500m"
    memory: str = "1Gi"
    gpu: int = Field(default=0, ge=0, le=16)

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not QUANTITY_RE.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return value


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class LabelSelectorRequirement(_Model):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_Model):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class TopologySpreadConstraint(_Model):
    """A pod topologySpreadConstraint; without labelSelector it spreads the pods of its own track."""

    max_skew: int = Field(ge=1)
    topology_key: str = Field(min_length=1, max_length=317)
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector | None = None
    min_domains: int | None = Field(default=None, ge=1)
    match_label_keys: list[str] | None = None
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None


class CapacitySpec(_Model):
    type: CapacityType = "auto"
    provider: Provider = "karpenter"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    # Replaces the default (spread each track over zones, ScheduleAnyway) when given.
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(default_factory=list, max_length=8)


class OffWindow(_Model):
    """Asleep from `start` on each of `days` until `end`: the same day, the next day when end <= start,
    or the first `endDay` after the start (Fri 20:00 -> Mon 08:00 spans a weekend)."""

    days: list[Weekday] = Field(min_length=1)
    start: str
    end: str
    end_day: Weekday | None = None

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not HHMM_RE.match(value):
            raise ValueError(f"{value!r} is not a 24-hour HH:MM time")
        return value


def default_off_windows() -> list[OffWindow]:
    """dev/test default: off 20:00-08:00 on weeknights and the whole weekend (Fri 20:00 -> Mon 08:00)."""
    return [
        OffWindow(days=["Mon", "Tue", "Wed", "Thu"], start="20:00", end="08:00"),
        OffWindow(days=["Fri"], start="20:00", end="08:00", end_day="Mon"),
    ]


class IdleSpec(_Model):
    """Scale to zero when idle: asleep after `sleepAfterSeconds` without an API request. While it sleeps an
    activator pod answers the client Service and holds each request; the operator sees it and wakes the
    deployment, and the request is served once a runtime pod is Ready, or answered 503 with Retry-After after
    `wakeTimeoutSeconds`."""

    sleep_after_seconds: int = Field(ge=60, le=7 * 86_400)
    wake_timeout_seconds: int = Field(default=300, ge=10, le=3600)
    # Where the activator pod runs (it needs no GPU): keep it off GPU nodes so that they can scale down.
    node_selector: dict[str, str] = Field(default_factory=dict)


class ScheduleSpec(_Model):
    time_zone: str = "UTC"
    off_windows: list[OffWindow] = Field(default_factory=list)
    idle: IdleSpec | None = None
    holidays: list[date] = Field(default_factory=list)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class BlueGreenSpec(_Model):
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: int = Field(default=0, ge=0, le=86_400)
    scale_down_delay_seconds: int = Field(default=30, ge=0, le=86_400)


class PauseStep(_Model):
    duration: int | None = Field(default=None, ge=0, le=86_400)  # seconds; none = until promoted


class CanaryStep(_Model):
    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: PauseStep | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CanaryStep:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError("a canary step has exactly one of setWeight or pause")
        return self


def default_canary_steps() -> list[CanaryStep]:
    return [
        CanaryStep(set_weight=20),
        CanaryStep(pause=PauseStep(duration=60)),
        CanaryStep(set_weight=50),
        CanaryStep(pause=PauseStep(duration=60)),
    ]


class ParentRef(_Model):
    name: str = Field(min_length=1)
    namespace: str | None = None
    section_name: str | None = None


class GatewayAPIRouting(_Model):
    """Weights on a Gateway API HTTPRoute `<name>` instead of the replica ratio behind Service `<name>`."""

    parent_refs: list[ParentRef] = Field(min_length=1)
    hostnames: list[str] = Field(default_factory=list)


class TrafficRouting(_Model):
    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")


class AnalysisMetric(_Model):
    """A PromQL query measured while the canary runs, like a metric of an Argo Rollouts AnalysisTemplate.

    A measurement passes when its value meets `successCondition` (e.g. `result < 0.05`) or, in the older
    form, is at most `max`; no data or a query error is inconclusive. The metric fails (and aborts the
    rollout) after more than `failureLimit` failed measurements, pauses the rollout after more than
    `inconclusiveLimit` inconclusive ones (unset: never), and is done after `count` measurements (unset:
    measured until the canary ends), one every `intervalSeconds` (default: the analysis's).
    `{{name}}` and `{{namespace}}` in the query are replaced by the GPTDeployment's name and namespace."""

    name: str = Field(min_length=1, max_length=63)
    query: str = Field(min_length=1)
    max: float | None = None
    success_condition: str | None = Field(default=None, min_length=1, max_length=CONDITION_MAX_LENGTH)
    interval_seconds: int | None = Field(default=None, ge=5, le=3600)
    count: int | None = Field(default=None, ge=1, le=10_000)
    failure_limit: int = Field(default=0, ge=0, le=10_000)
    inconclusive_limit: int | None = Field(default=None, ge=0, le=10_000)

    @field_validator("success_condition")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None:
            parse_condition(value)  # raises ConditionError, a ValueError, with the reason
        return value

    @model_validator(mode="after")
    def _one_test(self) -> AnalysisMetric:
        if (self.max is None) == (self.success_condition is None):
            raise ValueError("an analysis metric has exactly one of max or successCondition")
        return self


class AnalysisSpec(_Model):
    prometheus_url: str = Field(alias="prometheusURL", pattern=r"^https?://")
    interval_seconds: int = Field(default=30, ge=5, le=3600)
    metrics: list[AnalysisMetric] = Field(min_length=1, max_length=8)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[AnalysisMetric]) -> list[AnalysisMetric]:
        names = [m.name for m in value]
        if len(set(names)) != len(names):
            raise ValueError("metric names must be unique")
        return value


class CanarySpec(_Model):
    steps: list[CanaryStep] = Field(default_factory=default_canary_steps)
    traffic_routing: TrafficRouting | None = None
    analysis: AnalysisSpec | None = None


class RollingUpdateSpec(_Model):
    max_surge: int | str = "25%"
    max_unavailable: int | str = 0


class RolloutSpec(_Model):
    strategy: Strategy = "RollingUpdate"
    rolling_update: RollingUpdateSpec = Field(default_factory=RollingUpdateSpec)
    blue_green: BlueGreenSpec = Field(default_factory=BlueGreenSpec)
    canary: CanarySpec = Field(default_factory=CanarySpec)


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=80, ge=1, le=65535)
    annotations: dict[str, str] = Field(default_factory=dict)


class MonitoringSpec(_Model):
    service_monitor: bool = False


class IPBlock(_Model):
    cidr: str
    except_: list[str] | None = Field(default=None, alias="except")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR") from exc
        return value


class NetworkPeer(_Model):
    """A NetworkPolicy peer: pods (by namespace and/or pod labels) or an IP block."""

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPeer:
        selectors = self.namespace_selector is not None or self.pod_selector is not None
        if selectors == (self.ip_block is not None):
            raise ValueError("a peer has ipBlock, or namespaceSelector and/or podSelector")
        return self


class NetworkPort(_Model):
    port: int | str | None = None
    end_port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class EgressRule(_Model):
    to: list[NetworkPeer] = Field(default_factory=list, max_length=16)
    ports: list[NetworkPort] = Field(default_factory=list, max_length=16)


def _same_namespace() -> list[NetworkPeer]:
    return [NetworkPeer(pod_selector=LabelSelector())]


def _monitoring_namespace() -> list[NetworkPeer]:
    selector = LabelSelector(match_labels={"kubernetes.io/metadata.name": "monitoring"})
    return [NetworkPeer(namespace_selector=selector)]


class NetworkPolicySpec(_Model):
    """A NetworkPolicy `<name>` for the runtime pods (render/network.py); off unless enabled."""

    enabled: bool = False
    # Who may call the API port: default every pod of the GPTDeployment's namespace.
    ingress: list[NetworkPeer] = Field(default_factory=_same_namespace, max_length=16)
    # Who may scrape /metrics (the same port): default every pod of the namespace `monitoring`.
    metrics: list[NetworkPeer] = Field(default_factory=_monitoring_namespace, max_length=16)
    # None: all egress allowed. A list: only DNS (port 53) and these.
    egress: list[EgressRule] | None = Field(default=None, max_length=16)


class EnvVar(_Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = ""


class SecretRef(_Model):
    name: str = Field(min_length=1)


class LocalObjectReference(_Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class Volume(_Model):
    """An extra pod volume: a name plus one Kubernetes volume source (secret, configMap, csi, ...), passed on
    as written; the API server checks the source when the Deployment is applied."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        sources = sorted(self.model_extra or {})
        if len(sources) != 1:
            raise ValueError(f"volume {self.name!r} needs exactly one volume source, has {sources or 'none'}")
        return self


class VolumeMount(_Model):
    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    mount_path: str = Field(min_length=2, max_length=1024, pattern=r"^/")
    sub_path: str | None = Field(default=None, max_length=1024)
    read_only: bool | None = None


def _check_keys(value: dict[str, str], what: str) -> dict[str, str]:
    for key in value:
        if not LABEL_KEY_RE.match(key):
            raise ValueError(f"{what} key {key!r} is not a valid Kubernetes label/annotation key")
        if key.startswith(RESERVED_KEY_PREFIX):
            raise ValueError(f"{what} key {key!r}: the {RESERVED_KEY_PREFIX} prefix is the operator's own")
    return value


# Spec fields that decide the pods beyond the original template; in pod_template_spec only when set.
POD_OPTIONS = (
    "serviceAccountName",
    "imagePullSecrets",
    "priorityClassName",
    "podLabels",
    "podAnnotations",
    "volumes",
    "volumeMounts",
    "terminationGracePeriodSeconds",
)


class GPTDeploymentSpec(_Model):
    environment: Environment = "dev"
    model: ModelSpec
    replicas: int = Field(default=1, ge=0, le=1000)
    autoscaling: AutoscalingSpec | None = None
    resources: ResourcesSpec | None = None
    image: str = DEFAULT_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    env: list[EnvVar] = Field(default_factory=list)
    secret_ref: SecretRef | None = None
    # Real-cluster pod options (IRSA / Workload Identity through the service account, private registries).
    service_account_name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    priority_class_name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    pod_labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    pod_annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    volumes: list[Volume] = Field(default_factory=list, max_length=16)
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=16)
    termination_grace_period_seconds: int | None = Field(default=None, ge=15, le=3600)
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    schedule: ScheduleSpec | None = None
    suspend: bool = False
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)

    @field_validator("pod_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if len(label) > 63 or not re.match(LABEL_VALUE, label):
                raise ValueError(f"podLabels[{key!r}]: {label!r} is not a valid label value")
        return _check_keys(value, "podLabels")

    @field_validator("pod_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_keys(value, "podAnnotations")

    @field_validator("volumes")
    @classmethod
    def _volume_names(cls, value: list[Volume]) -> list[Volume]:
        names = [v.name for v in value]
        for name in names:
            if name in RESERVED_VOLUME_NAMES or name.startswith(RESERVED_VOLUME_PREFIXES):
                prefixes = ", ".join(f"{p}*" for p in RESERVED_VOLUME_PREFIXES)
                raise ValueError(
                    f"volume name {name!r} is the operator's (reserved: {', '.join(sorted(RESERVED_VOLUME_NAMES))}"
                    f" and {prefixes})"
                )
        if len(set(names)) != len(names):
            raise ValueError("volume names must be unique")
        return value

    @field_validator("volume_mounts")
    @classmethod
    def _mount_paths(cls, value: list[VolumeMount]) -> list[VolumeMount]:
        for mount in value:
            path = mount.mount_path.rstrip("/")
            if path in RESERVED_MOUNT_PATHS or path.startswith("/models/"):
                own = ", ".join(RESERVED_MOUNT_PATHS)
                raise ValueError(f"mountPath {mount.mount_path!r} is the runtime's own ({own})")
        paths = [m.mount_path.rstrip("/") for m in value]
        if len(set(paths)) != len(paths):
            raise ValueError("mountPath values must be unique")
        return value

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> GPTDeploymentSpec:
        names = {v.name for v in self.volumes}
        unknown = [m.name for m in self.volume_mounts if m.name not in names]
        if unknown:
            raise ValueError(f"volumeMounts name volumes that spec.volumes lacks: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _engine_serves_the_source(self) -> GPTDeploymentSpec:
        problem = engine_source_problem(self.engine.type, self.model.source)
        if problem:
            raise ValueError(problem)
        gpu = (self.resources or ResourcesSpec()).gpu
        if self.engine.type == "vllm" and not self.engine.image and gpu == 0:
            raise ValueError(VLLM_GPU_MESSAGE)
        if self.model.quantize is not None and (self.engine.type != "builtin" or gpu > 0):
            raise ValueError(QUANTIZE_ENGINE_MESSAGE)
        return self

    @model_validator(mode="before")
    @classmethod
    def _environment_defaults(cls, data: Any) -> Any:
        """Fill what depends on the environment before field validation."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        env = data.get("environment", "dev")
        prod = env == "prod"
        if data.get("autoscaling") is None and prod:
            data["autoscaling"] = {"minReplicas": 3, "maxReplicas": 10}
        if data.get("resources") is None:
            data["resources"] = {"cpu": "1", "memory": "2Gi"} if prod else {"cpu": "500m", "memory": "1Gi"}
        schedule = data.get("schedule")
        if env in ("dev", "test"):
            if schedule is None:
                schedule = {}
            if isinstance(schedule, dict) and schedule.get("offWindows", schedule.get("off_windows")) is None:
                schedule = {**schedule, "offWindows": [w.wire() for w in default_off_windows()]}
            data["schedule"] = schedule
        return data

    # --- derived values, the single source for the renderers ---

    @property
    def idle_sleep(self) -> IdleSpec | None:
        """schedule.idle: scale to zero when idle (None: off)."""
        return self.schedule.idle if self.schedule is not None else None

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def effective_capacity_type(self) -> Literal["spot", "on-demand", "spot-with-fallback"]:
        if self.capacity.type != "auto":
            return self.capacity.type
        return "on-demand" if self.is_prod else "spot"

    @property
    def hpa_enabled(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.enabled

    @property
    def pdb_enabled(self) -> bool:
        """Prod always; staging on spot too, so node drains (spot interruption, consolidation) go one pod at a time."""
        return self.is_prod or (self.environment == "staging" and self.effective_capacity_type != "on-demand")

    @property
    def effective_termination_grace_seconds(self) -> int:
        if self.termination_grace_period_seconds is not None:
            return self.termination_grace_period_seconds
        return GRACE_SECONDS_ON_DEMAND if self.effective_capacity_type == "on-demand" else GRACE_SECONDS_SPOT

    @property
    def desired_replicas(self) -> int:
        """The total size when awake: spec.replicas (the HPA's target) clamped to the autoscaling bounds."""
        if self.hpa_enabled and self.autoscaling is not None:
            return min(max(self.replicas, self.autoscaling.min_replicas), self.autoscaling.max_replicas)
        return self.replicas

    def pod_template_spec(self) -> dict[str, Any]:
        """The part of the spec that decides the pods; its hash is the revision.

        The pod options added later appear only when set, so a spec without them keeps the revision it had;
        likewise `engine` appears only when it is not `builtin`, with its image resolved (a new default image
        pin is a new revision)."""
        capacity = {**self.capacity.wire(), "type": self.effective_capacity_type}
        if not capacity.get("topologySpreadConstraints"):
            capacity.pop("topologySpreadConstraints", None)
        template: dict[str, Any] = {
            "environment": self.environment,
            "model": self.model.wire(),
            "resources": (self.resources or ResourcesSpec()).wire(),
            "image": self.image,
            "imagePullPolicy": self.image_pull_policy,
            "env": [e.wire() for e in self.env],
            "secretRef": self.secret_ref.wire() if self.secret_ref else None,
            "capacity": capacity,
        }
        wire = self.wire()
        for key in POD_OPTIONS:
            value = wire.get(key)
            if value not in (None, [], {}):
                template[key] = value
        if self.engine.external:
            gpu = (self.resources or ResourcesSpec()).gpu
            template["engine"] = {**self.engine.wire(), "image": self.engine.effective_image(gpu)}
        return template

    @property
    def revision(self) -> str:
        return template_revision(self.pod_template_spec())


def template_revision(template_spec: dict[str, Any]) -> str:
    """A short, stable hash of the pod-deciding spec (like a ReplicaSet's pod-template-hash)."""
    canonical = json.dumps(template_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def parse_spec(raw: dict[str, Any]) -> GPTDeploymentSpec:
    """Parse and default a GPTDeployment's `.spec`; raises pydantic.ValidationError on bad input."""
    return GPTDeploymentSpec.model_validate(raw)


def problems_from_error(exc: Exception) -> list[str]:
    """Readable one-line problems from a pydantic ValidationError (field path: message)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return [str(exc)]
    out = []
    for err in errors():
        path = ".".join(str(p) for p in err.get("loc", ()))
        out.append(f"spec.{path}: {err.get('msg')}" if path else f"spec: {err.get('msg')}")
    return out


def validate(spec: GPTDeploymentSpec) -> list[str]:
    """Cross-field problems; an empty list means the spec can be rendered. Mirrors the CRD's CEL rules."""
    problems: list[str] = []
    a = spec.autoscaling
    if a is not None and a.min_replicas > a.max_replicas:
        problems.append(
            f"spec.autoscaling: minReplicas ({a.min_replicas}) must not exceed maxReplicas ({a.max_replicas})"
        )
    if (
        a is not None
        and a.enabled
        and not (a.target_cpu_utilization_percentage or a.target_memory_utilization_percentage or a.metrics)
    ):
        problems.append("spec.autoscaling: at least one target (cpu, memory or metrics) is needed")
    if spec.schedule is not None:
        for i, w in enumerate(spec.schedule.off_windows):
            if w.start == w.end and w.end_day is None:
                problems.append(f"spec.schedule.offWindows[{i}]: start and end must differ")
            if len(set(w.days)) != len(w.days):
                problems.append(f"spec.schedule.offWindows[{i}]: days must not repeat")
        if spec.schedule.idle is not None and spec.is_prod:
            problems.append(
                "spec.schedule.idle: scale to zero is for dev, test and staging (a prod request would wait for a"
                " model to load)"
            )
    if spec.rollout.strategy == "Canary":
        weights = [s.set_weight for s in spec.rollout.canary.steps if s.set_weight is not None]
        if not weights:
            problems.append("spec.rollout.canary.steps: at least one setWeight step is needed")
        if any(b < a for a, b in itertools.pairwise(weights)):
            problems.append("spec.rollout.canary.steps: setWeight values must not decrease")
    return problems
