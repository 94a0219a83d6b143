#!/usr/bin/env bash
# End-to-end on kind, for hosts with Docker (CI: .github/workflows/e2e.yml).
#
#   1. builds the pinned kind, kubectl and kwok (hack/k8s/build.sh, cached) and creates a kind cluster;
#   2. runs kwok against it with the fake GPU fleet of hack/k8s/fleet.yaml (kind has no GPUs and no spot
#      nodes; the real kind node still runs real containers);
#   3. builds both images (operator; runtime with CPU torch) and loads them into kind;
#   4. deploys the operator from manifests/base with the freshly built image;
#   5. runs tests/e2e against it (GPT_E2E_OPERATOR=external), including test_real_runtime.py, which runs
#      the runtime image on the real kind node behind the operator's probes.
#
#   KIND_CLUSTER_NAME   cluster name (default gpt-operator-e2e)
#   KEEP_CLUSTER=1      leave the cluster (and kwok) running afterwards
#   SKIP_RUNTIME_IMAGE=1  do not build the (large) runtime image; test_real_runtime.py is then skipped
#   Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cluster="${KIND_CLUSTER_NAME:-gpt-operator-e2e}"
work="${TMPDIR:-/tmp}/gpt-operator-kind-e2e"
mkdir -p "$work"
export KUBECONFIG="$work/kubeconfig"
export GPT_E2E_ARTIFACTS="${GPT_E2E_ARTIFACTS:-$work/artifacts}"
mkdir -p "$GPT_E2E_ARTIFACTS"

command -v docker >/dev/null || { echo "kind-e2e.sh: needs Docker (use hack/k8s/cluster.sh without it)" >&2; exit 1; }
bin=$(bash hack/k8s/build.sh kind kubectl kwok)
export PATH="$bin:$PATH"
export KUBECTL="$bin/kubectl"

kwok_pid=""
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "==> failed ($rc); operator logs and objects in $GPT_E2E_ARTIFACTS" >&2
    kubectl -n gpt-operator-system logs deployment/gpt-operator --tail=-1 >"$GPT_E2E_ARTIFACTS/operator.log" 2>&1 || true
    kubectl get gptd,deploy,svc,pods,events -A -o wide >"$GPT_E2E_ARTIFACTS/objects.txt" 2>&1 || true
  fi
  if [ -z "${KEEP_CLUSTER:-}" ]; then
    [ -n "$kwok_pid" ] && kill "$kwok_pid" 2>/dev/null || true
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  else
    echo "==> kept: kind cluster $cluster, kwok pid ${kwok_pid:-none}; KUBECONFIG=$KUBECONFIG" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

echo "==> kind cluster $cluster"
kind get clusters 2>/dev/null | grep -qx "$cluster" && kind delete cluster --name "$cluster"
kind create cluster --name "$cluster" --kubeconfig "$KUBECONFIG" --wait 180s
real_node="$cluster-control-plane"

echo "==> kwok and the fake GPU fleet"
"$bin/kwok" --kubeconfig="$KUBECONFIG" --config="$root/hack/k8s/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.245.0.0/16 --node-ip=127.0.0.1 >"$GPT_E2E_ARTIFACTS/kwok.log" 2>&1 &
kwok_pid=$!
kubectl apply -f hack/k8s/fleet.yaml
kubectl wait --for=condition=Ready node -l type=kwok --timeout=120s

echo "==> images"
docker build -f Dockerfile.operator -t gpt-operator:e2e .
kind load docker-image gpt-operator:e2e --name "$cluster"
if [ -z "${SKIP_RUNTIME_IMAGE:-}" ]; then
  docker build -f Dockerfile.runtime --build-arg TORCH_VARIANT=cpu -t gpt-runtime:e2e .
  kind load docker-image gpt-runtime:e2e --name "$cluster"
  export GPT_E2E_RUNTIME_IMAGE=gpt-runtime:e2e GPT_E2E_REAL_NODE="$real_node"
fi

echo "==> the operator from manifests/base"
kubectl kustomize manifests/base \
  | sed 's#image: ghcr.io/gpt-operator/gpt-operator:.*#image: gpt-operator:e2e#' \
  | kubectl apply --server-side -f -
kubectl -n gpt-operator-system rollout status deployment/gpt-operator --timeout=180s

echo "==> tests/e2e"
export GPT_E2E_OPERATOR=external
"$root/.venv/bin/python" -m pytest tests/e2e -m e2e -p no:cacheprovider "$@"
