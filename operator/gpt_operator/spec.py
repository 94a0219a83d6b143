"""The GPTDeployment spec as pydantic models, with defaults derived from `environment`.

The CRD schema (crds/gptdeployments.yaml) rejects malformed objects at `kubectl apply` time; these models
are the operator's own reading of the same spec. Defaults that depend on the environment (capacity type,
shutdown schedule, autoscaling, PDB, resources) cannot be expressed in an OpenAPI schema, so they are
applied here, in one place: `GPTDeploymentSpec.model_validate(obj["spec"])` returns a fully defaulted spec.
`validate(spec)` returns the cross-field problems a schema cannot catch (also enforced by CEL in the CRD).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from datetime import date
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

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


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields rejected like a structural schema."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The object as it appears in the Kubernetes resource (camelCase, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ModelSpec(_Model):
    source: str = Field(min_length=1)
    revision: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    max_context_tokens: int | None = Field(default=None, ge=16, le=1_048_576)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not MODEL_SOURCE_RE.match(value):
            raise ValueError(
                "model.source must be builtin:NAME, hf:ORG/NAME, an absolute local dir, "
                "s3://bucket/key or pvc:CLAIM/path"
            )
        return value


class PodsMetric(_Model):
    """A per-pod custom metric target, e.g. the runtime's queue depth."""

    name: str = Field(min_length=1)
    average_value: str

    @field_validator("average_value")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not QUANTITY_RE.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return value


class AutoscalingSpec(_Model):
    enabled: bool = True
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    target_cpu_utilization_percentage: int | None = Field(
        default=70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    target_memory_utilization_percentage: int | None = Field(default=80, ge=1, le=100)
    metrics: list[PodsMetric] = Field(default_factory=list)


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


class CapacitySpec(_Model):
    type: CapacityType = "auto"
    provider: Provider = "karpenter"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


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


class ScheduleSpec(_Model):
    time_zone: str = "UTC"
    off_windows: list[OffWindow] = Field(default_factory=list)
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
    """A PromQL query whose value must stay at or below `max` while the canary runs.

    `{{name}}` and `{{namespace}}` in the query are replaced by the GPTDeployment's name and namespace."""

    name: str = Field(min_length=1, max_length=63)
    query: str = Field(min_length=1)
    max: float


class AnalysisSpec(_Model):
    prometheus_url: str = Field(alias="prometheusURL", pattern=r"^https?://")
    interval_seconds: int = Field(default=30, ge=5, le=3600)
    metrics: list[AnalysisMetric] = Field(min_length=1, max_length=8)


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


class EnvVar(_Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = ""


class SecretRef(_Model):
    name: str = Field(min_length=1)


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
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    schedule: ScheduleSpec | None = None
    suspend: bool = False
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)

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
        return self.is_prod

    @property
    def desired_replicas(self) -> int:
        """The total size when awake: spec.replicas (the HPA's target) clamped to the autoscaling bounds."""
        if self.hpa_enabled and self.autoscaling is not None:
            return min(max(self.replicas, self.autoscaling.min_replicas), self.autoscaling.max_replicas)
        return self.replicas

    def pod_template_spec(self) -> dict[str, Any]:
        """The part of the spec that decides the pods; its hash is the revision."""
        return {
            "environment": self.environment,
            "model": self.model.wire(),
            "resources": (self.resources or ResourcesSpec()).wire(),
            "image": self.image,
            "imagePullPolicy": self.image_pull_policy,
            "env": [e.wire() for e in self.env],
            "secretRef": self.secret_ref.wire() if self.secret_ref else None,
            "capacity": {**self.capacity.wire(), "type": self.effective_capacity_type},
        }

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
    if spec.rollout.strategy == "Canary":
        weights = [s.set_weight for s in spec.rollout.canary.steps if s.set_weight is not None]
        if not weights:
            problems.append("spec.rollout.canary.steps: at least one setWeight step is needed")
        if any(b < a for a, b in itertools.pairwise(weights)):
            problems.append("spec.rollout.canary.steps: setWeight values must not decrease")
    return problems
