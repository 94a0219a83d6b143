"""Rendering rules: workload, runtime config, probes, GPU, capacity placement, services, HPA, PDB."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from gpt_operator.naming import TEMPLATE_ANNOTATION
from gpt_operator.render import render_children
from gpt_operator.render.autoscaling import autoscaler, hpa
from gpt_operator.render.capacity import placement
from gpt_operator.render.workload import config_map, deployment, spec_from_template
from gpt_operator.rollout import Plan, RolloutState, TrackPlan
from gpt_operator.spec import CapacitySpec, parse_spec

pytestmark = pytest.mark.unit
K8S = kubernetes_validate.latest_version()


def spec_of(**fields):
    return parse_spec({"model": {"source": "builtin:tiny"}, **fields})


def rendered_deployment(**fields) -> dict:
    spec = spec_of(**fields)
    return deployment("demo", "ml", "main", spec.pod_template_spec(), spec.revision, 2)


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_deployment_is_valid_kubernetes_and_labelled_per_track() -> None:
    dep = rendered_deployment()
    kubernetes_validate.validate(dep, K8S, strict=True)
    assert dep["metadata"]["name"] == "demo"
    assert dep["spec"]["replicas"] == 2
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector == {"serving.gpt-operator.dev/name": "demo", "serving.gpt-operator.dev/track": "main"}
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert pod_labels["serving.gpt-operator.dev/revision"] == spec_of().revision
    assert "app.kubernetes.io/instance" not in pod_labels  # Argo CD's tracking label is never copied


def test_runtime_container_port_probes_and_config() -> None:
    spec = spec_of()
    c = container(rendered_deployment())
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["envFrom"] == [
        {"configMapRef": {"name": f"demo-config-{spec.revision}"}},
        {"secretRef": {"name": "demo-jwt"}},
    ]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


def test_config_map_holds_gpt_runtime_settings_and_is_immutable() -> None:
    spec = spec_of(environment="prod", model={"source": "hf:org/m", "dtype": "bfloat16", "maxContextTokens": 2048})
    cm = config_map("demo", "ml", spec.pod_template_spec(), spec.revision)
    kubernetes_validate.validate(cm, K8S, strict=True)
    assert cm["immutable"] is True
    assert cm["metadata"]["name"] == f"demo-config-{spec.revision}"
    data = cm["data"]
    assert data["GPT_MODEL_SOURCE"] == "hf:org/m"
    assert data["GPT_MODEL_DTYPE"] == "bfloat16"
    assert data["GPT_MAX_CONTEXT_TOKENS"] == "2048"
    assert "GPT_MODEL_QUANTIZE" not in data  # float32 unless asked
    assert data["GPT_PORT"] == "8000"
    assert data["GPT_HOST"] == "0.0.0.0"
    assert "GPT_DEV_MODE" not in data


def test_model_quantize_becomes_gpt_model_quantize_in_the_config_map() -> None:
    spec = spec_of(model={"source": "builtin:smollm2-135m", "quantize": "int8"})
    data = config_map("demo", "ml", spec.pod_template_spec(), spec.revision)["data"]
    assert data["GPT_MODEL_QUANTIZE"] == "int8"


@pytest.mark.parametrize("environment", ["dev", "test", "staging", "prod"])
def test_no_environment_puts_a_pod_in_development_mode(environment: str) -> None:
    """Dev and test pods ran with GPT_DEV_MODE=true, which answered password-reset tokens to whoever asked."""
    spec = parse_spec({"environment": environment, "model": {"source": "builtin:tiny"}})
    assert "GPT_DEV_MODE" not in config_map("demo", "ml", spec.pod_template_spec(), spec.revision)["data"]


@pytest.mark.parametrize(
    ("source", "cache"),
    [("builtin:smollm2-135m", "/models"), ("hf:org/m", "/data/models"), ("s3://b/k", "/data/models")],
)
def test_builtin_models_load_from_the_image_others_convert_into_the_data_volume(source: str, cache: str) -> None:
    """The image converts the built-in models at build time (read-only /models); a pod must not convert them
    again into its data volume at every start."""
    spec = spec_of(model={"source": source})
    cm = config_map("demo", "ml", spec.pod_template_spec(), spec.revision)
    assert cm["data"]["GPT_MODEL_CACHE_DIR"] == cache


def test_service_links_cannot_set_the_runtimes_gpt_settings() -> None:
    """A Service named `gpt` in the namespace would inject GPT_PORT=tcp://IP:PORT (and GPT_SERVICE_HOST...) into
    the runtime's GPT_* settings namespace (moto's server crashes on the same thing with MOTO_PORT)."""
    assert rendered_deployment()["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_pods_keep_serving_until_the_service_has_dropped_them() -> None:
    """A preStop sleep: the endpoint removal reaches kube-proxy before the runtime stops accepting connections."""
    dep = rendered_deployment()
    c = container(dep)
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_pvc_model_source_is_mounted_read_only() -> None:
    spec = spec_of(model={"source": "pvc:models/gpt2-small"})
    dep = rendered_deployment(model={"source": "pvc:models/gpt2-small"})
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mounts = {m["name"]: m for m in container(dep)["volumeMounts"]}
    assert mounts["model"] == {"name": "model", "mountPath": "/models/models", "readOnly": True}
    cm = config_map("demo", "ml", spec.pod_template_spec(), spec.revision)
    assert cm["data"]["GPT_MODEL_SOURCE"] == "/models/models/gpt2-small"


def test_gpu_resources_and_toleration() -> None:
    dep = rendered_deployment(resources={"gpu": 2, "cpu": "4", "memory": "16Gi"})
    c = container(dep)
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    tolerations = dep["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_cpu_pods_do_not_tolerate_gpu_nodes() -> None:
    dep = rendered_deployment(capacity={"provider": "karpenter"})
    assert "tolerations" not in dep["spec"]["template"]["spec"]


REVISION_ENV = {
    "name": "GPT_REVISION",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['serving.gpt-operator.dev/revision']"}},
}
TRACK_ENV = {
    "name": "GPT_TRACK",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['serving.gpt-operator.dev/track']"}},
}
DRAIN_ENV = {"name": "GPT_SHUTDOWN_TIMEOUT_S", "value": "80"}  # dev = spot: 90 s grace - 5 s preStop - 5 s margin


def test_env_from_is_config_map_then_generated_jwt_secret_then_user_secret() -> None:
    """A later envFrom source wins: the user's Secret may override the generated GPT_JWT_SECRET."""
    spec = spec_of(secretRef={"name": "gpt-secrets"})
    c = container(rendered_deployment(secretRef={"name": "gpt-secrets"}))
    assert c["envFrom"] == [
        {"configMapRef": {"name": f"demo-config-{spec.revision}"}},
        {"secretRef": {"name": "demo-jwt"}},
        {"secretRef": {"name": "gpt-secrets"}},
    ]


def test_every_track_gets_the_shared_jwt_secret_and_its_revision_and_track() -> None:
    spec = spec_of()
    for track in ("main", "blue", "green", "stable", "canary"):
        dep = deployment("demo", "ml", track, spec.pod_template_spec(), spec.revision, 1)
        c = container(dep)
        assert {"secretRef": {"name": "demo-jwt"}} in c["envFrom"]
        assert c["env"] == [REVISION_ENV, TRACK_ENV, DRAIN_ENV]
        kubernetes_validate.validate(dep, K8S, strict=True)


def test_secret_ref_and_user_env() -> None:
    c = container(
        rendered_deployment(secretRef={"name": "gpt-secrets"}, env=[{"name": "GPT_CACHE_URL", "value": "redis://r"}])
    )
    assert {"secretRef": {"name": "gpt-secrets"}} in c["envFrom"]
    assert c["env"] == [REVISION_ENV, TRACK_ENV, DRAIN_ENV, {"name": "GPT_CACHE_URL", "value": "redis://r"}]


def test_user_env_of_the_same_name_replaces_the_downward_api_entry() -> None:
    """No duplicate names (server-side apply refuses them); the user's value wins, as a later entry would."""
    c = container(rendered_deployment(env=[{"name": "GPT_TRACK", "value": "pinned"}]))
    assert c["env"] == [REVISION_ENV, DRAIN_ENV, {"name": "GPT_TRACK", "value": "pinned"}]


def test_template_annotation_round_trips_to_the_same_revision() -> None:
    spec = spec_of(environment="staging", resources={"gpu": 1}, capacity={"provider": "gke"})
    dep = deployment("demo", "ml", "blue", spec.pod_template_spec(), spec.revision, 1)
    recorded = json.loads(dep["metadata"]["annotations"][TEMPLATE_ANNOTATION])
    assert spec_from_template(recorded).revision == spec.revision


@pytest.mark.parametrize(
    ("provider", "kind", "expression"),
    [
        ("karpenter", "spot", {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}),
        ("karpenter", "on-demand", {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}),
        ("eks", "spot", {"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}),
        ("eks", "on-demand", {"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["ON_DEMAND"]}),
        ("gke", "spot", {"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}),
        ("gke", "on-demand", {"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]}),
        ("aks", "spot", {"key": "kubernetes.azure.com/scalesetpriority", "operator": "In", "values": ["spot"]}),
        ("aks", "on-demand", {"key": "kubernetes.azure.com/scalesetpriority", "operator": "NotIn", "values": ["spot"]}),
    ],
)
def test_required_capacity_affinity_per_provider(provider: str, kind: str, expression: dict) -> None:
    out = placement(CapacitySpec(provider=provider), kind, gpu=0)
    required = out["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {"nodeSelectorTerms": [{"matchExpressions": [expression]}]}
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in out["affinity"]["nodeAffinity"]


def test_spot_with_fallback_is_only_a_preference() -> None:
    out = placement(CapacitySpec(provider="eks"), "spot-with-fallback", gpu=0)
    affinity = out["affinity"]["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "weight": 100,
            "preference": {
                "matchExpressions": [{"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}]
            },
        }
    ]


def test_aks_spot_pods_tolerate_the_spot_taint_but_on_demand_do_not() -> None:
    spot = placement(CapacitySpec(provider="aks"), "spot", gpu=0)
    assert spot["tolerations"][0]["key"] == "kubernetes.azure.com/scalesetpriority"
    assert "tolerations" not in placement(CapacitySpec(provider="aks"), "on-demand", gpu=0)


def test_extra_node_selector_and_tolerations_are_kept() -> None:
    capacity = CapacitySpec.model_validate(
        {"nodeSelector": {"pool": "gpu-a100"}, "tolerations": [{"key": "team", "value": "ml", "effect": "NoSchedule"}]}
    )
    out = placement(capacity, "spot", gpu=1)
    assert out["nodeSelector"] == {"pool": "gpu-a100"}
    assert {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in out["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in out["tolerations"]


def test_environment_decides_placement_of_rendered_pods() -> None:
    def capacity_expr(env: str) -> dict:
        dep = rendered_deployment(environment=env)
        affinity = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        return affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]

    assert capacity_expr("dev")["values"] == ["spot"]
    assert capacity_expr("staging")["values"] == ["spot"]
    assert capacity_expr("prod")["values"] == ["on-demand"]


def test_hpa_targets_the_gptdeployment_scale_subresource() -> None:
    spec = spec_of(environment="prod", autoscaling={"metrics": [{"name": "gpt_queue_depth", "averageValue": "5"}]})
    assert spec.autoscaling is not None
    out = hpa("demo", "ml", spec.autoscaling)
    kubernetes_validate.validate(out, K8S, strict=True)
    assert out["apiVersion"] == "autoscaling/v2"
    assert out["spec"]["scaleTargetRef"] == {
        "apiVersion": "serving.gpt-operator.dev/v1alpha1",
        "kind": "GPTDeployment",
        "name": "demo",
    }
    assert (out["spec"]["minReplicas"], out["spec"]["maxReplicas"]) == (1, 10)
    metrics = out["spec"]["metrics"]
    assert metrics[0]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert metrics[1]["resource"] == {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}
    assert metrics[2]["pods"]["metric"] == {"name": "gpt_queue_depth"}


LLM_METRICS = [
    {"name": "vllm:num_requests_waiting", "averageValue": "4"},
    {"name": "vllm:kv_cache_usage_perc", "averageValue": "800m"},
]


def test_hpa_on_llm_signals_reads_the_names_the_adapter_rules_publish() -> None:
    """The user writes Prometheus names; the HPA asks the custom metrics API for them with ':' as '_', which is
    what manifests/monitoring/prometheus-adapter's rules publish."""
    spec = spec_of(environment="prod", autoscaling={"metrics": LLM_METRICS})
    assert spec.autoscaling is not None
    out = autoscaler("demo", "ml", spec.autoscaling)
    kubernetes_validate.validate(out, K8S, strict=True)
    assert [m["type"] for m in out["spec"]["metrics"]] == ["Resource", "Resource", "Pods", "Pods"]
    pods = [m["pods"] for m in out["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods == [
        {"metric": {"name": "vllm_num_requests_waiting"}, "target": {"type": "AverageValue", "averageValue": "4"}},
        {"metric": {"name": "vllm_kv_cache_usage_perc"}, "target": {"type": "AverageValue", "averageValue": "800m"}},
    ]


def test_resource_targets_can_be_turned_off_and_scale_down_waits_as_told() -> None:
    """0 turns CPU/memory off (scaling on LLM signals alone; without metrics-server an HPA with a resource target
    never scales down), and the scale-down window is the user's."""
    autoscaling = {
        "targetCPUUtilizationPercentage": 0,
        "targetMemoryUtilizationPercentage": 0,
        "scaleDownStabilizationSeconds": 20,
        "metrics": LLM_METRICS[:1],
    }
    spec = spec_of(environment="prod", autoscaling=autoscaling)
    assert spec.autoscaling is not None
    out = autoscaler("demo", "ml", spec.autoscaling)
    kubernetes_validate.validate(out, K8S, strict=True)
    assert [m["type"] for m in out["spec"]["metrics"]] == ["Pods"]
    assert out["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 20
    keda = autoscaler(
        "demo", "ml", spec.autoscaling.model_copy(update={"provider": "keda", "prometheus_url": "http://p"})
    )
    assert [t["type"] for t in keda["spec"]["triggers"]] == ["prometheus"]


def test_keda_scaled_object_queries_prometheus_per_pod_average() -> None:
    spec = spec_of(
        environment="prod",
        autoscaling={"provider": "keda", "prometheusURL": "http://prometheus.monitoring:9090", "metrics": LLM_METRICS},
    )
    assert spec.autoscaling is not None
    out = autoscaler("demo", "ml", spec.autoscaling)
    assert (out["apiVersion"], out["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert out["spec"]["scaleTargetRef"] == {
        "apiVersion": "serving.gpt-operator.dev/v1alpha1",
        "kind": "GPTDeployment",
        "name": "demo",
    }
    assert (out["spec"]["minReplicaCount"], out["spec"]["maxReplicaCount"]) == (1, 10)
    triggers = out["spec"]["triggers"]
    assert [(t["type"], t.get("metricType")) for t in triggers] == [
        ("cpu", "Utilization"),
        ("memory", "Utilization"),
        ("prometheus", "AverageValue"),
        ("prometheus", "AverageValue"),
    ]
    waiting, kv = triggers[2]["metadata"], triggers[3]["metadata"]
    assert waiting == {
        "serverAddress": "http://prometheus.monitoring:9090",
        "query": 'sum(vllm:num_requests_waiting{namespace="ml",service="demo"}) or vector(0)',
        "threshold": "4",
    }
    assert kv["threshold"] == "0.8"  # KEDA takes plain numbers, not quantities
    assert (
        out["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
        == 300
    )


def test_keda_replaces_the_hpa_and_leaves_while_asleep() -> None:
    spec = spec_of(environment="prod", autoscaling={"provider": "keda"})
    awake = render_children("demo", "ml", spec, _plan(spec, [("main", 3)], {"": "main"}), asleep=False)
    assert ("ScaledObject", "demo") in kinds(awake) and "HorizontalPodAutoscaler" not in [k for k, _ in kinds(awake)]
    asleep = render_children("demo", "ml", spec, _plan(spec, [("main", 0)], {"": "main"}), asleep=True)
    assert "ScaledObject" not in [k for k, _ in kinds(asleep)]


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ({"provider": "keda", "metrics": LLM_METRICS}, "needs autoscaling.prometheusURL"),
        ({"metrics": [{"name": 'up{job="x"} or vector(99)', "averageValue": "1"}]}, "pattern"),
        ({"provider": "knative"}, "hpa"),
    ],
)
def test_bad_autoscaling_is_refused(autoscaling: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec_of(environment="prod", autoscaling=autoscaling)


def _plan(spec, tracks: list[tuple[str, int]], services: dict) -> Plan:
    return Plan(
        tracks=[TrackPlan(t, spec.revision, spec.pod_template_spec(), n) for t, n in tracks],
        services=services,
        state=RolloutState(),
    )


def kinds(objects: list[dict]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def test_prod_children_include_hpa_and_pdb_all_valid() -> None:
    spec = spec_of(environment="prod", monitoring={"serviceMonitor": True})
    objects = render_children("demo", "ml", spec, _plan(spec, [("main", 3)], {"": "main"}), asleep=False)
    assert kinds(objects) == [
        ("ConfigMap", f"demo-config-{spec.revision}"),
        ("Deployment", "demo"),
        ("Service", "demo"),
        ("HorizontalPodAutoscaler", "demo"),
        ("PodDisruptionBudget", "demo"),
        ("ServiceMonitor", "demo"),
    ]
    for obj in objects:
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, K8S, strict=True)
    monitor = objects[5]["spec"]
    assert monitor["selector"]["matchLabels"]["serving.gpt-operator.dev/service"] == "client"
    assert monitor["podTargetLabels"] == ["serving.gpt-operator.dev/track", "serving.gpt-operator.dev/revision"]
    pdb = objects[4]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == {"serving.gpt-operator.dev/name": "demo"}


def test_dev_children_have_no_hpa_or_pdb() -> None:
    spec = spec_of(environment="dev")
    objects = render_children("demo", "ml", spec, _plan(spec, [("main", 1)], {"": "main"}), asleep=False)
    assert [k for k, _ in kinds(objects)] == ["ConfigMap", "Deployment", "Service"]


def test_asleep_removes_the_hpa_but_keeps_the_pdb() -> None:
    spec = spec_of(environment="prod")
    objects = render_children("demo", "ml", spec, _plan(spec, [("main", 0)], {"": "main"}), asleep=True)
    assert "HorizontalPodAutoscaler" not in [k for k, _ in kinds(objects)]
    assert "PodDisruptionBudget" in [k for k, _ in kinds(objects)]


def test_blue_green_services_select_active_and_preview_colours() -> None:
    spec = spec_of(service={"type": "LoadBalancer", "port": 8080, "annotations": {"a": "b"}})
    objects = render_children(
        "demo", "ml", spec, _plan(spec, [("blue", 1), ("green", 1)], {"": "blue", "-preview": "green"}), asleep=False
    )
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert services["demo"]["spec"]["selector"]["serving.gpt-operator.dev/track"] == "blue"
    assert services["demo-preview"]["spec"]["selector"]["serving.gpt-operator.dev/track"] == "green"
    assert services["demo"]["spec"]["type"] == "LoadBalancer"
    assert services["demo-preview"]["spec"]["type"] == "ClusterIP"
    assert services["demo"]["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert services["demo"]["metadata"]["annotations"] == {"a": "b"}
    for svc in services.values():
        kubernetes_validate.validate(svc, K8S, strict=True)


def test_canary_client_service_selects_both_tracks() -> None:
    spec = spec_of()
    services_by_suffix = {"": None, "-stable": "stable", "-canary": "canary"}
    objects = render_children(
        "demo", "ml", spec, _plan(spec, [("stable", 2), ("canary", 1)], services_by_suffix), asleep=False
    )
    services = {o["metadata"]["name"]: o["spec"]["selector"] for o in objects if o["kind"] == "Service"}
    assert services["demo"] == {"serving.gpt-operator.dev/name": "demo"}
    assert services["demo-stable"]["serving.gpt-operator.dev/track"] == "stable"
    assert services["demo-canary"]["serving.gpt-operator.dev/track"] == "canary"
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"] == ["demo-stable", "demo-canary"]
