#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite: lint, unit, integration (real Redis, moto,
# kmock, uvicorn) and e2e (a local Kubernetes control plane built from Go modules, cached after the first
# run; or whatever cluster KUBECONFIG already names). Extra arguments go to pytest, e.g.
# `hack/test.sh -m "not slow"`; GPT_SKIP_E2E=1 skips starting the local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh operator,runtime,dev
if ! command -v redis-server >/dev/null; then
  echo "==> installing redis-server (Debian)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
fi
echo "==> ruff"
.venv/bin/ruff check .

if [ -z "${KUBECONFIG:-}" ] && [ "${GPT_SKIP_E2E:-0}" != 1 ]; then
  echo "==> local Kubernetes control plane for the e2e tests (first build: several minutes)"
  export GPT_K8S_CLUSTER_DIR="${GPT_K8S_CLUSTER_DIR:-$(mktemp -d -t gpt-operator-k8s.XXXXXX)}"
  trap 'bash hack/k8s/cluster.sh down >/dev/null 2>&1 || true' EXIT
  bash hack/k8s/cluster.sh up
  eval "$(bash hack/k8s/cluster.sh env)"
fi
echo "==> pytest"
status=0
.venv/bin/pytest "$@" || status=$?
exit "$status"
