"""The engine container beside the runtime, for spec.engine vllm or llamacpp (pure).

The runtime keeps the conversation API (auth, quotas, jobs, ...) and sends generation to the engine on loopback:
its model source becomes `openai+http://127.0.0.1:PORT/v1?model=NAME`, and it sends the engine's API key
(`GPT_ENGINE_API_KEY`, from the operator's Secret `<name>-engine-key`). The engine listens on 0.0.0.0 so the
kubelet can probe its `/health` (unauthenticated in both engines); everything else needs the key.

The model reaches the engine through the volume `engine-model` (an emptyDir, or model.cache's claim), filled by
the init container `fetch-engine-model` (the runtime's image: `python -m gpt_model.fetch --engine TYPE --source
SOURCE --into /engine-model` leaves `model.gguf` for llama.cpp, `model/` (a Hugging Face directory) for vLLM).
A `pvc:` source needs no copy (the claim is mounted read-only at /models/CLAIM), nor does vLLM with `hf:` (vLLM
downloads it itself into HF_HOME=/engine-model/hf).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gpt_operator.naming import ENGINE_KEY_SECRET
from gpt_operator.spec import GPTDeploymentSpec, ResourceList, ResourcesSpec

CONTAINER_NAME = "engine"
FETCH_CONTAINER_NAME = "fetch-engine-model"
MODEL_VOLUME = "engine-model"
MODEL_DIR = "/engine-model"
TMP_VOLUME = "engine-tmp"
SHM_VOLUME = "engine-shm"  # vLLM's worker processes talk through shared memory; a container's /dev/shm is 64 MiB
PVC_MODELS_DIR = "/models"  # pvc:CLAIM/PATH -> /models/CLAIM/PATH, as for the runtime
# The environment variable each engine reads its required API key from; the runtime reads the same key here.
API_KEY_ENV = {"llamacpp": "LLAMA_API_KEY", "vllm": "VLLM_API_KEY"}
RUNTIME_API_KEY_ENV = "GPT_ENGINE_API_KEY"
# llama.cpp's --ctx-size is shared by its --parallel slots: each slot gets maxContextTokens (or this).
DEFAULT_SLOT_CONTEXT = 2048
# Loading a model (or vLLM downloading it) takes a while: the startup probe allows 10 minutes.
STARTUP_PERIOD_S, STARTUP_FAILURES = 10, 60


def served_name(source: str) -> str:
    """The model name the engine answers to: builtin:NAME -> NAME, hf:ORG/NAME -> ORG/NAME, and a path or
    key -> its last segment without `.gguf`."""
    if source.startswith("builtin:"):
        return source.removeprefix("builtin:")
    if source.startswith("hf:"):
        return source.removeprefix("hf:")
    last = source.rstrip("/").rsplit("/", 1)[-1]
    if last.startswith("pvc:"):  # pvc:CLAIM/ (the claim's root)
        last = last.removeprefix("pvc:")
    return last.removesuffix(".gguf")


def _pvc(source: str) -> tuple[str, str] | None:
    if not source.startswith("pvc:"):
        return None
    claim, _, path = source.removeprefix("pvc:").partition("/")
    return claim, path


def fetches(spec: GPTDeploymentSpec) -> bool:
    """Whether the fetch-engine-model init container copies the model into the engine-model volume."""
    source = spec.model.source
    return not (source.startswith("pvc:") or (spec.engine.type == "vllm" and source.startswith("hf:")))


def model_argument(spec: GPTDeploymentSpec) -> str:
    """What the engine's --model names: the file or dir where it finds the model, or (vLLM, hf:) the repo."""
    source = spec.model.source
    pvc = _pvc(source)
    if pvc is not None:
        claim, path = pvc
        return f"{PVC_MODELS_DIR}/{claim}/{path}".rstrip("/")
    if spec.engine.type == "vllm" and source.startswith("hf:"):
        return source.removeprefix("hf:")
    return f"{MODEL_DIR}/model.gguf" if spec.engine.type == "llamacpp" else f"{MODEL_DIR}/model"


def runtime_model_source(spec: GPTDeploymentSpec) -> str:
    """The runtime's GPT_MODEL_SOURCE: the engine on loopback, and the builtin tokenizer the image ships."""
    source = spec.model.source
    url = f"openai+http://127.0.0.1:{spec.engine.port}/v1?model={quote(served_name(source), safe='/:')}"
    if source.startswith("builtin:"):
        url += f"&tokenizer={quote(source, safe='/:')}"
    return url


def engine_args(spec: GPTDeploymentSpec) -> list[str]:
    """The engine's command-line arguments (its image's entrypoint is the server), then the user's extraArgs."""
    engine, model = spec.engine, spec.model
    gpu = (spec.resources or ResourcesSpec()).gpu
    name = served_name(model.source)
    common = ["--host", "0.0.0.0", "--port", str(engine.port)]
    if engine.type == "llamacpp":
        slot_context = model.max_context_tokens or DEFAULT_SLOT_CONTEXT
        args = ["--model", model_argument(spec), *common, "--alias", name, "--parallel", str(engine.parallel)]
        args += ["--ctx-size", str(engine.parallel * slot_context), "--metrics"]
        if gpu > 0:
            args += ["--n-gpu-layers", "999"]
    else:
        args = ["--model", model_argument(spec), "--served-model-name", name, *common, "--dtype", model.dtype]
        args += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
        args += ["--max-num-seqs", str(engine.parallel)]
        if model.max_context_tokens:
            args += ["--max-model-len", str(model.max_context_tokens)]
        if gpu > 1:
            args += ["--tensor-parallel-size", str(gpu)]
        if model.revision and model.source.startswith("hf:"):
            args += ["--revision", model.revision]
    return args + list(engine.extra_args)


def _secret_env(variable: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": variable, "valueFrom": {"secretKeyRef": ref}}


def runtime_env(name: str) -> dict[str, Any]:
    """The engine's API key for the runtime, which sends it as `Authorization: Bearer`."""
    return _secret_env(RUNTIME_API_KEY_ENV, ENGINE_KEY_SECRET.name(name), ENGINE_KEY_SECRET.key)


def runtime_resources(spec: GPTDeploymentSpec) -> dict[str, Any]:
    """The runtime container's resources beside an engine (engine.runtimeResources)."""
    resources = spec.engine.runtime_resources

    def listed(values: ResourceList) -> dict[str, str]:
        return {key: value for key, value in values.wire().items() if value}

    out = {"requests": listed(resources.requests), "limits": listed(resources.limits)}
    return {part: values for part, values in out.items() if values}


def _env(name: str, spec: GPTDeploymentSpec) -> list[dict[str, Any]]:
    engine = spec.engine
    # HOME: caches (vLLM's torch.compile and Triton caches, Hugging Face) land in the writable /tmp; USER: torch
    # asks getpass for a user name, and uid 10001 has no passwd entry in the engine images.
    env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}, {"name": "USER", "value": "engine"}]
    env.append(_secret_env(API_KEY_ENV[engine.type], ENGINE_KEY_SECRET.name(name), ENGINE_KEY_SECRET.key))
    if engine.type == "vllm":
        env.append({"name": "VLLM_NO_USAGE_STATS", "value": "1"})
        if spec.model.source.startswith("hf:"):
            env.append({"name": "HF_HOME", "value": f"{MODEL_DIR}/hf"})  # the download lands in the volume
            user = {e.name: e.value for e in spec.env}
            if "HF_ENDPOINT" in user:  # a mirror, as for the runtime's own hf: downloads
                env.append({"name": "HF_ENDPOINT", "value": user["HF_ENDPOINT"]})
            if spec.secret_ref is not None:  # gated models: HF_TOKEN in the spec.secretRef Secret, if there
                env.append(_secret_env("HF_TOKEN", spec.secret_ref.name, "HF_TOKEN", optional=True))
    return env


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": CONTAINER_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def wait_for_port_closed(port: int) -> str:
    """A shell loop that waits while something in the pod listens on `port` (its network namespace is the
    pod's: /proc/net/tcp lists the runtime's sockets too)."""
    listening = f":{port:04X} [0-9A-F]*:0000 0A"
    return f"while grep -qE '{listening}' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do sleep 1; done"


def engine_container(
    name: str,
    spec: GPTDeploymentSpec,
    runtime_port: int,
    resources: dict[str, Any],
    security_context: dict[str, Any],
) -> dict[str, Any]:
    """The engine beside the runtime: `resources` (spec.resources, GPUs included), probes on its /health, the
    API key."""
    engine = spec.engine
    mounts: list[dict[str, Any]] = []
    pvc = _pvc(spec.model.source)
    if pvc is not None:
        mounts.append({"name": "model", "mountPath": f"{PVC_MODELS_DIR}/{pvc[0]}", "readOnly": True})
    else:
        mounts.append({"name": MODEL_VOLUME, "mountPath": MODEL_DIR})
    mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
    if engine.type == "vllm":
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    gpu = (spec.resources or ResourcesSpec()).gpu
    return {
        "name": CONTAINER_NAME,
        "image": engine.effective_image(gpu),
        "imagePullPolicy": spec.image_pull_policy,
        "args": engine_args(spec),
        "ports": [{"name": CONTAINER_NAME, "containerPort": engine.port, "protocol": "TCP"}],
        "env": _env(name, spec),
        "resources": resources,
        "startupProbe": _probe(STARTUP_PERIOD_S, STARTUP_FAILURES),
        "livenessProbe": _probe(10, 3),
        "readinessProbe": _probe(5, 3),
        # The runtime drains after SIGTERM (generations in flight finish, and they need the engine): the engine
        # is stopped only once the runtime no longer listens, within the pod's grace period.
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", wait_for_port_closed(runtime_port)]}}},
        "securityContext": security_context,
        "volumeMounts": mounts,
    }


def fetch_container(
    spec: GPTDeploymentSpec,
    env_from: list[dict[str, Any]],
    resources: dict[str, Any],
    security_context: dict[str, Any],
) -> dict[str, Any]:
    """The init container that copies the model into engine-model: the runtime's image, settings and Secrets
    (S3 credentials), and the user's mounts (an absolute source may lie on one of them); no GPU."""
    command = ["python", "-m", "gpt_model.fetch", "--engine", spec.engine.type]
    command += ["--source", spec.model.source, "--into", MODEL_DIR]
    mounts = [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    return {
        "name": FETCH_CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": command,
        "envFrom": env_from,
        "env": [e.wire() for e in spec.env],
        "resources": resources,
        "securityContext": security_context,
        "volumeMounts": mounts + [m.wire() for m in spec.volume_mounts],
    }


def engine_volumes(spec: GPTDeploymentSpec, cache_claim: str | None) -> list[dict[str, Any]]:
    """The engine's volumes (the `model` volume of a pvc: source is the runtime renderer's, as before)."""
    volumes: list[dict[str, Any]] = []
    if _pvc(spec.model.source) is None:
        if cache_claim is not None:
            volumes.append({"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": cache_claim}})
        else:
            volumes.append({"name": MODEL_VOLUME, "emptyDir": {}})
    volumes.append({"name": TMP_VOLUME, "emptyDir": {}})
    if spec.engine.type == "vllm":
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
    return volumes
