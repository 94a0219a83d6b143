#!/usr/bin/env bash
# Pinned Go-built developer tools, installed once into a cache; prints the binary's path.
#
#   hack/tools.sh actionlint     the GitHub Actions workflow linter
#   hack/tools.sh mailpit        an SMTP server with an HTTP API: the mail tests send through it
#   hack/tools.sh helm           Helm 3: `helm lint` of charts/gpt-operator and its tests (render, install)
#   hack/tools.sh promtool       Prometheus' rule checker: `check rules` and `test rules` on manifests/monitoring
#   hack/tools.sh prometheus     the Prometheus server (the API only: a plain `go install` has no web UI assets)
#   hack/tools.sh prometheus-adapter  the custom metrics API server that the HPA reads LLM signals from
#                                (the autoscaling e2e; rules in manifests/monitoring/prometheus-adapter)
#   hack/tools.sh llama-server   llama.cpp's OpenAI-compatible server (C++, cmake and g++), built from the
#                                llama.cpp that the pinned llama-cpp-python sdist on PyPI vendors (no GitHub here):
#                                the third-party engine the upstream-engine tests and benchmarks run against
#   hack/tools.sh docker-compose the Compose CLI plugin (github.com/docker/compose/v2), also linked into
#                                ${DOCKER_CONFIG:-~/.docker}/cli-plugins so `docker compose` works (compose.yaml)
#   hack/tools.sh argocd         Argo CD (github.com/argoproj/argo-cd/v3, one multi-call binary: the component is
#                                argv[0]'s basename), its CRDs in crds/ and git-verify-wrapper.sh next to it:
#                                tests/e2e/test_argocd.py
#
#   GPT_TOOLS_CACHE=DIR   cache root (default ${XDG_CACHE_HOME:-~/.cache}/gpt-operator/tools)
set -euo pipefail
declare -A module=([actionlint]=github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
                   [mailpit]=github.com/axllent/mailpit@v1.33.1
                   [promtool]=github.com/prometheus/prometheus/cmd/promtool@v0.316.0
                   [prometheus]=github.com/prometheus/prometheus/cmd/prometheus@v0.316.0
                   [helm]=helm.sh/helm/v3/cmd/helm@v3.22.0)
name=${1:?usage: $0 TOOL}
cache="${GPT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt-operator/tools}"
if [ "$name" = llama-server ]; then
  # llama-cpp-python 0.3.36 vendors llama.cpp (ggml 0.25.3); the sdist's sha256 is pinned
  version=0.3.36 sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
  bin="$cache/llama-server-$version"
  if [ ! -x "$bin/llama-server" ]; then
    echo "==> building llama-server from llama-cpp-python $version's llama.cpp (about 15 minutes on 2 cores)" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "llama-cpp-python==$version --hash=sha256:$sha" >"$work/req.txt"
    python3 -m pip download --quiet --no-deps --no-binary :all: --require-hashes -r "$work/req.txt" -d "$work" >&2
    tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
    src="$work/llama_cpp_python-$version/vendor/llama.cpp"
    # static llama/ggml libraries: one binary to copy into an image; no network at build (no web UI download, no curl)
    cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
      -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >&2
    cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
    mkdir -p "$bin"
    install -m 0755 "$work/build/bin/llama-server" "$bin/llama-server.tmp"
    mv "$bin/llama-server.tmp" "$bin/llama-server"
  fi
  echo "$bin/llama-server"
  exit 0
fi
if [ "$name" = docker-compose ]; then
  # Built inside the downloaded module as its Makefile does (./cmd, the version stamped in), since the main package
  # is github.com/docker/compose/v2/cmd: `go install` would name the binary `cmd`. About 4 minutes on 2 cores.
  version=v2.40.3
  bin="$cache/docker-compose-$version"
  if [ ! -x "$bin/docker-compose" ]; then
    echo "==> building docker-compose $version" >&2
    dir=$(cd "$(mktemp -d)" && go mod download -json "github.com/docker/compose/v2@$version" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    mkdir -p "$bin"
    (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-w -X github.com/docker/compose/v2/internal.Version=$version" \
      -o "$bin/docker-compose.tmp" ./cmd) >&2
    mv "$bin/docker-compose.tmp" "$bin/docker-compose"
  fi
  plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugins"
  ln -sfn "$bin/docker-compose" "$plugins/docker-compose"
  echo "$bin/docker-compose"
  exit 0
fi
if [ "$name" = argocd ]; then
  # Needs Go 1.27 (fetched by the go command from the proxy, for this build only) and the gitops-engine submodule,
  # which the module zip leaves out (its own module at the same version). The UI is not built: a placeholder
  # index.html satisfies the embed. About 18 minutes of CPU on 2 cores (300 MB binary).
  version=v3.6.1
  bin="$cache/argocd-$version"
  if [ ! -x "$bin/argocd" ] || [ ! -d "$bin/crds" ] || [ ! -x "$bin/git-verify-wrapper.sh" ]; then
    echo "==> building argocd $version" >&2
    export GOTOOLCHAIN=go1.27.3
    tmp=$(mktemp -d)
    dl() { (cd "$tmp" && go mod download -json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'); }
    src=$(dl "github.com/argoproj/argo-cd/v3@$version")
    engine=$(dl "github.com/argoproj/argo-cd/gitops-engine/v3@$version")
    work="$tmp/argo-cd"
    cp -r "$src" "$work" && chmod -R u+w "$work"
    cp -r "$engine" "$work/gitops-engine" && chmod -R u+w "$work/gitops-engine"
    mkdir -p "$work/ui/dist/app/assets/images/resources"
    echo '<html>argocd</html>' >"$work/ui/dist/app/index.html"
    touch "$work/ui/dist/app/assets/images/resources/.keep"
    mkdir -p "$bin"
    (cd "$work" && GOFLAGS=-mod=mod go mod download && GOFLAGS=-mod=mod go build -o "$bin/argocd.tmp" ./cmd) >&2
    rm -rf "$bin/crds" && cp -r "$work/manifests/crds" "$bin/crds"
    # the repo-server runs it (on PATH) for every git revision, signature verification on or off
    install -m 0755 "$work/hack/git-verify-wrapper.sh" "$bin/git-verify-wrapper.sh"
    mv "$bin/argocd.tmp" "$bin/argocd"
    rm -rf "$tmp"
  fi
  echo "$bin/argocd"
  exit 0
fi
if [ "$name" = prometheus-adapter ]; then
  # The proxy serves this exact version but lists none, and `go install pkg@version` asks for the list (refused):
  # build inside the downloaded module instead, with its own go.mod and go.sum.
  version=v0.12.0
  bin="$cache/prometheus-adapter-$version"
  if [ ! -x "$bin/prometheus-adapter" ]; then
    echo "==> building prometheus-adapter $version" >&2
    dir=$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/prometheus-adapter@$version" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    mkdir -p "$bin"
    (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$bin/prometheus-adapter.tmp" ./cmd/adapter) >&2
    mv "$bin/prometheus-adapter.tmp" "$bin/prometheus-adapter"
  fi
  echo "$bin/prometheus-adapter"
  exit 0
fi
[ -n "${module[$name]:-}" ] || { echo "tools.sh: unknown tool $name (known: ${!module[*]} llama-server prometheus-adapter docker-compose argocd)" >&2; exit 2; }
version=${module[$name]##*@}
bin="$cache/$name-$version"
if [ ! -x "$bin/$name" ]; then
  echo "==> building $name $version" >&2
  mkdir -p "$bin"
  GOBIN="$bin" CGO_ENABLED=0 go install -trimpath "${module[$name]}" >&2
fi
echo "$bin/$name"
