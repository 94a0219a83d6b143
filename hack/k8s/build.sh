#!/usr/bin/env bash
# Build pinned Kubernetes binaries from Go modules into a cache that later runs reuse; print the directory.
#
#   hack/k8s/build.sh [NAME...]   build the named binaries that are missing (default: the local control
#                                 plane: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
#                                 kwok; `kind` on request); the bin dir goes to stdout, progress to stderr
#   GPT_K8S_WITH_NODE=1           add the real node's kubelet, kube-proxy and pause (hack/k8s/node.sh)
#   GPT_K8S_WITH_KIND=1           add kind to the default set
#   GPT_K8S_BIN_DIR=DIR           use (and build into) DIR instead of the cache
#   GPT_K8S_CACHE=DIR             cache root (default ${XDG_CACHE_HOME:-~/.cache}/gpt-operator/k8s-bin)
#   GPT_K8S_REBUILD=1             build even what the cache has
#
# Versions are pinned in hack/k8s/tools/go.mod + go.sum: k8s.io/kubernetes (with its staging modules
# replaced by the published v0.x of the same release), etcd's server module, kwok and kind. The cache
# directory is named after the Kubernetes version and a hash of go.mod, go.sum, the module's own sources
# (pause), the Go toolchain and the link flags, so a version bump builds afresh and an unchanged checkout reuses the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="$here/tools"

declare -A package=(
  [etcd]=go.etcd.io/etcd/server/v3
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [pause]=gpt-operator.dev/hack/k8s/tools/pause
  [kwok]=sigs.k8s.io/kwok/cmd/kwok
  [kind]=sigs.k8s.io/kind
)
if [ $# -gt 0 ]; then
  wanted=("$@")
else
  wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
  [ -n "${GPT_K8S_WITH_NODE:-}" ] && wanted+=(kubelet kube-proxy pause)
  [ -n "${GPT_K8S_WITH_KIND:-}" ] && wanted+=(kind)
fi
for name in "${wanted[@]}"; do
  [ -n "${package[$name]:-}" ] || { echo "build.sh: unknown binary $name (known: ${!package[*]})" >&2; exit 2; }
done

version() { awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$tools/go.mod"; }
k8s_version=$(version k8s.io/kubernetes)
[ -n "$k8s_version" ] || { echo "build.sh: no k8s.io/kubernetes version in $tools/go.mod" >&2; exit 1; }
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
# Version stamps, as the Kubernetes release build sets them (kubectl version, /version, skew checks).
stamp="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

if [ -z "${GPT_K8S_BIN_DIR:-}" ]; then
  key=$( { cat "$tools/go.mod" "$tools/go.sum"; find "$tools" -name '*.go' | sort | xargs cat; go env GOVERSION GOOS GOARCH; echo "$stamp"; } | sha256sum | cut -c1-12)
  GPT_K8S_BIN_DIR="${GPT_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt-operator/k8s-bin}/$k8s_version-$key"
fi
bin="$GPT_K8S_BIN_DIR"

missing=()
for name in "${wanted[@]}"; do
  if [ -n "${GPT_K8S_REBUILD:-}" ] || [ ! -x "$bin/$name" ]; then missing+=("$name"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$bin"
  exit 0
fi

echo "==> building ${missing[*]} (Kubernetes $k8s_version) into $bin" >&2
start=$(date +%s)
mkdir -p "$bin"
stage=$(mktemp -d "$bin.tmp.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cd "$tools"
export CGO_ENABLED=0
k8s=()
for name in "${missing[@]}"; do
  case "${package[$name]}" in
    k8s.io/kubernetes/*) k8s+=("${package[$name]}") ;;
    *) go build -trimpath -ldflags "-s -w" -o "$stage/$name" "${package[$name]}" ;;
  esac
done
# one `go build` for the Kubernetes commands, so their shared packages compile once, in parallel
[ ${#k8s[@]} -eq 0 ] || go build -trimpath -ldflags "$stamp" -o "$stage/" "${k8s[@]}"
for name in "${missing[@]}"; do
  mv -f "$stage/$name" "$bin/$name"
done
echo "==> built in $(( $(date +%s) - start ))s: ${missing[*]}" >&2
echo "$bin"
