#!/usr/bin/env bash
# A local Kubernetes control plane as plain processes, for the end-to-end tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (built by hack/k8s/build.sh) and kwok, which plays the kubelet for
# a fake GPU fleet (hack/k8s/fleet.yaml); with --node, also one real node that runs containers
# (hack/k8s/node.sh: containerd, kubelet, kube-proxy; needs root). Without --node: no Docker, no root, no
# network beyond 127.0.0.1. Pod and Service addresses come from 198.18.0.0/15 (see node.sh).
#
#   hack/k8s/cluster.sh up [--node]
#                                build if needed, start, wait until ready, create the fleet (and the node);
#                                prints the export lines to use it (KUBECONFIG, PATH, GPT_E2E_AUDIT_LOG)
#   hack/k8s/cluster.sh down     stop the processes started by `up` and delete the state directory
#   hack/k8s/cluster.sh status   what runs, and the nodes
#   hack/k8s/cluster.sh env      the export lines (KUBECONFIG, PATH with kubectl)
#
#   GPT_K8S_CLUSTER_DIR=DIR      state: certificates, kubeconfig, etcd data, logs, pids
#                                (default ${TMPDIR:-/tmp}/gpt-operator-k8s)
#   GPT_K8S_BIN_DIR=DIR          binaries (default: the cache of hack/k8s/build.sh)
#   GPT_K8S_READY_TIMEOUT=SEC    how long `up` waits for each component (default 120)
#   GPT_K8S_NODE=1               same as --node
#   GPT_K8S_NODE_IMAGES="A B"    with the node: Docker images to load into it (node.sh load)
#   GPT_K8S_AUDIT=0              no audit log (default: every write, as metadata, in $dir/audit.log;
#                                policy in hack/k8s/audit-policy.yaml)
set -Eeuo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${GPT_K8S_CLUSTER_DIR:-${TMPDIR:-/tmp}/gpt-operator-k8s}"
timeout="${GPT_K8S_READY_TIMEOUT:-120}"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
node_components=(containerd kubelet kube-proxy)
SERVICE_CIDR=198.19.0.0/16
KWOK_POD_CIDR=198.18.128.0/17
NODE_IP=198.18.0.1  # node.sh's address for the node (and the API server, so pods reach it)

me=cluster.sh
# shellcheck source=hack/k8s/lib.sh
source "$here/lib.sh"

ours() {  # is $dir absent, empty, or a state directory written by `up`? (never rm -rf anything else)
  [ ! -e "$dir" ] || [ -z "$(ls -A "$dir")" ] || [ -f "$dir/bin-dir" ]
}

bin_dir() {
  if [ -n "${GPT_K8S_BIN_DIR:-}" ] && [ -x "$GPT_K8S_BIN_DIR/kube-apiserver" ] \
     && { [ "$with_node" = 0 ] || [ -x "$GPT_K8S_BIN_DIR/kubelet" ]; }; then
    echo "$GPT_K8S_BIN_DIR"
  else
    GPT_K8S_WITH_NODE=$([ "$with_node" = 1 ] && echo 1) bash "$here/build.sh"
  fi
}


running() {  # is the component's recorded process alive?
  local pid
  [ -f "$dir/pids/$1" ] || return 1
  pid=$(cat "$dir/pids/$1")
  kill -0 "$pid" 2>/dev/null
}



https_ok() {  # https_ok URL: the endpoint answers 200 "ok" with our client certificate
  curl -fsS --max-time 3 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" "$1"
}

certificates() {
  local p="$dir/pki"
  mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=gpt-operator-e2e-ca" 2>/dev/null
    cat >apiserver.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:198.19.0.1,IP:198.18.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    cat >client.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    issue() {  # issue NAME SUBJECT EXTFILE
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
        -extfile "$3" 2>/dev/null
    }
    issue apiserver "/CN=kube-apiserver" apiserver.ext
    issue admin "/O=system:masters/CN=gpt-operator-e2e-admin" client.ext
    # the aggregation layer (APIService: prometheus-adapter's custom metrics API in the autoscaling e2e): the API
    # server proxies as front-proxy-client, whose certificate comes from a CA of its own
    openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 \
      -subj "/CN=gpt-operator-e2e-front-proxy-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
      -subj "/CN=front-proxy-client" 2>/dev/null
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
      -out front-proxy-client.crt -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  )
}

kubeconfig() {  # kubeconfig IP PORT: an admin kubeconfig (certificate files by path: every client reads those)
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: gpt-operator-e2e
    cluster:
      server: https://$1:$2
      certificate-authority: $dir/pki/ca.crt
users:
  - name: admin
    user:
      client-certificate: $dir/pki/admin.crt
      client-key: $dir/pki/admin.key
contexts:
  - name: gpt-operator-e2e
    context: {cluster: gpt-operator-e2e, user: admin}
current-context: gpt-operator-e2e
EOF
  chmod 600 "$dir/kubeconfig"
}

up() {
  for c in "${components[@]}"; do
    running "$c" && die "already up (state in $dir); run: $0 down"
  done
  [ "$with_node" = 0 ] || [ "$(id -u)" = 0 ] || die "--node needs root (containerd, kubelet, pod networking)"
  command -v openssl >/dev/null || die "openssl is needed to generate the certificates"
  command -v curl >/dev/null || die "curl is needed to probe readiness"
  ours || die "$dir exists and was not made by $0; set GPT_K8S_CLUSTER_DIR to a new or empty directory"
  local bin
  bin=$(bin_dir)
  rm -rf "$dir"
  mkdir -p "$dir/logs" "$dir/pids"
  mkdir -m 700 "$dir/etcd"
  trap 'echo "cluster.sh: up failed; processes stopped, logs kept in $dir/logs (\`$0 down\` removes them)" >&2; stop_all' ERR
  echo "$bin" >"$dir/bin-dir"
  read -r etcd_port peer_port api_port kcm_port sched_port <<<"$(free_ports 5)"
  local kc="$dir/kubeconfig" p="$dir/pki" api_ip=127.0.0.1 node_flags=() audit_flags=()
  if [ "$with_node" = 1 ]; then
    # pods reach the API server through the `kubernetes` Service, so it listens on the node's address
    bash "$here/node.sh" net-up
    api_ip=$NODE_IP
    node_flags=(--endpoint-reconciler-type=lease
      --kubelet-client-certificate="$p/admin.crt" --kubelet-client-key="$p/admin.key"
      --kubelet-preferred-address-types=InternalIP)
  else
    node_flags=(--endpoint-reconciler-type=none)
  fi
  if [ "${GPT_K8S_AUDIT:-1}" != 0 ]; then
    echo "$dir/audit.log" >"$dir/audit-log-path"
    audit_flags=(--audit-policy-file="$here/audit-policy.yaml" --audit-log-path="$dir/audit.log"
      --audit-log-format=json --audit-log-maxsize=200 --audit-log-mode=blocking)
  fi
  certificates
  kubeconfig "$api_ip" "$api_port"

  log "etcd on 127.0.0.1:$etcd_port (data in $dir/etcd)"
  start etcd "$bin/etcd" --name=e2e --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="e2e=http://127.0.0.1:$peer_port" --listen-metrics-urls="" \
    --unsafe-no-fsync=true --quota-backend-bytes=2147483648 --log-level=warn
  wait_for etcd curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health"

  log "kube-apiserver on https://$api_ip:$api_port"
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$api_ip" --advertise-address="$api_ip" --secure-port="$api_port" \
    "${node_flags[@]}" "${audit_flags[@]}" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --profiling=false --v=1
  wait_for kube-apiserver https_ok "https://$api_ip:$api_port/readyz"

  log "kube-controller-manager and kube-scheduler"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --leader-elect=false \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --use-service-account-credentials=false --controllers='*,-nodeipam' \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false --v=1 \
    --kube-api-qps=100 --kube-api-burst=200 --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --profiling=false --v=1
  wait_for kube-controller-manager https_ok "https://127.0.0.1:$kcm_port/healthz"
  wait_for kube-scheduler https_ok "https://127.0.0.1:$sched_port/healthz"

  # kwok plays the kubelet of every node annotated kwok.x-k8s.io/node=fake: node heartbeats and leases,
  # pods Running and Ready with an IP from the pod CIDR. Node IPs are 127.0.0.1, so nothing the control
  # plane does towards a "kubelet" leaves this machine.
  log "kwok and the fake GPU fleet"
  start kwok "$bin/kwok" --kubeconfig="$kc" --config="$here/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr="$KWOK_POD_CIDR" --node-ip=127.0.0.1 --node-lease-duration-seconds=40
  local k="$bin/kubectl --kubeconfig=$kc"
  wait_for "the default service account" $k -n default get serviceaccount default
  $k apply -f "$here/fleet.yaml" >/dev/null
  wait_for "the fleet's nodes" $k wait --for=condition=Ready node --all --timeout=5s
  if [ "$with_node" = 1 ]; then
    bash "$here/node.sh" up
    # shellcheck disable=SC2086
    [ -z "${GPT_K8S_NODE_IMAGES:-}" ] || bash "$here/node.sh" load $GPT_K8S_NODE_IMAGES
  fi
  trap - ERR
  log "up: $($k get nodes --no-headers | wc -l) nodes; state in $dir"
  env_lines
}


stop_all() {
  local c
  [ ! -d "$dir/node" ] || bash "$here/node.sh" down
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_pid "$c"
  done
}

down() {
  [ -d "$dir" ] || { log "nothing to stop ($dir does not exist)"; return 0; }
  ours || die "$dir was not made by $0; not touching it"
  stop_all
  rm -rf "$dir"
  log "down: stopped and removed $dir"
}

status() {
  local c
  for c in "${components[@]}" "${node_components[@]}"; do
    [ -f "$dir/pids/$c" ] || [[ " ${components[*]} " == *" $c "* ]] || continue
    if running "$c"; then echo "$c: running (pid $(cat "$dir/pids/$c"))"; else echo "$c: stopped"; fi
  done
  if running kube-apiserver; then
    "$(cat "$dir/bin-dir")/kubectl" --kubeconfig="$dir/kubeconfig" get nodes -L karpenter.sh/capacity-type
  fi
}

env_lines() {
  [ -f "$dir/kubeconfig" ] || die "not up (no $dir/kubeconfig)"
  echo "export KUBECONFIG=$dir/kubeconfig"
  # kubectl (built with the cluster) and `kubectl gptd` (the plugin hack/setup.sh installs as .venv/bin/kubectl-gptd)
  echo "export PATH=$(cat "$dir/bin-dir"):$(cd "$here/../.." && pwd)/.venv/bin:\$PATH"
  [ ! -f "$dir/audit-log-path" ] || echo "export GPT_E2E_AUDIT_LOG=$(cat "$dir/audit-log-path")"
}

with_node="${GPT_K8S_NODE:-0}"
case "${1:-}" in
  up)
    [ "${2:-}" = --node ] && with_node=1
    up ;;
  load) shift; bash "$here/node.sh" load "$@" ;;
  down) down ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 up [--node]|down|status|env|load IMAGE..." >&2; exit 2 ;;
esac
