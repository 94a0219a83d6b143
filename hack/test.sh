#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite: lint, unit, integration (real Redis, moto,
# kmock, uvicorn) and e2e: both images built here from the Dockerfiles (hack/images/build.sh), a local
# Kubernetes control plane built from Go modules with a real node that runs them (hack/k8s/cluster.sh up
# --node; binaries and image layers cached after the first run), or whatever cluster KUBECONFIG already names.
# Extra arguments go to pytest, e.g. `hack/test.sh -m "not slow"`; GPT_SKIP_E2E=1 skips the images and the
# cluster (and so the e2e tests: for a quick run, never for CI). Stage timings are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
stages=()
stage_start=$(date +%s)
stage() {  # stage NAME: close the running stage's timer, open the next
  local now
  now=$(date +%s)
  [ -z "${stage_name:-}" ] || stages+=("$(printf '%-28s %5ss' "$stage_name" $(( now - stage_start )))")
  stage_name=$1 stage_start=$now
}
report() {
  stage ""
  echo "==> stage timings"
  printf '    %s\n' "${stages[@]}"
}

stage "python environment"
bash hack/setup.sh operator,runtime,dev
e2e_local=0
if [ -z "${KUBECONFIG:-}" ] && [ "${GPT_SKIP_E2E:-0}" != 1 ]; then e2e_local=1; fi
# Debian packages, by the command each brings (a host that has the command from elsewhere keeps it): Redis for
# the integration tests, cmake and g++ to build llama.cpp's server (the upstream-engine tests); for the local e2e cluster, a Docker engine to build the images, debootstrap for their
# base, and containerd, runc, the CNI plugins and nftables for the real node.
# espeak-ng speaks /synthesize; chromium is the real browser of the web page's test, npm builds that page.
declare -A need=([redis-server]=redis-server [cmake]=cmake [g++]=g++ [espeak-ng]=espeak-ng [chromium]=chromium
                 [npm]=npm)
if [ "$e2e_local" = 1 ]; then
  need+=([dockerd]=docker.io [containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
         [nft]=nftables [iptables]=iptables)
  [ -n "${GPT_IMAGE_BASE:-}" ] || need+=([debootstrap]=debootstrap)
fi
missing=()
for cmd in "${!need[@]}"; do
  [ -x "$cmd" ] || command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  stage "debian packages"
  echo "==> installing ${missing[*]} (Debian)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The e2e cluster is prepared in the background while lint and the unit and integration tests run: the Go build
# is cached after the first run, and the image builds and the node's image loading mostly wait on the disk, so
# overlapping them with the CPU-bound tests saves ~9 minutes of CI. Its log goes to the CI log if it fails.
if [ "$e2e_local" = 1 ]; then
  echo "==> local Kubernetes with a real node for the e2e tests, in the background (first build: about 10 minutes)"
  # The node's containerd holds the images unpacked (~15 GB) beside Docker's copies. On a nearly full disk the kubelet
  # reclaims space by deleting unused images, the pause image among them (Debian's containerd 1.6 does not pin it),
  # and every pod then hangs in ContainerCreating: refuse to start rather than fail that way 20 minutes later.
  need_gb=${GPT_E2E_MIN_FREE_GB:-25}
  free_gb=$(( $(df --output=avail -k "${TMPDIR:-/tmp}" | tail -n 1) / 1024 / 1024 ))
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "==> only ${free_gb} GB free under ${TMPDIR:-/tmp}; the e2e cluster needs ${need_gb} GB (GPT_E2E_MIN_FREE_GB)" >&2
    exit 1
  fi
  export GPT_K8S_CLUSTER_DIR="${GPT_K8S_CLUSTER_DIR:-$(mktemp -d -t gpt-operator-k8s.XXXXXX)}"
  prepare_log="$GPT_K8S_CLUSTER_DIR.prepare.log"
  trap '[ -z "${prepare:-}" ] || kill "$prepare" 2>/dev/null; bash hack/k8s/cluster.sh down >/dev/null 2>&1 || true; bash hack/images/dockerd.sh stop || true; report' EXIT
  (
    set -euo pipefail
    start=$(date +%s)
    # The Go build is CPU-bound and the image builds mostly wait on the network and the disk: run them together.
    GPT_K8S_WITH_NODE=1 bash hack/k8s/build.sh &
    go_build=$!
    images=$(bash hack/images/build.sh operator runtime moto llama-server | tr '\n' ' ')
    wait "$go_build"
    # prometheus-adapter for tests/e2e/test_autoscaling.py (first build ~5 min, then cached)
    bash hack/tools.sh prometheus-adapter >/dev/null
    # tests/e2e/test_compose.py: the Compose CLI plugin (first build ~7 min of CPU, then cached) and the Redis and
    # Prometheus images compose.yaml names (not imported into the node)
    bash hack/tools.sh docker-compose >/dev/null
    bash hack/images/build.sh redis prometheus >/dev/null
    # tests/e2e/test_argocd.py: Argo CD (first build ~18 min of CPU with Go 1.27 from the proxy, then cached)
    bash hack/tools.sh argocd >/dev/null
    echo "==> go binaries + images: $(( $(date +%s) - start ))s"
    GPT_K8S_NODE_IMAGES="$images" bash hack/k8s/cluster.sh up --node >/dev/null
    echo "==> cluster up with its node: $(( $(date +%s) - start ))s in all"
  ) >"$prepare_log" 2>&1 &
  prepare=$!
else
  trap report EXIT
fi
stage "lint"
.venv/bin/ruff check .
# the type check (the packages and settings of [tool.mypy] in pyproject.toml): ~2.5 min of one core from a fresh
# clone, so it runs beside the Locust run and the tests; its result is read after them (mypy_result)
mypy_log=$(mktemp -t gpt-mypy.XXXXXX)
.venv/bin/mypy >"$mypy_log" 2>&1 &
mypy=$!
mypy_result() {  # wait for the type check, print what it said; non-zero if it failed
  local rc=0
  wait "$mypy" || rc=$?
  echo "==> mypy"; cat "$mypy_log"
  return "$rc"
}
actionlint=$(bash hack/tools.sh actionlint)
"$actionlint" .github/workflows/*.yml
# the alerting rules: promtool's check and the rules' unit tests (manifests/monitoring/tests; ~5 s once built)
GPT_PROMTOOL=$(bash hack/tools.sh promtool)
export GPT_PROMTOOL
"$GPT_PROMTOOL" check rules manifests/monitoring/rules.yaml
"$GPT_PROMTOOL" test rules manifests/monitoring/tests/*.yaml
# the Grafana dashboards: as hack/dashboards.py writes them, linted, every query through promtool's parser too (<1 s)
.venv/bin/python hack/dashboards.py --check; .venv/bin/python hack/lint_dashboards.py --promtool "$GPT_PROMTOOL"
# the Helm chart (charts/gpt-operator): helm lint, default and namespaced values (<1 s; helm built once, ~5 min of
# CPU, then cached); its render against manifests/base is tests/integration/operator/test_helm_chart.py
GPT_HELM=$(bash hack/tools.sh helm)
export GPT_HELM
"$GPT_HELM" lint --strict charts/gpt-operator
"$GPT_HELM" lint --strict charts/gpt-operator --set "watchNamespaces={ml,ml-staging}" \
  --set metrics.podMonitor.enabled=true
# the mail tests send through a real Mailpit (SMTP with STARTTLS and auth, read back over its HTTP API)
GPT_MAILPIT=$(bash hack/tools.sh mailpit)
export GPT_MAILPIT
# the Prometheus that tests/integration/runtime/test_prometheus_under_load.py runs (built once, then cached)
GPT_PROMETHEUS=$(bash hack/tools.sh prometheus)
export GPT_PROMETHEUS
# a short Locust run (hack/locustfile.py: every API route of a user's journey) against a runtime on the test suite's
# instant fake model; fails if any request failed (30 s of load plus the runtime's start; the README's benchmark is longer)
stage "load test (locust)"
GPT_MODEL_SOURCE='fake:echo?delay_ms=10' bash hack/load_test.sh 4 30
# llama.cpp's server, the real third-party engine behind an openai+http:// source (first build ~15 min, then cached)
stage "llama-server"
GPT_LLAMA_SERVER=$(bash hack/tools.sh llama-server)
export GPT_LLAMA_SERVER

export GPT_FAIL_ON_SKIP=1  # tests/conftest.py: in CI a skipped test fails the run
status=0
if [ "$e2e_local" = 1 ] && [ $# -eq 0 ]; then
  stage "pytest (unit, integration)"
  # the slowest tests with their seconds, for the log
  .venv/bin/pytest --durations=40 -m "not e2e" || status=$?
  mypy_result || status=$?
  stage "cluster ready (waited)"
  wait "$prepare" || { echo "==> preparing the e2e cluster failed:" >&2; tail -n 60 "$prepare_log" >&2; exit 1; }
  prepare=""
  cat "$prepare_log"
  eval "$(bash hack/k8s/cluster.sh env)"
  stage "pytest (e2e)"
  .venv/bin/pytest --durations=40 -m e2e || status=$?
else
  if [ "$e2e_local" = 1 ]; then  # arguments given: one pytest run, on the cluster once it is up
    stage "cluster ready (waited)"
    wait "$prepare" || { echo "==> preparing the e2e cluster failed:" >&2; tail -n 60 "$prepare_log" >&2; exit 1; }
    prepare=""
    eval "$(bash hack/k8s/cluster.sh env)"
  elif [ "${GPT_SKIP_E2E:-0}" = 1 ]; then
    export GPT_FAIL_ON_SKIP=0  # the e2e tests are skipped on purpose (a quick run, never CI)
  fi
  stage "pytest"
  .venv/bin/pytest --durations=60 "$@" || status=$?
  mypy_result || status=$?
fi
exit "$status"
