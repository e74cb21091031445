#!/usr/bin/env bash
# Brings up a single-node Kubernetes 1.20.2 cluster inside network namespace bls-e2e (node and
# API server address 10.96.0.254 on the namespace's own lo), no Docker. Idempotent: a healthy
# cluster is left alone, a half-started one is torn down and started again.
#
#   sudo bash tests/cluster/up.sh          # state in ${BLS_E2E_DIR:-/tmp/bls-e2e}
#   ip netns exec bls-e2e env KUBECONFIG=/tmp/bls-e2e/kubeconfig kubectl get nodes
#   bash tests/cluster/down.sh             # stops everything, proves the host is unchanged
#
# With an existing cluster (for example kind, for users with Docker):
#   kind create cluster --name bls && kind get kubeconfig --name bls > /tmp/kind.kubeconfig
#   export KUBECONFIG=/tmp/kind.kubeconfig BLS_E2E_USE_KUBECONFIG=1
#   bash tests/cluster/up.sh      # only checks the cluster answers
#   bash tests/cluster/images.sh  # builds the archives and runs `kind load image-archive`
#
# Recipe and traps: shared/notes/local-cluster.md. Every process is started by this script and
# its PID kept in $STATE/pids; every client runs through `ip netns exec bls-e2e`.
set -euo pipefail
. "$(dirname "$0")/common.sh"

if use_existing; then
  log "BLS_E2E_USE_KUBECONFIG=1: using the cluster in $KUBECONFIG (nothing started)"
  kc get nodes -o wide
  exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (network namespace, mounts)"

bash "$HERE/build-k8s.sh"
export PATH="$K8S_BIN:$PATH"

PROCS="etcd kube-apiserver kube-controller-manager kube-scheduler node-shell containerd kubelet kube-proxy"
healthy() {
  local p
  for p in $PROCS; do live_pid "$p" >/dev/null || return 1; done
  [ -f "$STATE/kubeconfig" ] || return 1
  [ "$(kc get node node1 -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

if ip netns list 2>/dev/null | grep -qw "^$NS" || [ -d "$STATE/pids" ]; then
  if healthy; then
    log "cluster already up (node1 Ready); state in $STATE"
    exit 0
  fi
  log "found a stale or half-started cluster: tearing it down first"
  bash "$HERE/down.sh" --no-compare || true
fi

T0=$SECONDS
rm -rf "$STATE"
mkdir -p "$STATE"/{pids,logs,certs,etcd,kubelet/pki,containerd,cni/net.d,cni/ipam}
snapshot "$STATE/snapshot-before"
log "host snapshot taken: $STATE/snapshot-before"

# The host's cgroup hierarchies ("<mountpoint> <fstype> <super options>"), for node.sh.
awk '{ for (i = 1; $i != "-"; i++) ; if ($(i+1) ~ /^cgroup2?$/) print $5, $(i+1), $(i+3) }' /proc/self/mountinfo >"$STATE/host-cgroups"

# --- network namespace: the node address lives on the namespace's own lo -----------------------
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip addr add "$NODE_IP/32" dev lo
assert_local
log "netns $NS created; $NODE_IP is local inside it"

nscurl() { assert_local; ip netns exec "$NS" curl -sf --max-time 3 "$@"; }

# --- etcd ------------------------------------------------------------------------------------------
start etcd etcd --name node1 --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster node1=http://127.0.0.1:2380
wait_for etcd 30 nscurl http://127.0.0.1:2379/health
log "etcd up (pid $(cat "$STATE/pids/etcd"))"

# --- credentials: service-account key pair, static admin token -------------------------------------
openssl genrsa -out "$STATE/sa.key" 2048 2>/dev/null
openssl rsa -in "$STATE/sa.key" -pubout -out "$STATE/sa.pub" 2>/dev/null
TOKEN=$(openssl rand -hex 24)
echo "$TOKEN,admin,admin,system:masters" >"$STATE/tokens.csv"
chmod 600 "$STATE/tokens.csv" "$STATE/sa.key"

# --- kube-apiserver --------------------------------------------------------------------------------
# An audit log at Metadata level (who, verb, resource; no bodies) lets scale.sh count the
# requests of the operator and of each publisher separately.
cat >"$STATE/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
POLICY
start_apiserver
wait_for kube-apiserver 60 nscurl -k -H "Authorization: Bearer $TOKEN" "https://$NODE_IP:6443/readyz"
log "kube-apiserver up (pid $(cat "$STATE/pids/kube-apiserver"))"

cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bls-e2e
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $STATE/certs/apiserver.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: bls-e2e
  context: {cluster: bls-e2e, user: admin}
current-context: bls-e2e
EOF
chmod 600 "$STATE/kubeconfig"
kc version >/dev/null 2>&1 || die "kubectl cannot reach the API server with $STATE/kubeconfig"

# --- controller-manager, scheduler ------------------------------------------------------------------
start kube-controller-manager kube-controller-manager --kubeconfig="$STATE/kubeconfig" --leader-elect=false \
  --service-account-private-key-file="$STATE/sa.key" --root-ca-file="$STATE/certs/apiserver.crt" \
  --use-service-account-credentials=false
start kube-scheduler kube-scheduler --kubeconfig="$STATE/kubeconfig" --leader-elect=false

# --- the node: containerd + kubelet from ONE shell (node.sh) ---------------------------------------
C="$STATE/containerd"
containerd config default | awk -v C="$C" -v S="$C/containerd.sock" -v CNI="$STATE/cni/net.d" '
  /^ *\[/ { sec = $0; sub(/^ */, "", sec) }
  sec == "" && /^root = /  { print "root = \"" C "/root\""; next }
  sec == "" && /^state = / { print "state = \"" C "/state\""; next }
  sec == "[grpc]"  && /^  address = / { print "  address = \"" S "\""; next }
  sec == "[ttrpc]" && /^  address = / { print "  address = \"" S ".ttrpc\""; next }
  sec == "[debug]" && /^  address = / { print "  address = \"\""; next }
  /restrict_oom_score_adj = /      { sub(/= .*/, "= true") }
  /netns_mounts_under_state_dir = / { sub(/= .*/, "= true") }
  /sandbox_image = /               { sub(/= .*/, "= \"registry.k8s.io/pause:3.6\"") }
  /^ *bin_dir = "\/opt\/cni\/bin"/ { sub(/= .*/, "= \"/usr/lib/cni\"") }
  /^ *conf_dir = "\/etc\/cni\/net.d"/ { sub(/= .*/, "= \"" CNI "\"") }
  sec ~ /runtimes\.runc\.options\]$/ && /^ *Root = / { sub(/= .*/, "= \"" C "/runc\"") }
  sec ~ /SystemdCgroup/ {}
  /^ *SystemdCgroup = / { sub(/= .*/, "= false") }
  sec ~ /io\.containerd\.internal\.v1\.opt"\]$/ && /^ *path = / { sub(/= .*/, "= \"" C "/opt\"") }
  { print }' >"$C/config.toml"
for k in "root = \"$C/root\"" "address = \"$C/containerd.sock\"" "restrict_oom_score_adj = true" \
         "netns_mounts_under_state_dir = true" "bin_dir = \"/usr/lib/cni\"" "Root = \"$C/runc\"" "path = \"$C/opt\""; do
  grep -qF "$k" "$C/config.toml" || die "containerd config edit failed: no '$k'"
done
cat >"$STATE/cni/net.d/10-e2e.conflist" <<EOF
{"cniVersion":"0.4.0","name":"e2e","plugins":[
  {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,
   "ipam":{"type":"host-local","dataDir":"$STATE/cni/ipam","ranges":[[{"subnet":"10.244.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
  {"type":"portmap","capabilities":{"portMappings":true}}]}
EOF
cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: $NODE_IP
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
evictionHard: {}
clusterDNS: []
# Images here are imported, never pullable: image GC must never delete them (it did, with the
# disk at 89% from build caches, and then no pod could start: "failed to pull registry.k8s.io/pause").
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
rm -f "$STATE/pids/node-shell"
setsid ip netns exec "$NS" bash "$HERE/node.sh" </dev/null >"$STATE/logs/node-shell.log" 2>&1 &
for _ in $(seq 1 100); do [ -s "$STATE/pids/kubelet" ] && break; sleep 0.1; done
live_pid node-shell >/dev/null || { cat "$STATE/logs/node-shell.log" >&2; die "node shell did not start"; }
live_pid containerd >/dev/null || { tail -n 20 "$STATE/logs/containerd.log" >&2; die "containerd did not start"; }
log "containerd (pid $(cat "$STATE/pids/containerd")) and kubelet (pid $(cat "$STATE/pids/kubelet")) started by node shell (pid $(cat "$STATE/pids/node-shell"))"

# --- kube-proxy (its iptables rules live in the namespace and die with it) --------------------------
start kube-proxy kube-proxy --kubeconfig="$STATE/kubeconfig" --hostname-override=node1 \
  --proxy-mode=iptables --cluster-cidr=10.244.0.0/16 --conntrack-max-per-core=0

# --- wait for node1 Ready ---------------------------------------------------------------------------
end=$((SECONDS + 120))
until [ "$(kc get node node1 -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
  for p in $PROCS; do live_pid "$p" >/dev/null || { tail -n 30 "$STATE/logs/$p.log" >&2 || true; die "$p exited"; }; done
  [ "$SECONDS" -lt "$end" ] || { tail -n 30 "$STATE/logs/kubelet.log" >&2; die "node1 not Ready after 120s"; }
  sleep 1
done
kc get nodes -o wide
log "cluster up in $((SECONDS - T0))s (node Ready); kubeconfig $STATE/kubeconfig"
log "use: ip netns exec $NS env KUBECONFIG=$STATE/kubeconfig $TOOLS_BIN/kubectl get pods -A"
