"""spec.engine: vLLM or llama.cpp in an `engine` container beside the runtime, what the pods and ConfigMap say,
the engine's API key Secret, the revision of builtin specs, and the CRD's and spec.py's rules."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime

import kubernetes_validate
import pytest
import yaml
from gpt_operator.__main__ import render_documents
from gpt_operator.apply import SecretsSeen, generated_secret
from gpt_operator.kube_apply import ensure_jwt_secret, ensure_secret
from gpt_operator.naming import ENGINE_KEY_SECRET, JWT_SECRET, TEMPLATE_ANNOTATION
from gpt_operator.reconcile import desire
from gpt_operator.render import render_children
from gpt_operator.render.engine import served_name
from gpt_operator.render.network import network_policy
from gpt_operator.render.workload import config_map, deployment, spec_from_template
from gpt_operator.rollout import Plan, RolloutState, TrackPlan
from gpt_operator.schema import apply_defaults, validation_problems
from gpt_operator.spec import (
    ENGINE_IMAGES,
    LLAMACPP_SOURCE_MESSAGE,
    RESERVED_VOLUME_NAMES,
    RESERVED_VOLUME_PREFIXES,
    VLLM_GPU_MESSAGE,
    VLLM_SOURCE_MESSAGE,
    parse_spec,
)
from pydantic import ValidationError

from .test_apply_helpers import FakeSecrets
from .test_crd import ROOT, SCHEMA, SPEC_SCHEMA

pytestmark = pytest.mark.unit
K8S = kubernetes_validate.latest_version()
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
SMOLLM = {"source": "builtin:smollm2-135m"}
LLAMACPP = {"type": "llamacpp"}
VLLM = {"type": "vllm"}
GPU = {"cpu": "4", "memory": "16Gi", "gpu": 1}
KEY_REF = {"secretKeyRef": {"name": "demo-engine-key", "key": "api-key"}}


def render(**fields) -> tuple[dict, dict]:
    """The Deployment (checked against the Kubernetes schema) and the ConfigMap of one spec."""
    spec = parse_spec(fields)
    template = spec.pod_template_spec()
    dep = deployment("demo", "ml", "main", template, spec.revision, 1)
    kubernetes_validate.validate(dep, K8S, strict=True)
    cm = config_map("demo", "ml", template, spec.revision)
    kubernetes_validate.validate(cm, K8S, strict=True)
    return dep, cm


def pod(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]


def containers(dep: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod(dep)["containers"]}


def env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def mounts(container: dict) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}


# --- llama.cpp ---------------------------------------------------------------------------------------------------


def test_llamacpp_runs_beside_the_runtime_with_the_builtin_gguf() -> None:
    dep, cm = render(model=SMOLLM, engine=LLAMACPP)
    assert list(containers(dep)) == ["runtime", "engine"]
    engine = containers(dep)["engine"]
    assert engine["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert "command" not in engine  # the image's entrypoint is /app/llama-server
    assert engine["args"] == [
        "--model", "/engine-model/model.gguf", "--host", "0.0.0.0", "--port", "8081", "--alias", "smollm2-135m",
        "--parallel", "8", "--ctx-size", "16384", "--metrics",
    ]  # fmt: skip
    assert engine["ports"] == [{"name": "engine", "containerPort": 8081, "protocol": "TCP"}]
    # the runtime talks to it on loopback, with the builtin tokenizer the runtime image ships
    source = "openai+http://127.0.0.1:8081/v1?model=smollm2-135m&tokenizer=builtin:smollm2-135m"
    assert cm["data"]["GPT_MODEL_SOURCE"] == source
    # the image's own /models, where the builtin was converted at build time: counting needs no conversion
    assert cm["data"]["GPT_MODEL_CACHE_DIR"] == "/models"


def test_the_engine_is_probed_on_its_health_endpoint_and_allowed_ten_minutes_to_start() -> None:
    engine = containers(render(model=SMOLLM, engine=LLAMACPP)[0])["engine"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert engine[probe]["httpGet"] == {"path": "/health", "port": "engine"}
    startup = engine["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600


def test_both_containers_get_the_engine_key_from_the_generated_secret() -> None:
    dep, cm = render(model=SMOLLM, engine=LLAMACPP)
    runtime, engine = containers(dep)["runtime"], containers(dep)["engine"]
    assert env(engine)["LLAMA_API_KEY"] == KEY_REF
    assert env(runtime)["GPT_ENGINE_API_KEY"] == KEY_REF
    assert "VLLM_API_KEY" not in env(engine)
    assert not [v for v in cm["data"].values() if "engine-key" in v]  # never in a ConfigMap
    # the runtime keeps its ConfigMap, JWT Secret and the user's Secret
    assert [next(iter(s.values()))["name"] for s in runtime["envFrom"]] == [cm["metadata"]["name"], "demo-jwt"]


def test_a_users_env_entry_of_the_same_name_replaces_the_runtimes_engine_key() -> None:
    dep, _ = render(model=SMOLLM, engine=LLAMACPP, env=[{"name": "GPT_ENGINE_API_KEY", "value": "mine"}])
    entries = [e for e in containers(dep)["runtime"]["env"] if e["name"] == "GPT_ENGINE_API_KEY"]
    assert entries == [{"name": "GPT_ENGINE_API_KEY", "value": "mine"}]


def test_spec_resources_go_to_the_engine_and_runtime_resources_to_the_runtime() -> None:
    dep, _ = render(model=SMOLLM, engine=LLAMACPP, resources={"cpu": "2", "memory": "4Gi"})
    runtime, engine = containers(dep)["runtime"], containers(dep)["engine"]
    assert engine["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    assert runtime["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    own = {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "3Gi"}}
    dep, _ = render(model=SMOLLM, engine={**LLAMACPP, "runtimeResources": own})
    assert containers(dep)["runtime"]["resources"] == own  # each part given replaces its default whole


def test_llamacpp_on_a_gpu_takes_the_cuda_image_offloads_every_layer_and_holds_the_gpu() -> None:
    dep, _ = render(model=SMOLLM, engine=LLAMACPP, resources=GPU)
    runtime, engine = containers(dep)["runtime"], containers(dep)["engine"]
    assert engine["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda"
    assert engine["args"][-2:] == ["--n-gpu-layers", "999"]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in json.dumps(runtime["resources"])
    (fetch,) = pod(dep)["initContainers"]
    assert "nvidia.com/gpu" not in json.dumps(fetch["resources"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod(dep)["tolerations"]


def test_llamacpp_context_is_one_max_context_per_slot_and_the_runtime_keeps_its_limit() -> None:
    dep, cm = render(model={**SMOLLM, "maxContextTokens": 4096}, engine={**LLAMACPP, "parallel": 4})
    args = containers(dep)["engine"]["args"]
    assert args[args.index("--parallel") + 1] == "4"
    assert args[args.index("--ctx-size") + 1] == str(4 * 4096)
    assert cm["data"]["GPT_MAX_CONTEXT_TOKENS"] == "4096"


def test_the_fetch_init_container_copies_the_model_into_the_engine_volume() -> None:
    dep, cm = render(
        model={"source": "s3://models/gguf/qwen2.5-0.5b-q8_0.gguf"}, engine=LLAMACPP, secretRef={"name": "s"}
    )
    (fetch,) = pod(dep)["initContainers"]
    runtime, engine = containers(dep)["runtime"], containers(dep)["engine"]
    assert fetch["name"] == "fetch-engine-model"
    assert fetch["image"] == runtime["image"]  # the runtime's image, which has gpt_model.fetch
    assert fetch["command"] == [
        "python", "-m", "gpt_model.fetch", "--engine", "llamacpp",
        "--source", "s3://models/gguf/qwen2.5-0.5b-q8_0.gguf", "--into", "/engine-model",
    ]  # fmt: skip
    assert fetch["envFrom"] == runtime["envFrom"]  # S3 credentials in the user's Secret
    assert fetch["securityContext"] == runtime["securityContext"]
    assert mounts(fetch) == {"/engine-model": "engine-model", "/tmp": "tmp"}
    assert mounts(engine) == {"/engine-model": "engine-model", "/tmp": "engine-tmp"}
    assert mounts(runtime) == {"/data": "data", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["engine-model"] == {"name": "engine-model", "emptyDir": {}}
    assert volumes["engine-tmp"] == {"name": "engine-tmp", "emptyDir": {}}
    assert "engine-shm" not in volumes
    assert containers(dep)["engine"]["args"][:2] == ["--model", "/engine-model/model.gguf"]
    assert cm["data"]["GPT_MODEL_SOURCE"] == "openai+http://127.0.0.1:8081/v1?model=qwen2.5-0.5b-q8_0"


def test_the_engine_runs_as_the_pods_non_root_user_with_a_read_only_root() -> None:
    dep, _ = render(model=SMOLLM, engine=LLAMACPP)
    engine, runtime = containers(dep)["engine"], containers(dep)["runtime"]
    assert pod(dep)["securityContext"]["runAsUser"] == 10001 and pod(dep)["securityContext"]["runAsNonRoot"]
    assert engine["securityContext"] == runtime["securityContext"]
    assert engine["securityContext"]["readOnlyRootFilesystem"] is True
    assert env(engine)["HOME"] == "/tmp" and mounts(engine)["/tmp"] == "engine-tmp"


def test_the_engine_stops_only_after_the_runtime_has_drained() -> None:
    """Generations in flight during the runtime's drain need the engine: its preStop waits until nothing
    listens on the runtime's port 8000 (0x1F40) any more (tests/integration/operator/test_engine.py runs it)."""
    dep, _ = render(model=SMOLLM, engine=LLAMACPP)
    command = containers(dep)["engine"]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"] and ":1F40 " in command[2] and "/proc/net/tcp" in command[2]


def test_a_pvc_gguf_is_mounted_read_only_in_the_engine_without_a_copy() -> None:
    dep, cm = render(model={"source": "pvc:models/gguf/llama-3.2-1b.gguf"}, engine=LLAMACPP)
    assert "initContainers" not in pod(dep)
    runtime, engine = containers(dep)["runtime"], containers(dep)["engine"]
    assert {"name": "model", "mountPath": "/models/models", "readOnly": True} in engine["volumeMounts"]
    assert "/models/models" not in mounts(runtime)
    assert engine["args"][:2] == ["--model", "/models/models/gguf/llama-3.2-1b.gguf"]
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert "engine-model" not in volumes
    assert cm["data"]["GPT_MODEL_SOURCE"] == "openai+http://127.0.0.1:8081/v1?model=llama-3.2-1b"


def test_with_model_cache_the_engine_volume_is_the_shared_claim() -> None:
    model = {"source": "s3://models/gguf/m.gguf", "cache": {"size": "20Gi"}}
    spec = parse_spec({"environment": "staging", "model": model, "engine": LLAMACPP})
    plan = Plan([TrackPlan("main", spec.revision, spec.pod_template_spec(), 2)], {"": "main"}, RolloutState())
    objects = render_children("demo", "ml", spec, plan, asleep=False)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"] == ["demo-model-cache"]
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["engine-model"]["persistentVolumeClaim"] == {"claimName": "demo-model-cache"}
    assert "gpt-model-cache" not in volumes  # the runtime loads no model: no fetch-model, no cache mount
    assert [c["name"] for c in pod(dep)["initContainers"]] == ["fetch-engine-model"]
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert "HF_HUB_CACHE" not in cm["data"]


def test_extra_args_come_last_and_a_port_of_ones_own_is_used_everywhere() -> None:
    dep, cm = render(model=SMOLLM, engine={**LLAMACPP, "port": 9090, "extraArgs": ["--threads", "4"]})
    engine = containers(dep)["engine"]
    assert engine["args"][-2:] == ["--threads", "4"]
    assert engine["args"][engine["args"].index("--port") + 1] == "9090"
    assert engine["ports"][0]["containerPort"] == 9090
    assert cm["data"]["GPT_MODEL_SOURCE"].startswith("openai+http://127.0.0.1:9090/v1?")


# --- vLLM --------------------------------------------------------------------------------------------------------


def test_vllm_downloads_an_hf_model_itself_into_the_engine_volume() -> None:
    model = {"source": "hf:Qwen/Qwen2.5-0.5B-Instruct", "dtype": "bfloat16", "revision": "main"}
    dep, cm = render(model=model, engine=VLLM, resources=GPU, secretRef={"name": "hf"})
    assert "initContainers" not in pod(dep)  # no copy: vLLM fetches hf: models
    engine = containers(dep)["engine"]
    assert engine["image"] == "vllm/vllm-openai:v0.11.0"
    assert engine["args"] == [
        "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--served-model-name", "Qwen/Qwen2.5-0.5B-Instruct",
        "--host", "0.0.0.0", "--port", "8081", "--dtype", "bfloat16", "--gpu-memory-utilization", "0.9",
        "--max-num-seqs", "8", "--revision", "main",
    ]  # fmt: skip
    variables = env(engine)
    assert variables["VLLM_API_KEY"] == KEY_REF and "LLAMA_API_KEY" not in variables
    assert variables["HF_HOME"] == "/engine-model/hf"
    assert variables["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN", "optional": True}}
    assert mounts(engine) == {"/engine-model": "engine-model", "/tmp": "engine-tmp", "/dev/shm": "engine-shm"}
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["engine-shm"] == {"name": "engine-shm", "emptyDir": {"medium": "Memory"}}
    assert cm["data"]["GPT_MODEL_SOURCE"] == "openai+http://127.0.0.1:8081/v1?model=Qwen/Qwen2.5-0.5B-Instruct"


def test_vllm_context_sequences_and_tensor_parallelism_follow_the_spec() -> None:
    dep, _ = render(
        model={"source": "s3://models/hf/llama-3.1-8b/", "maxContextTokens": 8192},
        engine={**VLLM, "gpuMemoryUtilization": 0.8, "parallel": 32, "extraArgs": ["--enable-prefix-caching"]},
        resources={"cpu": "8", "memory": "64Gi", "gpu": 2},
    )
    args = containers(dep)["engine"]["args"]
    assert args[:4] == ["--model", "/engine-model/model", "--served-model-name", "llama-3.1-8b"]
    for flag, value in {
        "--dtype": "float32",
        "--gpu-memory-utilization": "0.8",
        "--max-num-seqs": "32",
        "--max-model-len": "8192",
        "--tensor-parallel-size": "2",
    }.items():
        assert args[args.index(flag) + 1] == value, flag
    assert args[-1] == "--enable-prefix-caching"
    (fetch,) = pod(dep)["initContainers"]
    assert fetch["command"][3:] == [
        "--engine",
        "vllm",
        "--source",
        "s3://models/hf/llama-3.1-8b/",
        "--into",
        "/engine-model",
    ]
    assert containers(dep)["engine"]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_vllm_on_one_gpu_has_no_tensor_parallelism_and_builtin_smollm_gets_its_tokenizer() -> None:
    dep, cm = render(model=SMOLLM, engine=VLLM, resources=GPU)
    args = containers(dep)["engine"]["args"]
    assert "--tensor-parallel-size" not in args and "--max-model-len" not in args
    assert args[:4] == ["--model", "/engine-model/model", "--served-model-name", "smollm2-135m"]
    (fetch,) = pod(dep)["initContainers"]
    assert fetch["command"][3:5] == ["--engine", "vllm"]
    assert cm["data"]["GPT_MODEL_SOURCE"].endswith("?model=smollm2-135m&tokenizer=builtin:smollm2-135m")


def test_a_vllm_model_on_a_claim_is_read_in_place() -> None:
    dep, _ = render(model={"source": "pvc:weights/qwen"}, engine=VLLM, resources=GPU)
    assert "initContainers" not in pod(dep)
    assert containers(dep)["engine"]["args"][:4] == ["--model", "/models/weights/qwen", "--served-model-name", "qwen"]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("builtin:smollm2-135m", "smollm2-135m"),
        ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("s3://bucket/gguf/qwen.gguf", "qwen"),
        ("s3://bucket/hf/llama-3/", "llama-3"),
        ("pvc:models/gguf/m.gguf", "m"),
        ("pvc:weights/", "weights"),
        ("/mnt/models/phi-3", "phi-3"),
    ],
)
def test_served_model_name(source: str, name: str) -> None:
    assert served_name(source) == name


# --- the builtin engine: nothing changes -------------------------------------------------------------------------


# Revisions computed by the operator before spec.engine existed: a GPTDeployment that does not ask for an engine
# must keep its revision (or every existing object would roll out when the operator is upgraded).
OLD_REVISIONS = [
    ({"model": {"source": "builtin:tiny"}}, "2b09cc5d47"),
    (
        {
            "environment": "prod",
            "model": {"source": "hf:org/m", "dtype": "bfloat16", "maxContextTokens": 4096},
            "resources": {"cpu": "4", "memory": "16Gi", "gpu": 1},
            "env": [{"name": "GPT_CACHE_URL", "value": "redis://r"}],
            "secretRef": {"name": "s"},
        },
        "d1acdbcd75",
    ),
    (
        {
            "environment": "staging",
            "model": {"source": "s3://models/gpt/v1", "cache": {"size": "20Gi"}},
            "podLabels": {"team": "ml"},
        },
        "36be351714",
    ),
]


@pytest.mark.parametrize(("raw", "revision"), OLD_REVISIONS)
def test_builtin_specs_keep_the_revision_they_had(raw: dict, revision: str) -> None:
    assert parse_spec(raw).revision == revision
    assert parse_spec({**raw, "engine": {}}).revision == revision
    assert parse_spec({**raw, "engine": {"type": "builtin", "port": 9000, "parallel": 2}}).revision == revision
    defaulted = apply_defaults({**raw, "engine": {}}, SPEC_SCHEMA)  # as the API server stores `engine: {}`
    assert parse_spec(defaulted).revision == revision
    assert "engine" not in parse_spec(raw).pod_template_spec()


def test_builtin_pods_render_exactly_as_before() -> None:
    dep, cm = render(model={"source": "builtin:tiny"}, engine={"type": "builtin"})
    assert [c["name"] for c in pod(dep)["containers"]] == ["runtime"]
    assert cm["data"]["GPT_MODEL_SOURCE"] == "builtin:tiny"
    assert "GPT_ENGINE_API_KEY" not in env(containers(dep)["runtime"])
    assert not [v for v in pod(dep)["volumes"] if v["name"].startswith("engine-")]


def test_an_engine_is_a_new_revision_recorded_with_its_resolved_image() -> None:
    builtin = parse_spec({"model": SMOLLM})
    llamacpp = parse_spec({"model": SMOLLM, "engine": LLAMACPP})
    assert builtin.revision != llamacpp.revision
    dep = deployment("demo", "ml", "canary", llamacpp.pod_template_spec(), llamacpp.revision, 1)
    recorded = json.loads(dep["metadata"]["annotations"][TEMPLATE_ANNOTATION])
    assert recorded["engine"]["image"] == ENGINE_IMAGES["llamacpp"]
    assert spec_from_template(recorded).revision == llamacpp.revision
    assert parse_spec({"model": SMOLLM, "engine": {**LLAMACPP, "parallel": 4}}).revision != llamacpp.revision


def test_a_canary_from_builtin_to_llamacpp_runs_each_track_as_its_revision_says() -> None:
    builtin = parse_spec({"model": SMOLLM, "rollout": {"strategy": "Canary"}})
    llamacpp = parse_spec({"model": SMOLLM, "engine": LLAMACPP, "rollout": {"strategy": "Canary"}})
    plan = Plan(
        [
            TrackPlan("stable", builtin.revision, builtin.pod_template_spec(), 2),
            TrackPlan("canary", llamacpp.revision, llamacpp.pod_template_spec(), 1),
        ],
        {"": None, "-stable": "stable", "-canary": "canary"},
        RolloutState(),
    )
    objects = render_children("demo", "ml", llamacpp, plan, asleep=False)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert list(containers(deployments["demo-stable"])) == ["runtime"]
    assert list(containers(deployments["demo-canary"])) == ["runtime", "engine"]
    sources = {o["metadata"]["name"]: o["data"]["GPT_MODEL_SOURCE"] for o in objects if o["kind"] == "ConfigMap"}
    assert sources == {
        f"demo-config-{builtin.revision}": "builtin:smollm2-135m",
        f"demo-config-{llamacpp.revision}": "openai+http://127.0.0.1:8081/v1?model=smollm2-135m&tokenizer=builtin:smollm2-135m",
    }


# --- the engine's API key Secret ---------------------------------------------------------------------------------


def body(**spec) -> dict:
    return {
        "apiVersion": "serving.gpt-operator.dev/v1alpha1",
        "kind": "GPTDeployment",
        "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {"model": SMOLLM, **spec},
    }


def test_a_gptdeployment_with_an_engine_needs_the_engine_key_and_status_names_it() -> None:
    plain = desire(body(), [], NOON)
    assert plain.secrets == (JWT_SECRET,)
    assert plain.status["jwtSecret"] == "chat-jwt" and plain.status["engineSecret"] is None
    engine = desire(body(engine=LLAMACPP), [], NOON)
    assert engine.secrets == (JWT_SECRET, ENGINE_KEY_SECRET)
    assert engine.status["engineSecret"] == "chat-engine-key"


def test_the_engine_key_stays_needed_while_an_older_track_runs_an_engine() -> None:
    """Back from llamacpp to builtin by blue-green: the active colour still runs the engine until promoted."""
    old = parse_spec({"model": SMOLLM, "engine": LLAMACPP, "rollout": {"strategy": "BlueGreen"}})
    live = deployment("chat", "ml", "blue", old.pod_template_spec(), old.revision, 1)
    live["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    status = {"activeTrack": "blue", "stableRevision": old.revision}
    raw = {**body(rollout={"strategy": "BlueGreen"}), "status": status}
    d = desire(raw, [live], NOON)
    assert [t for t in (d.objects or []) if t["kind"] == "Deployment"]
    assert d.secrets == (JWT_SECRET, ENGINE_KEY_SECRET)


def test_the_engine_key_secret_is_owned_labelled_and_random() -> None:
    owner = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}
    secret = generated_secret(owner, ENGINE_KEY_SECRET, "k3y")
    kubernetes_validate.validate(secret, K8S, strict=True)
    assert secret["metadata"]["name"] == "chat-engine-key"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gpt-operator"
    assert secret["data"] == {"api-key": base64.b64encode(b"k3y").decode()}


class RecordingSecrets(FakeSecrets):
    def __init__(self, get_status: int) -> None:
        super().__init__(get_status)
        self.bodies: list[dict] = []

    async def request(self, method: str, path: str, **kwargs: object) -> dict:
        if kwargs.get("body"):
            self.bodies.append(kwargs["body"])  # type: ignore[arg-type]
        return await super().request(method, path, **kwargs)


def test_the_engine_key_is_created_once_with_a_random_value_and_never_rewritten() -> None:
    owner = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}
    missing = RecordingSecrets(404)
    assert asyncio.run(ensure_secret(missing, owner, ENGINE_KEY_SECRET)) is True
    assert [f"{m} {p}" for m, p in missing.calls] == [
        "GET /api/v1/namespaces/ml/secrets/chat-engine-key",
        "POST /api/v1/namespaces/ml/secrets",
    ]
    (sent,) = missing.bodies
    key = base64.b64decode(sent["data"]["api-key"]).decode()
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 48
    present = RecordingSecrets(200)
    assert asyncio.run(ensure_secret(present, owner, ENGINE_KEY_SECRET)) is False
    assert [m for m, _ in present.calls] == ["GET"]  # never PUT or PATCH: an existing Secret stays as it is


def test_each_generated_secret_is_looked_at_on_its_own() -> None:
    """A JWT Secret seen a moment ago says nothing about the engine key: each has its own entry."""
    client = FakeSecrets(200)
    owner = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"}}
    seen = SecretsSeen(ttl_s=60)
    asyncio.run(ensure_jwt_secret(client, owner, seen))
    asyncio.run(ensure_secret(client, owner, ENGINE_KEY_SECRET, seen))
    asyncio.run(ensure_secret(client, owner, ENGINE_KEY_SECRET, seen))
    asyncio.run(ensure_jwt_secret(client, owner, seen))
    assert [p.rsplit("/", 1)[-1] for _, p in client.calls] == ["chat-jwt", "chat-engine-key"]


# --- NetworkPolicy -----------------------------------------------------------------------------------------------


def test_the_network_policy_never_opens_the_engine_port() -> None:
    spec = parse_spec({"model": SMOLLM, "engine": {**LLAMACPP, "port": 8081}, "networkPolicy": {"enabled": True}})
    policy = network_policy("demo", "ml", spec.network_policy)
    kubernetes_validate.validate(policy, K8S, strict=True)
    ports = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports and all(p == {"port": 8000, "protocol": "TCP"} for p in ports)
    plan = Plan([TrackPlan("main", spec.revision, spec.pod_template_spec(), 1)], {"": None}, RolloutState())
    (rendered,) = [o for o in render_children("demo", "ml", spec, plan, asleep=False) if o["kind"] == "NetworkPolicy"]
    assert "8081" not in json.dumps(rendered)


# --- validation: spec.py and the CRD -----------------------------------------------------------------------------

ACCEPTED = [
    ("llamacpp", "builtin:smollm2-135m", {}),
    ("llamacpp", "s3://bucket/models/m.gguf", {}),
    ("llamacpp", "pvc:models/gguf/m.gguf", {}),
    ("llamacpp", "/mnt/models/m.gguf", {}),
    ("vllm", "builtin:smollm2-135m", GPU),
    ("vllm", "hf:Qwen/Qwen2.5-0.5B-Instruct", GPU),
    ("vllm", "s3://bucket/hf/qwen/", GPU),
    ("vllm", "pvc:weights/qwen", GPU),
    ("vllm", "/mnt/models/qwen", GPU),
]


@pytest.mark.parametrize(("engine", "source", "resources"), ACCEPTED)
def test_each_engine_accepts_the_sources_it_can_serve(engine: str, source: str, resources: dict) -> None:
    raw = {"model": {"source": source}, "engine": {"type": engine}, "resources": resources or None}
    raw = {k: v for k, v in raw.items() if v is not None}
    parse_spec(raw)
    assert validation_problems({"spec": raw}, SCHEMA) == []


REFUSED = [
    ("llamacpp-hf", {"model": {"source": "hf:org/m"}, "engine": LLAMACPP}, LLAMACPP_SOURCE_MESSAGE),
    ("llamacpp-s3-dir", {"model": {"source": "s3://b/models/"}, "engine": LLAMACPP}, LLAMACPP_SOURCE_MESSAGE),
    ("llamacpp-tiny", {"model": {"source": "builtin:tiny"}, "engine": LLAMACPP}, LLAMACPP_SOURCE_MESSAGE),
    ("llamacpp-dir", {"model": {"source": "/mnt/models/m"}, "engine": LLAMACPP}, LLAMACPP_SOURCE_MESSAGE),
    ("vllm-tiny", {"model": {"source": "builtin:tiny"}, "engine": VLLM, "resources": GPU}, VLLM_SOURCE_MESSAGE),
    ("vllm-no-gpu", {"model": SMOLLM, "engine": VLLM}, VLLM_GPU_MESSAGE),
    ("runtime-port", {"model": SMOLLM, "engine": {**LLAMACPP, "port": 8000}}, "must not be 8000"),
]


@pytest.mark.parametrize(("name", "raw", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_spec_refuses_what_an_engine_cannot_serve(name: str, raw: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        parse_spec(raw)
    d = desire(body(**raw), [], NOON)  # the operator reports it and leaves the children alone
    assert d.objects is None and message in "; ".join(d.problems)


def test_vllm_without_a_gpu_is_accepted_with_an_image_of_ones_own() -> None:
    raw = {"model": SMOLLM, "engine": {**VLLM, "image": "registry.example.com/vllm-cpu:v0.11.0"}}
    assert containers(render(**raw)[0])["engine"]["image"] == "registry.example.com/vllm-cpu:v0.11.0"


def _cel(node: dict) -> dict[str, str]:
    return {v["message"]: v["rule"] for v in node.get("x-kubernetes-validations", [])}


def test_the_crd_carries_the_same_rules_with_the_same_messages() -> None:
    """CEL runs only in the API server (the e2e suite applies bad objects); here: each rule of spec.py has its
    CEL twin with the same message, written over the same fields."""
    rules = _cel(SPEC_SCHEMA)
    llamacpp = rules[LLAMACPP_SOURCE_MESSAGE]
    assert "self.engine.type != 'llamacpp'" in llamacpp and "'builtin:smollm2-135m'" in llamacpp
    for prefix in ("'s3://'", "'pvc:'", "'/'"):
        assert f"startsWith({prefix})" in llamacpp
    assert "endsWith('.gguf')" in llamacpp
    vllm = rules[VLLM_SOURCE_MESSAGE]
    assert "self.engine.type != 'vllm'" in vllm and "startsWith('builtin:')" in vllm
    assert "self.resources.gpu > 0" in rules[VLLM_GPU_MESSAGE] and "has(self.engine.image)" in rules[VLLM_GPU_MESSAGE]
    engine = SPEC_SCHEMA["properties"]["engine"]
    assert _cel(engine) == {"engine.port must not be 8000, the runtime's port": "self.port != 8000"}


def test_crd_defaults_agree_with_the_operator_model() -> None:
    raw = {"model": SMOLLM, "engine": LLAMACPP}
    defaulted = apply_defaults(raw, SPEC_SCHEMA)
    assert defaulted["engine"] == {"type": "llamacpp", "port": 8081, "gpuMemoryUtilization": 0.9, "parallel": 8}
    assert parse_spec(defaulted) == parse_spec(raw)
    assert parse_spec(defaulted).revision == parse_spec(raw).revision


@pytest.mark.parametrize(
    ("engine", "fragment"),
    [
        ({"type": "tgi"}, "not one of"),
        ({**LLAMACPP, "port": 80}, ".spec.engine.port: 80 is below the minimum 1024"),
        ({**LLAMACPP, "gpuMemoryUtilization": 1.0}, "above the maximum 0.99"),
        ({**LLAMACPP, "parallel": 0}, ".spec.engine.parallel"),
        ({**LLAMACPP, "extraArgs": [1]}, ".spec.engine.extraArgs[0]: must be string"),
        ({**LLAMACPP, "extraArgs": ["-x"] * 65}, "more than 64 items"),
        ({**LLAMACPP, "runtimeResources": {"requests": {"cpu": "lots"}}}, ".spec.engine.runtimeResources.requests.cpu"),
        ({**LLAMACPP, "replicas": 2}, ".spec.engine.replicas: unknown field"),
    ],
)
def test_crd_schema_refuses_bad_engine_fields(engine: dict, fragment: str) -> None:
    problems = validation_problems({"spec": {"model": SMOLLM, "engine": engine}}, SCHEMA)
    assert any(fragment in p for p in problems), problems


def test_engine_volume_names_and_mount_paths_are_the_operators() -> None:
    dep, _ = render(model=SMOLLM, engine=VLLM, resources=GPU)
    for volume in pod(dep)["volumes"]:
        assert volume["name"] in RESERVED_VOLUME_NAMES or volume["name"].startswith(RESERVED_VOLUME_PREFIXES)
    rule = SPEC_SCHEMA["properties"]["volumes"]["items"]["x-kubernetes-validations"][0]["rule"]
    for prefix in RESERVED_VOLUME_PREFIXES:
        assert f"startsWith('{prefix}')" in rule
    with pytest.raises(ValidationError, match="operator's"):
        parse_spec({"model": SMOLLM, "volumes": [{"name": "engine-model", "emptyDir": {}}]})
    volume = {"volumes": [{"name": "x", "emptyDir": {}}], "volumeMounts": [{"name": "x", "mountPath": "/engine-model"}]}
    with pytest.raises(ValidationError, match="the runtime's own"):
        parse_spec({"model": SMOLLM, **volume})
    mount_rule = SPEC_SCHEMA["properties"]["volumeMounts"]["items"]["x-kubernetes-validations"][0]["rule"]
    assert "'/engine-model'" in mount_rule and "'/model-cache'" in mount_rule


def test_an_absolute_source_on_a_users_volume_reaches_the_fetch_container() -> None:
    volume = {"volumes": [{"name": "nfs", "nfs": {"server": "nfs", "path": "/models"}}]}
    mount = {"volumeMounts": [{"name": "nfs", "mountPath": "/mnt/models", "readOnly": True}]}
    dep, _ = render(model={"source": "/mnt/models/m.gguf"}, engine=LLAMACPP, **volume, **mount)
    (fetch,) = pod(dep)["initContainers"]
    assert mounts(fetch)["/mnt/models"] == "nfs"
    assert "/mnt/models" not in mounts(containers(dep)["engine"])


def test_the_default_images_are_documented_where_users_read_them() -> None:
    """spec.ENGINE_IMAGES pins them; manifests/README.md and the CRD's description must say the same."""
    readme = (ROOT / "manifests" / "README.md").read_text()
    description = " ".join(SPEC_SCHEMA["properties"]["engine"]["properties"]["image"]["description"].split())
    for image in ENGINE_IMAGES.values():
        assert f"`{image}`" in readme, image
        assert image in description, image


def test_the_llamacpp_sample_runs_llama_cpp_beside_the_runtime() -> None:
    path = ROOT / "manifests" / "samples" / "chat-llamacpp.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["spec"]["engine"]["type"] == "llamacpp" and doc["spec"]["model"]["source"] == "builtin:smollm2-135m"
    assert doc["spec"]["environment"] == "dev"
    objects, problems = render_documents(path.read_text(), NOON, SCHEMA)
    assert problems == []
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    assert [c["name"] for c in pod(dep)["containers"]] == ["runtime", "engine"]
    assert [c["name"] for c in pod(dep)["initContainers"]] == ["fetch-engine-model"]
