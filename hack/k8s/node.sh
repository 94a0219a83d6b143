#!/usr/bin/env bash
# A real node for the local control plane: Debian's containerd, runc and CNI plugins, with kubelet and
# kube-proxy built from the same pinned tools module (hack/k8s/build.sh). Called by `cluster.sh up --node`;
# needs root. Pods run for real: images come from the local Docker engine (`load`), nothing is pulled.
#
#   node.sh net-up      the node's addresses and the pod network's fences (before the API server binds)
#   node.sh up          containerd, the pause image, kubelet, kube-proxy; waits for the Node to be Ready
#   node.sh load IMG... copy images from Docker into the node's containerd (like `kind load docker-image`)
#   node.sh down        stop everything, remove every pod, mount, address, route and rule it made
#
# Addresses (all from 198.18.0.0/15, the block reserved for benchmark networks; nothing else is touched):
#   198.18.0.1/32    the node's address, on lo (this kernel has no dummy links): kubelet, the API server
#   198.18.1.0/24    the node's pods, on the bridge gpt-cni0 (gateway 198.18.1.1), host-local IPAM
#   198.18.128.0/17  kwok's fake pods (never reachable: a blackhole route covers the whole /15)
#   198.19.0.0/16    Services (kube-proxy, nftables mode)
# Pods have no default route, only 198.18.0.0/15 through the bridge; the host forwards only from the bridge
# back into the bridge (an nftables table of ours), and nothing is NATed towards any other interface.
#
# What kubelet 1.36 needs on this host (cgroup v1, a VM, root), in kubelet.yaml below:
#   failCgroupV1: false        1.35+ refuses cgroup v1 by default
#   cgroupDriver: cgroupfs     containerd 1.6 has no RuntimeConfig RPC, so kubelet takes the driver from its
#                              config (this fallback is removed in 1.37/1.38: containerd 2 will be needed)
#   failSwapOn: false, protectKernelDefaults: false, eviction thresholds low enough for a shared disk
#   oomScoreAdj: 0             this sandbox lacks CAP_SYS_RESOURCE: no process may lower its OOM score, so
#                              kubelet and kube-proxy keep 0, and containerd clamps each container's score
#                              to its own (restrict_oom_score_adj, as for rootless); runc fails otherwise
#                              ("can't get final child's PID from pipe: EOF" after EACCES on oom_score_adj)
#
# State lives under $GPT_K8S_CLUSTER_DIR/node (see cluster.sh).
set -Eeuo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${GPT_K8S_CLUSTER_DIR:-${TMPDIR:-/tmp}/gpt-operator-k8s}"
node_dir="$dir/node"
timeout="${GPT_K8S_READY_TIMEOUT:-120}"

NODE_NAME="${GPT_K8S_NODE_NAME:-gpt-node-0}"
NODE_IP=198.18.0.1
BRIDGE=gpt-cni0
POD_SUBNET=198.18.1.0/24
POD_GATEWAY=198.18.1.1
FENCE=198.18.0.0/15
NFT_TABLE=gpt-operator-node
PAUSE_IMAGE=gpt-operator.local/pause:3.10
# The label the e2e suite (and kind-e2e.sh) put on the node that runs real containers.
NODE_LABEL=gpt-operator.dev/e2e-node=real
SOCK="$node_dir/containerd/containerd.sock"

me=node.sh
# shellcheck source=hack/k8s/lib.sh
source "$here/lib.sh"
bin() { cat "$dir/bin-dir"; }
ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }
kc() { "$(bin)/kubectl" --kubeconfig="$dir/kubeconfig" "$@"; }



preflight() {
  [ "$(id -u)" = 0 ] || die "the real node needs root (containerd, kubelet, network namespaces)"
  local missing=()
  for cmd in containerd containerd-shim-runc-v2 runc ctr ip nft sysctl mount; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  for plugin in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$plugin" ] || missing+=("/usr/lib/cni/$plugin")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]} (apt-get install containerd runc containernetworking-plugins iproute2 nftables)"
}

sysctl_set() {  # sysctl_set KEY VALUE: set it, remembering the old value for `down`
  local key=$1 value=$2 old
  old=$(sysctl -n "$key")
  grep -q "^$key " "$node_dir/sysctl.orig" 2>/dev/null || echo "$key $old" >>"$node_dir/sysctl.orig"
  sysctl -qw "$key=$value"
}

net_up() {
  preflight
  mkdir -p "$node_dir"
  ip addr replace "$NODE_IP/32" dev lo
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$POD_GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Anything in the block that is not the node or its pods (kwok's pod IPs, unused addresses) goes nowhere.
  ip route replace blackhole "$FENCE"
  # Service traffic from a pod to a pod is routed through the host (forwarding on), and its replies cross
  # the bridge, where conntrack must see them to undo the DNAT (bridge-nf-call-iptables).
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
  sysctl_set net.bridge.bridge-nf-call-iptables 1
  sysctl_set net.ipv4.ip_forward 1
  nft -f - <<EOF
table inet $NFT_TABLE
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname != "$BRIDGE" counter drop comment "forward nothing that does not come from the pod bridge"
    oifname != "$BRIDGE" counter drop comment "and nothing from it to any other interface"
  }
}
EOF
}

certificate() {  # certificate NAME SUBJECT: a client certificate from the cluster CA
  local p="$dir/pki"
  openssl req -newkey rsa:2048 -nodes -keyout "$p/$1.key" -out "$p/$1.csr" -subj "$2" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$p/$1.ext"
  openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -out "$p/$1.crt" \
    -days 3650 -extfile "$p/$1.ext" 2>/dev/null
  chmod 600 "$p/$1.key"
}

component_kubeconfig() {  # component_kubeconfig NAME: a kubeconfig with NAME's certificate
  local server
  server=$(awk '/server:/ {print $2; exit}' "$dir/kubeconfig")
  cat >"$node_dir/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster: {server: "$server", certificate-authority: "$dir/pki/ca.crt"}
users:
  - name: $1
    user: {client-certificate: "$dir/pki/$1.crt", client-key: "$dir/pki/$1.key"}
contexts:
  - name: local
    context: {cluster: local, user: $1}
current-context: local
EOF
  chmod 600 "$node_dir/$1.kubeconfig"
}


containerd_up() {
  local c="$node_dir/containerd"
  mkdir -p "$c" "$node_dir/cni/net.d" "$node_dir/cni/ipam"
  cat >"$node_dir/cni/net.d/10-gpt-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "gpt-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "$FENCE"}]
      }
    }
  ]
}
EOF
  cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$c/containerd.ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
  log "containerd ($(containerd --version | awk '{print $3}')) on $SOCK"
  start containerd containerd --config "$c/config.toml" --log-level warn
  wait_for containerd ctr --address "$SOCK" version
}

pause_image() {  # the sandbox image, from the pause binary built by build.sh
  ctr_ images ls -q | grep -qx "$PAUSE_IMAGE" && return 0
  local work
  work=$(mktemp -d)
  python3 "$here/oci_image.py" --binary "$(bin)/pause" --name "$PAUSE_IMAGE" --out "$work/pause.tar"
  ctr_ images import "$work/pause.tar" >/dev/null
  rm -rf "$work"
}

load() {  # load IMAGE...: from the Docker engine into the node's containerd, skipped when already there
  local image id seen start_s
  mkdir -p "$node_dir/loaded"
  bash "$here/../images/dockerd.sh" start
  for image in "$@"; do
    id=$(docker image inspect --format '{{.Id}}' "$image") || die "no image $image in Docker (build it first)"
    seen="$node_dir/loaded/$(echo "$image" | tr '/:' '__')"
    [ "$(cat "$seen" 2>/dev/null)" = "$id" ] && continue
    start_s=$(date +%s)
    docker save "$image" | ctr_ images import - >/dev/null
    echo "$id" >"$seen"
    log "loaded $image into the node in $(( $(date +%s) - start_s ))s"
  done
}

kubelet_up() {
  local k="$node_dir/kubelet" healthz
  mkdir -p "$k" "$node_dir/pod-logs"
  certificate kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  component_kubeconfig kubelet
  healthz=$(free_ports 1)
  echo "$healthz" >"$node_dir/kubelet.healthz-port"
  printf 'options ndots:1\n' >"$node_dir/resolv.conf"
  cat >"$node_dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
containerRuntimeEndpoint: unix://$SOCK
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
protectKernelDefaults: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$dir/pki/ca.crt"}
authorization: {mode: Webhook}
resolvConf: "$node_dir/resolv.conf"
podLogsDir: "$node_dir/pod-logs"
serializeImagePulls: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 1%}
maxPods: 110
oomScoreAdj: 0
EOF
  log "kubelet ($NODE_NAME on $NODE_IP)"
  start kubelet "$(bin)/kubelet" --config="$node_dir/kubelet.yaml" --kubeconfig="$node_dir/kubelet.kubeconfig" \
    --root-dir="$k" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --node-labels="$NODE_LABEL" --v=1
  wait_for kubelet curl -fsS --max-time 2 "http://127.0.0.1:$healthz/healthz"
}

kube_proxy_up() {
  certificate kube-proxy "/CN=system:kube-proxy"
  component_kubeconfig kube-proxy
  local healthz_port metrics_port
  read -r healthz_port metrics_port <<<"$(free_ports 2)"
  cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$node_dir/kube-proxy.kubeconfig"}
mode: nftables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$healthz_port
metricsBindAddress: 127.0.0.1:$metrics_port
clusterCIDR: $POD_SUBNET
oomScoreAdj: 0
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  log "kube-proxy (nftables)"
  start kube-proxy "$(bin)/kube-proxy" --config="$node_dir/kube-proxy.yaml" --v=1
}

up() {
  preflight
  [ -f "$dir/kubeconfig" ] || die "the control plane is not up (no $dir/kubeconfig)"
  [ -x "$(bin)/kubelet" ] || die "no kubelet in $(bin) (build.sh kubelet kube-proxy pause)"
  containerd_up
  pause_image
  kubelet_up
  kube_proxy_up
  wait_for "node $NODE_NAME" kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
  touch "$node_dir/up"
  log "node $NODE_NAME is Ready"
}


kubelet_chains_down() {  # kubelet's iptables canary and firewall chains (KUBE-*), and the jumps to them
  local cmd table
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle; do
      { "$cmd" -t "$table" -S 2>/dev/null || true; } | sed -n 's/^-A \(.* -j KUBE-.*\)/-D \1/p' \
        | while read -r -a rule; do "$cmd" -t "$table" "${rule[@]}" 2>/dev/null || true; done
      { "$cmd" -t "$table" -S 2>/dev/null || true; } | awk '/^-N KUBE-/ {print $2}' \
        | while read -r chain; do "$cmd" -t "$table" -F "$chain" 2>/dev/null; "$cmd" -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
  # the tables kubelet's iptables-nft calls created, once nothing is left in them but empty base chains
  local family
  for family in ip ip6; do
    for table in filter nat mangle; do
      if nft list table "$family" "$table" >/dev/null 2>&1 \
         && ! nft list table "$family" "$table" | grep -vqE '^\s*(table|chain|type|\}|$)'; then
        nft delete table "$family" "$table" 2>/dev/null || true
      fi
    done
  done
}

down() {
  [ -d "$node_dir" ] || return 0
  stop_pid kube-proxy
  stop_pid kubelet
  # every container's process, then containerd and its shims (they outlive containerd otherwise)
  if [ -S "$SOCK" ]; then
    for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$task" >/dev/null 2>&1 || true; done
  fi
  stop_pid containerd
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  pkill -KILL -f "containerd-shim-runc-v2 .*$node_dir" 2>/dev/null || true
  # pod network namespaces, volume and rootfs mounts: deepest first
  local m
  for m in $(awk -v d="$node_dir" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
  # kubelet's pod cgroups (cgroupfs driver: kubepods under each v1 hierarchy)
  local cg
  for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  kubelet_chains_down
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  ip route del blackhole "$FENCE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  if [ -f "$node_dir/sysctl.orig" ]; then
    while read -r key value; do sysctl -qw "$key=$value" 2>/dev/null || true; done <"$node_dir/sysctl.orig"
  fi
  rm -rf "$node_dir"
}

case "${1:-}" in
  net-up) net_up ;;
  up) up ;;
  load) shift; load "$@" ;;
  down) down ;;
  *) echo "usage: $0 net-up|up|load IMAGE...|down" >&2; exit 2 ;;
esac
