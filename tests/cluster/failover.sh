#!/usr/bin/env bash
# Issue 12: leader failover with two operator replicas. Scales the chart's operator to 2
# replicas, finds the Lease holder, and in the same instant a BinlogStream spec edit is applied
# force-deletes its pod and SIGKILLs its process (by PID, from containerd: no graceful release
# of the Lease). Checks that another replica takes the Lease once it expires and reconciles the
# edit (the publisher Deployment carries it, status.observedGeneration reaches the new
# generation) within BLS_FAILOVER_LIMIT (60) seconds; prints the times. Scales back to 1
# replica at the end (scale.sh measures one operator process).
# Why the pod goes too: a container SIGKILLed alone is restarted by the kubelet in the same pod,
# with the same identity (the pod name), and simply renews its own Lease (seen: the Lease never
# moved) — safe, the old process is dead, but no failover.
#   bash tests/cluster/failover.sh        # after smoke.sh and stream.sh (BinlogStream shop)
set -euo pipefail
. "$(dirname "$0")/common.sh"
use_existing && die "failover.sh kills an operator process through the local containerd: local cluster only"

REL=bls
RNS=bls-system
DEPLOY="$REL-operator"
LEASE=binlogstream-operator
TNS=shop
BLS=shop
LIMIT=${BLS_FAILOVER_LIMIT:-60}
CHART="${BLS_CHART:-$REPO/charts/binlogstream}"
CTR=(ctr --address "$STATE/containerd/containerd.sock" -n k8s.io)

wait_until() {  # seconds description command...
  local limit=$1 what=$2; shift 2; local end=$((SECONDS + limit))
  until "$@" 2>/dev/null; do [ "$SECONDS" -lt "$end" ] || die "timed out after ${limit}s: $what"; sleep 1; done
}
replicas() {  # n: upgrade the release to n operator replicas and wait until n are ready
  hm upgrade "$REL" "$CHART" -n "$RNS" --reuse-values --set replicaCount="$1" >/dev/null
  kc -n "$RNS" rollout status "deploy/$DEPLOY" --timeout=120s >/dev/null
  n_ready() { [ "$(kc -n "$RNS" get deploy "$DEPLOY" -o 'jsonpath={.status.readyReplicas}')" = "$1" ] &&
              [ "$(kc -n "$RNS" get pods -l app.kubernetes.io/name=binlogstream-operator -o name | grep -c .)" = "$1" ]; }
  wait_until 120 "$1 operator replicas ready and no other pod" n_ready "$1"
}
holder() { kc -n "$RNS" get lease "$LEASE" -o 'jsonpath={.spec.holderIdentity}'; }
container_pid() {  # pod: host PID of its first container, from containerd
  local cid
  cid=$(kc -n "$RNS" get pod "$1" -o 'jsonpath={.status.containerStatuses[0].containerID}')
  cid=${cid#containerd://}
  "${CTR[@]}" tasks ls | awk -v id="$cid" '$1 == id { print $2 }'
}

replicas 2
pods=$(kc -n "$RNS" get pods -l app.kubernetes.io/name=binlogstream-operator -o 'jsonpath={.items[*].metadata.name}')
has_holder() { h=$(holder) && [ -n "$h" ] && echo " $pods " | grep -q " $h "; }
wait_until 60 "one of the operator pods ($pods) holds lease $LEASE" has_holder
leader=$(holder)
other=$(echo "$pods" | tr ' ' '\n' | grep -vx "$leader")
[ -n "$other" ] || die "no standby replica beside $leader"
pid=$(container_pid "$leader")
[ -n "$pid" ] || die "no containerd task for the leader $leader"
gen0=$(kc -n $TNS get bls $BLS -o 'jsonpath={.metadata.generation}')
cpu="1$((RANDOM % 90 + 10))m"
log "leader $leader (pid $pid), standby $other; BinlogStream $BLS at generation $gen0; editing spec.publisher.resources.requests.cpu to $cpu and killing the leader"

# The edit and the kill in the same instant: the edit's watch event reaches the leader while it
# dies (or just before), so the change is reconciled by the replica that takes over.
kc -n $TNS patch bls $BLS --type merge -p "{\"spec\":{\"publisher\":{\"resources\":{\"requests\":{\"cpu\":\"$cpu\"}}}}}" >/dev/null &
patcher=$!
# SIGKILL first, then the forced delete. The delete alone can already have the kubelet kill the
# task, so a kill that finds no such process means the leader is dead, which is what we want.
kill -KILL "$pid" 2>/dev/null || ! kill -0 "$pid" 2>/dev/null || die "cannot kill the leader (pid $pid)"
kc -n "$RNS" delete pod "$leader" --grace-period=0 --force --wait=false >/dev/null 2>&1
t0=$SECONDS
wait "$patcher" || die "the spec edit failed"
gen1=$(kc -n $TNS get bls $BLS -o 'jsonpath={.metadata.generation}')
[ "$gen1" -gt "$gen0" ] || die "the edit did not change the generation ($gen0 -> $gen1)"

took_over() { h=$(holder) && [ -n "$h" ] && [ "$h" != "$leader" ] && kc -n "$RNS" get pod "$h" >/dev/null; }
wait_until "$LIMIT" "another replica takes lease $LEASE from $leader" took_over
t_lease=$((SECONDS - t0))
new=$(holder)
[ "$new" = "$other" ] && who="the standby $new" || who="the replacement pod $new"
applied() {
  [ "$(kc -n $TNS get deploy "bls-$BLS" -o 'jsonpath={.spec.template.spec.containers[0].resources.requests.cpu}')" = "$cpu" ] &&
  [ "$(kc -n $TNS get bls $BLS -o 'jsonpath={.status.observedGeneration}')" = "$gen1" ]
}
wait_until "$LIMIT" "the new leader applies the edit (Deployment requests.cpu $cpu, observedGeneration $gen1)" applied
t_applied=$((SECONDS - t0))
[ "$(holder)" = "$new" ] || die "the lease moved again: $new -> $(holder)"
# The ReplicaSet's replacement pod comes up and stands by; the lease stays where it is.
two_ready() { [ "$(kc -n "$RNS" get deploy "$DEPLOY" -o 'jsonpath={.status.readyReplicas}')" = 2 ]; }
wait_until 120 "two operator replicas ready again" two_ready
[ "$(holder)" = "$new" ] || die "the lease moved while the new leader was alive: $new -> $(holder)"
log "failover: $who took the lease ${t_lease}s after the leader $leader was killed, and applied the edit (generation $gen1) ${t_applied}s after (bound ${LIMIT}s); two replicas again, one leader"
echo "| operator failover (2 replicas, leader pod force-deleted and SIGKILLed during a spec edit) | lease taken by $who after ${t_lease} s | edit applied after ${t_applied} s | bound ${LIMIT} s |"

replicas 1
log "failover done; operator back to 1 replica (leader $(holder))"
