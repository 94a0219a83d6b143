#!/usr/bin/env bash
# End-to-end on kind, for hosts with Docker (CI: .github/workflows/e2e.yml). The same images and the same tests
# as hack/test.sh's local cluster:
#
#   1. builds the pinned kind, kubectl and kwok (hack/k8s/build.sh, cached) and creates a kind cluster whose API
#      server keeps an audit log (hack/k8s/audit-policy.yaml) where the tests can read it; pods and Services
#      get addresses from 198.18.0.0/15, as on the local cluster;
#   2. runs kwok against it with the fake GPU fleet of hack/k8s/fleet.yaml (kind has no GPUs and no spot nodes)
#      and labels kind's node as the one that runs containers (gpt-operator.dev/e2e-node=real);
#   3. builds the images with hack/images/build.sh (base python:3.11-slim, CPU torch; llama-server from
#      hack/tools.sh, which needs cmake and g++) and loads them into kind;
#   4. runs tests/e2e, which deploy the operator from manifests/base (tests/e2e/operator/).
#
#   KIND_CLUSTER_NAME   cluster name (default gpt-operator-e2e)
#   KEEP_CLUSTER=1      leave the cluster (and kwok) running afterwards
#   Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cluster="${KIND_CLUSTER_NAME:-gpt-operator-e2e}"
work="${TMPDIR:-/tmp}/gpt-operator-kind-e2e"
mkdir -p "$work/audit"
export KUBECONFIG="$work/kubeconfig"
export GPT_E2E_ARTIFACTS="${GPT_E2E_ARTIFACTS:-$work/artifacts}"
export GPT_E2E_AUDIT_LOG="$work/audit/audit.log"
mkdir -p "$GPT_E2E_ARTIFACTS"

command -v docker >/dev/null || { echo "kind-e2e.sh: needs Docker (use hack/test.sh without it)" >&2; exit 1; }
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
cat >"$work/kind.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: 198.18.0.0/17
  serviceSubnet: 198.19.0.0/16
nodes:
  - role: control-plane
    extraMounts:
      - {hostPath: $root/hack/k8s/audit-policy.yaml, containerPath: /etc/kubernetes/audit-policy.yaml, readOnly: true}
      - {hostPath: $work/audit, containerPath: /var/log/kubernetes/audit}
    kubeadmConfigPatches:
      - |
        kind: ClusterConfiguration
        apiServer:
          extraArgs:
            audit-policy-file: /etc/kubernetes/audit-policy.yaml
            audit-log-path: /var/log/kubernetes/audit/audit.log
            audit-log-format: json
          extraVolumes:
            - {name: audit-policy, hostPath: /etc/kubernetes/audit-policy.yaml, mountPath: /etc/kubernetes/audit-policy.yaml, readOnly: true, pathType: File}
            - {name: audit-log, hostPath: /var/log/kubernetes/audit, mountPath: /var/log/kubernetes/audit, pathType: DirectoryOrCreate}
EOF
kind create cluster --name "$cluster" --config "$work/kind.yaml" --kubeconfig "$KUBECONFIG" --wait 180s
real_node="$cluster-control-plane"
kubectl label node "$real_node" gpt-operator.dev/e2e-node=real --overwrite
# kind's control-plane taint would keep the operator and the runtime pods off its only node
kubectl taint node "$real_node" node-role.kubernetes.io/control-plane:NoSchedule- 2>/dev/null || true
# the API server writes its audit log as root, 0600: let the tests read it
docker exec "$real_node" sh -c 'chmod 755 /var/log/kubernetes/audit && chmod 644 /var/log/kubernetes/audit/audit.log'

echo "==> kwok and the fake GPU fleet"
"$bin/kwok" --kubeconfig="$KUBECONFIG" --config="$root/hack/k8s/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=198.18.128.0/17 --node-ip=127.0.0.1 >"$GPT_E2E_ARTIFACTS/kwok.log" 2>&1 &
kwok_pid=$!
kubectl apply -f hack/k8s/fleet.yaml
kubectl wait --for=condition=Ready node -l type=kwok --timeout=120s

echo "==> images"
images=$(GPT_IMAGE_BASE="${GPT_IMAGE_BASE:-python:3.11-slim}" GPT_TORCH_VARIANT="${GPT_TORCH_VARIANT:-cpu}" \
  bash hack/images/build.sh operator runtime moto llama-server)
for image in $images; do
  kind load docker-image "$image" --name "$cluster"
done

echo "==> tests/e2e (the operator is deployed from manifests/base by the suite)"
"$root/.venv/bin/python" -m pytest tests/e2e -m e2e -p no:cacheprovider "$@"
