# Shared settings and helpers for the local-cluster harness (sourced by up.sh, down.sh, images.sh,
# smoke.sh). The recipe and its traps: shared/notes/local-cluster.md.
# shellcheck shell=bash disable=SC2034

NS="${BLS_E2E_NETNS:-bls-e2e}"
NODE_IP=10.96.0.254
K8S_VERSION=1.20.2
K8S_DEB_VERSION="1.20.5+really1.20.2"
CACHE="${BINLOGSTREAM_CACHE:-$HOME/.cache/binlogstream}"
K8S_DIR="$CACHE/k8s-$K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
TOOLS_BIN="$CACHE/k8s-tools/bin"
STATE="${BLS_E2E_DIR:-/tmp/bls-e2e}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

# Binaries the harness builds from the Kubernetes source package (plus the static pause binary).
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet"

log() { printf '[%s %4ss] %s\n' "$(basename "$0" .sh)" "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True when the harness should use an existing cluster from $KUBECONFIG (kind, for example).
use_existing() { [ "${BLS_E2E_USE_KUBECONFIG:-0}" = 1 ] && [ -n "${KUBECONFIG:-}" ]; }

# Refuse to talk to the node address unless it is local inside the namespace: outside it,
# 10.96.0.254 follows the host's default route off the machine.
assert_local() {
  local r
  r=$(ip netns exec "$NS" ip route get "$NODE_IP" 2>/dev/null) || die "netns $NS missing"
  case "$r" in local\ *) ;; *) die "$NODE_IP is not local in netns $NS: $r" ;; esac
}

# Run a client of the cluster: inside the namespace for the local cluster, as is for $KUBECONFIG.
in_cluster_net() {
  if use_existing; then "$@"; else assert_local; ip netns exec "$NS" env KUBECONFIG="$STATE/kubeconfig" "$@"; fi
}
kc() { in_cluster_net "$TOOLS_BIN/kubectl" "$@"; }
hm() { in_cluster_net "$TOOLS_BIN/helm" "$@"; }

# The PID in a state pid file, if that process is alive.
live_pid() {
  local f="$STATE/pids/$1" p
  [ -f "$f" ] || return 1
  p=$(cat "$f"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

# Host state that bring-up and teardown must leave as it was. Volatile fields (iptables counters
# and timestamps) are dropped so that equal means equal.
SNAP_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max net.ipv6.conf.all.forwarding kernel.pid_max fs.inotify.max_user_watches fs.inotify.max_user_instances"
HOST_PATHS="/run/netns /var/run/netns /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /var/lib/containerd /opt/containerd /etc/cni /opt/cni /run/runc /etc/kubernetes"
snapshot() {
  local d="$1" k
  mkdir -p "$d"
  ip addr >"$d/ip-addr"
  ip -4 route show table all >"$d/ip-route"; ip -6 route show table all >>"$d/ip-route"
  ip rule >"$d/ip-rule"
  ip link >"$d/ip-link"
  ip netns list >"$d/ip-netns" 2>&1 || true
  { iptables-save 2>&1; ip6tables-save 2>&1; } | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//' >"$d/iptables-save"
  if command -v nft >/dev/null; then nft list ruleset >"$d/nft" 2>&1 || true; fi
  sort /proc/self/mounts >"$d/mount"
  for k in $SNAP_SYSCTLS; do sysctl "$k" 2>&1; done >"$d/sysctl"
  for k in $HOST_PATHS; do [ -e "$k" ] && echo "$k"; done >"$d/host-paths"
  ls -d /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/*/kubepods* 2>/dev/null >"$d/cgroups" || true
}

# Start "$@" in the namespace as a daemon; the process itself writes its PID to pids/<name>.
start() {
  local name="$1"; shift
  rm -f "$STATE/pids/$name"
  setsid ip netns exec "$NS" sh -c 'echo $$ >"$0"; exec "$@"' "$STATE/pids/$name" "$@" \
    </dev/null >"$STATE/logs/$name.log" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$STATE/pids/$name" ] && break; sleep 0.1; done
  [ -s "$STATE/pids/$name" ] || die "$name did not start"
}
# Wait until "$@" succeeds, while process <name> stays alive.
wait_for() {  # name timeout command...
  local name="$1" t="$2"; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || { tail -n 20 "$STATE/logs/$name.log" >&2 || true; die "$name not ready after ${t}s"; }
    live_pid "$name" >/dev/null || { tail -n 20 "$STATE/logs/$name.log" >&2 || true; die "$name exited"; }
    sleep 0.3
  done
}

# kube-apiserver as up.sh starts it; apifaults.sh stops it and calls this again (same state, certs
# in cert-dir are reused, so clients keep trusting it).
start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --audit-policy-file="$STATE/audit-policy.yaml" --audit-log-path="$STATE/audit.log" \
    --audit-log-maxsize=200 --audit-log-maxbackup=1 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --cert-dir="$STATE/certs" --token-auth-file="$STATE/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$STATE/sa.pub" \
    --service-account-signing-key-file="$STATE/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
    --insecure-port=0 --kubelet-preferred-address-types=InternalIP
}
