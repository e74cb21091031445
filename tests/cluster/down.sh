#!/usr/bin/env bash
# Tears down what up.sh (and smoke.sh's test services) started, in the documented order, every
# process by its recorded PID; removes the namespace, cgroups and host paths that did not exist
# before; then compares the host with the snapshot up.sh took and exits 1 if anything differs.
#   bash tests/cluster/down.sh               # BLS_E2E_KEEP_STATE=1 keeps $STATE (logs) afterwards
#   bash tests/cluster/down.sh --no-compare  # cleanup only (up.sh uses it on a stale cluster)
set -euo pipefail
. "$(dirname "$0")/common.sh"

COMPARE=1
[ "${1:-}" = --no-compare ] && COMPARE=0
if use_existing; then log "BLS_E2E_USE_KUBECONFIG=1: nothing of ours to tear down (kind: kind delete cluster)"; exit 0; fi
[ "$(id -u)" = 0 ] || die "must run as root"
if [ ! -d "$STATE" ] && ! ip netns list 2>/dev/null | grep -qw "^$NS"; then
  log "nothing to tear down ($STATE absent, no netns $NS)"; exit 0
fi
mkdir -p "$STATE/pids"
C="$STATE/containerd"
CTR=(ctr --address "$C/containerd.sock" -n k8s.io)

# Stop one recorded process: SIGTERM, up to $2 seconds, then SIGKILL.
stop() {
  local name="$1" t="${2:-15}" p
  p=$(live_pid "$name") || { rm -f "$STATE/pids/$name"; return 0; }
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 $((t * 10))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then log "$name (pid $p) ignored SIGTERM: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; sleep 0.2; fi
  log "stopped $name (pid $p)"
  rm -f "$STATE/pids/$name"
}
running_tasks() { "${CTR[@]}" tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"' | wc -l; }

# 1. No new pods: stop the controller-manager and scheduler, then delete every pod and wait until
#    containerd runs no task (kubelet runs CNI DEL and unmounts volumes on the way).
stop kube-controller-manager
stop kube-scheduler
if live_pid kube-apiserver >/dev/null && live_pid kubelet >/dev/null && [ -f "$STATE/kubeconfig" ]; then
  log "deleting all pods"
  kc delete pods --all --all-namespaces --grace-period=5 --wait=true --timeout=60s >/dev/null 2>&1 || log "pod deletion did not finish cleanly"
  for _ in $(seq 1 60); do [ "$(running_tasks)" = 0 ] && break; sleep 1; done
  log "containerd tasks running: $(running_tasks)"
fi

# 2. kube-proxy and kubelet.
stop kube-proxy
stop kubelet

# 3. Any task left: kill and delete it through containerd.
if live_pid containerd >/dev/null; then
  for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    log "killing leftover task $t"
    "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    sleep 0.5
    "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true
  done
fi

# 4. containerd; its shell (node.sh) then exits and its mount namespace goes with it.
stop containerd 20
for _ in $(seq 1 50); do live_pid node-shell >/dev/null || break; sleep 0.1; done
stop node-shell 5

# 5. Control plane and test services (everything else recorded in pids/).
stop kube-apiserver
stop etcd
for f in "$STATE"/pids/*; do [ -e "$f" ] && stop "$(basename "$f")"; done

# 6. Anything still in our namespace or our pod cgroups is ours (shims, pod processes): by PID.
left=""
if ip netns list 2>/dev/null | grep -qw "^$NS"; then left=$(ip netns pids "$NS" 2>/dev/null || true); fi
left="$left $(cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs 2>/dev/null || true)"
for p in $left; do
  log "leftover process $p ($(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-80)): SIGKILL"
  kill -KILL "$p" 2>/dev/null || true
done
[ -n "${left// /}" ] && sleep 0.5

# 7. Cgroups kubelet created (deepest first), if they did not exist before.
BEFORE="$STATE/snapshot-before"
for h in /sys/fs/cgroup/*/; do
  d="${h}kubepods"
  [ -d "$d" ] || continue
  grep -qx "${d}" "$BEFORE/cgroups" 2>/dev/null && continue
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || log "could not remove all of $d"
done

# 8. Host paths kubelet/containerd/libcni hard-code, if they did not exist before.
for p in $HOST_PATHS; do
  case "$p" in /run/netns|/var/run/netns) continue ;; esac
  [ -e "$p" ] || continue
  if [ -f "$BEFORE/host-paths" ] && ! grep -qx "$p" "$BEFORE/host-paths"; then
    log "removing $p (created during the run)"; rm -rf "$p"
  fi
done

# 9. The namespace, and /run/netns if `ip netns add` created it (it bind-mounts it on itself).
if ip netns list 2>/dev/null | grep -qw "^$NS"; then ip netns del "$NS"; log "netns $NS deleted"; fi
if [ -f "$BEFORE/host-paths" ] && ! grep -qx /run/netns "$BEFORE/host-paths" && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
  while grep -q ' /run/netns ' /proc/self/mounts; do umount /run/netns; done
  rmdir /run/netns && log "removed /run/netns"
fi

# 10. Compare with the snapshot taken before bring-up.
rc=0
if [ "$COMPARE" = 1 ]; then
  if [ -d "$BEFORE" ]; then
    AFTER=$(mktemp -d /tmp/bls-e2e-after.XXXXXX)
    snapshot "$AFTER"
    if diff -ru "$BEFORE" "$AFTER" >"$AFTER.diff"; then
      log "host unchanged: ip addr/route/rule/link/netns, iptables-save, nft, mounts, sysctls, host paths, cgroups identical to before up.sh"
    else
      cat "$AFTER.diff" >&2
      log "HOST CHANGED (diff above)"; rc=1
    fi
    rm -rf "$AFTER" "$AFTER.diff"
  else
    log "no snapshot in $BEFORE: cannot compare"
  fi
fi
if [ "${BLS_E2E_KEEP_STATE:-0}" = 1 ] || [ "$rc" != 0 ]; then log "state kept in $STATE"; else rm -rf "$STATE"; fi
exit $rc
