#!/usr/bin/env bash
# The node: containerd and kubelet, started from this ONE shell, which up.sh runs under a single
# `ip netns exec bls-e2e` (that gives a private mount namespace, slave to the host's). Kubelet's
# volume mounts must be visible to containerd/runc, so both live in this mount namespace; when
# both have exited this shell ends and every mount they made goes with it.
# Not meant to be run by hand: up.sh starts it, down.sh stops it.
set -euo pipefail
. "$(dirname "$0")/common.sh"
D="$STATE"
export PATH="$K8S_BIN:$PATH"
echo $$ >"$D/pids/node-shell"

# 1. `ip netns exec` remounted /sys, hiding /sys/fs/cgroup: re-mount the host's hierarchies
#    (cgroup v1 mounts attach to the existing hierarchies), as listed by up.sh from the host's
#    /proc/self/mountinfo: "<mountpoint> <fstype> <super options>".
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
while read -r mp fstype opts; do
  mkdir -p "$mp"
  mount -t "$fstype" -o "$opts" "$fstype" "$mp"
done <"$D/host-cgroups"

# 2. kubelet writes six kernel-wide sysctls: give it files holding the current values instead,
#    visible only in this mount namespace, so the host keeps its own.
mkdir -p "$D/sysctl-shadow"
for k in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
  f="$D/sysctl-shadow/${k//\//.}"
  cat "/proc/sys/$k" >"$f"
  mount --bind "$f" "/proc/sys/$k"
done

# 3. containerd, everything private under $D/containerd.
C="$D/containerd"
containerd --config "$C/config.toml" >"$D/logs/containerd.log" 2>&1 &
echo $! >"$D/pids/containerd"
for _ in $(seq 1 100); do [ -S "$C/containerd.sock" ] && break; sleep 0.1; done
[ -S "$C/containerd.sock" ] || { echo "containerd did not start" >&2; exit 1; }

# 4. kubelet.
kubelet --config="$D/kubelet/config.yaml" --kubeconfig="$D/kubeconfig" \
  --container-runtime=remote --container-runtime-endpoint="unix://$C/containerd.sock" \
  --root-dir="$D/kubelet" --cert-dir="$D/kubelet/pki" --hostname-override=node1 \
  --node-ip="$NODE_IP" --v=1 >"$D/logs/kubelet.log" 2>&1 &
echo $! >"$D/pids/kubelet"

# Stay until both have exited (down.sh stops them by PID).
wait
