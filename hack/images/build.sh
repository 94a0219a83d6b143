#!/usr/bin/env bash
# Build both images from the Dockerfiles users build, with the tags the manifests name, so
# manifests/base and the samples run them unchanged (imagePullPolicy IfNotPresent: nothing is pulled).
#
#   hack/images/build.sh [operator] [runtime] [moto] [llama-server] [redis] [prometheus]
#                          build (default: operator and runtime; moto is the e2e suite's AWS emulator,
#                          llama-server its llama.cpp engine, from hack/tools.sh's build; redis and prometheus
#                          are compose.yaml's, prometheus from hack/tools.sh's build);
#                          the references go to stdout
#
#   GPT_IMAGE_BASE=IMAGE   the BASE_IMAGE build arg (default: hack/images/base.sh's Debian-made Python,
#                          because no registry can be reached here; on a normal host, python:3.11-slim)
#   GPT_TORCH_VARIANT=cpu  the runtime's TORCH_VARIANT (default: the Dockerfile's, PyPI's torch, which also
#                          runs on CPU; `cpu` needs PyTorch's own index)
#
# Docker's layer cache makes a rebuild with unchanged inputs take seconds: the layers are keyed by the base
# image, the build args and the files each step copies. Progress and timings go to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
OPERATOR_IMAGE=ghcr.io/gpt-operator/gpt-operator:0.1.0  # manifests/base/kustomization.yaml
RUNTIME_IMAGE=ghcr.io/gpt-operator/gpt-runtime:0.1.0    # gpt_operator.spec.DEFAULT_IMAGE
MOTO_IMAGE=gpt-operator.local/moto:e2e                   # tests/e2e (a shared DynamoDB for runtime pods)
LLAMA_SERVER_IMAGE=gpt-operator.local/llama-server:e2e   # tests/e2e (spec.engine.type: llamacpp)
REDIS_IMAGE=gpt-operator.local/redis:7                   # compose.yaml (Debian bookworm's redis-server 7.0)
PROMETHEUS_IMAGE=gpt-operator.local/prometheus:v0.316.0  # compose.yaml's monitoring profile (hack/tools.sh's version)

bash hack/images/dockerd.sh start
base="${GPT_IMAGE_BASE:-$(bash hack/images/base.sh)}"
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(operator runtime)

build() {  # build NAME DOCKERFILE TAG [BUILD-ARG...]
  local name=$1 file=$2 tag=$3 start
  shift 3
  start=$(date +%s)
  echo "==> image $tag ($file, base $base)" >&2
  local args=(--network host --build-arg "BASE_IMAGE=$base")
  for arg in "$@"; do args+=(--build-arg "$arg"); done
# images the new tags replaced (each runtime build that changes the dependencies leaves a 6 GB one)
docker image prune -f >/dev/null
  local log
  log=$(mktemp)
  # shellcheck disable=SC2086  # FILE may carry --target
  if ! docker build "${args[@]}" -f $file -t "$tag" "${CONTEXT:-.}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "build.sh: building $name failed" >&2
    exit 1
  fi
  rm -f "$log"
  echo "==> $tag built in $(( $(date +%s) - start ))s: $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')" >&2
  echo "$tag"
}

for name in "${wanted[@]}"; do
  case "$name" in
    operator) build operator Dockerfile.operator "$OPERATOR_IMAGE" ;;
    runtime)
      bash hack/web.sh >&2  # the web page's build goes into the image with runtime/ (webui/dist)
      extra=()
      [ -z "${GPT_TORCH_VARIANT:-}" ] || extra+=("TORCH_VARIANT=$GPT_TORCH_VARIANT")
      # the build stage keeps a tag: untagged, `docker image prune` would take torch's layer with it
      build runtime-deps "Dockerfile.runtime --target build" gpt-operator.local/gpt-runtime-build:cache "${extra[@]}" >/dev/null
      build runtime Dockerfile.runtime "$RUNTIME_IMAGE" "${extra[@]}" ;;
    moto) build moto hack/images/moto.Dockerfile "$MOTO_IMAGE" ;;
    llama-server)
      # the context is only the binary hack/tools.sh built (the repository is not needed)
      context=$(mktemp -d)
      cp "$(bash hack/tools.sh llama-server)" "$context/llama-server"
      CONTEXT="$context" build llama-server "$PWD/hack/images/llama-server.Dockerfile" "$LLAMA_SERVER_IMAGE"
      rm -rf "$context" ;;
    redis) build redis hack/images/redis.Dockerfile "$REDIS_IMAGE" ;;
    prometheus)
      context=$(mktemp -d)
      cp "$(bash hack/tools.sh prometheus)" "$context/prometheus"
      CONTEXT="$context" build prometheus "$PWD/hack/images/prometheus.Dockerfile" "$PROMETHEUS_IMAGE"
      rm -rf "$context" ;;
    *) echo "build.sh: unknown image $name (operator, runtime, moto, llama-server, redis, prometheus)" >&2; exit 2 ;;
  esac
done
# images the new tags replaced (each runtime build that changes the dependencies leaves a 6 GB one)
docker image prune -f >/dev/null
