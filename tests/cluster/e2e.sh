#!/usr/bin/env bash
# End-to-end on a real cluster: up → images → helm install → a BinlogStream streaming rows
# (stream.sh) → the checks below → helm uninstall → down (always, even on failure).
#   bash tests/cluster/e2e.sh
# Checks beyond stream.sh:
#   - Ready=True and the checkpoint advancing while rows are written;
#   - deleting the publisher pod mid-workload: the new pod resumes from the status checkpoint
#     and every row reaches the stream (duplicates counted and printed);
#   - Kinesis unreachable for a while (emulator frozen with SIGSTOP): Degraded=True, then Ready
#     again with nothing lost; the lag passing the threshold: Lagging=True, then it clears;
#   - an invalid spec (bad port, missing Secret): Ready=False, reason InvalidSpec, the field named;
#   - the publisher fence (a second publisher waits for the lease), snapshots and checkpoint
#     requests by resource (snapshot.sh, rewind.sh); delete/recreate and a source host change (recreate.sh);
#   - Kubernetes API faults while checkpoints are due (apifaults.sh) and operator leader
#     failover with two replicas (failover.sh);
#   - prometheus.sh: a real Prometheus scrapes publisher and operator; every query has series;
#   - deleting the BinlogStream removes its children; helm uninstall leaves no operator object.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"

diagnose() {
  echo "---- e2e failed: state for diagnosis ----" >&2
  kc get bls -A -o wide >&2 || true
  kc -n shop get bls shop -o jsonpath='{.status}' >&2 || true; echo >&2
  kc -n shop logs -l app.kubernetes.io/instance=shop --tail=40 >&2 || true
  kc -n bls-system logs -l app.kubernetes.io/name=binlogstream-operator --tail=40 >&2 || true
}
cleanup() { status=$?; [ "$status" = 0 ] || diagnose; hm uninstall bls -n bls-system >/dev/null 2>&1 || true; bash "$HERE/down.sh" || status=1; exit $status; }
trap cleanup EXIT

bash "$HERE/up.sh"
bash "$HERE/images.sh"
bash "$HERE/smoke.sh"
bash "$HERE/stream.sh"

TNS=shop
MDB="$STATE/mariadb"
sql() { mariadb --no-defaults -uroot --socket="$MDB/sock" "$@"; }
cond() { kc -n "$1" get bls "$2" -o "jsonpath={.status.conditions[?(@.type==\"$3\")].$4}" 2>/dev/null; }
wait_until() {  # seconds description command...
  local limit=$1 what=$2; shift 2; local end=$((SECONDS + limit))
  until "$@" 2>/dev/null; do [ "$SECONDS" -lt "$end" ] || die "timed out after ${limit}s: $what"; sleep 1; done
}

# 1-2: Ready, and the checkpoint moves with new rows.
shop_ready() { cond $TNS shop Ready status | grep -qx True; }
wait_until 60 "Ready=True" shop_ready
before=$(kc -n $TNS get bls shop -o 'jsonpath={.status.checkpoint.display}')
sql -e "INSERT INTO shop.orders (item, qty) VALUES ('kiwi', 5), ('lime', 6)"
moved() { [ "$(kc -n $TNS get bls shop -o 'jsonpath={.status.checkpoint.display}')" != "$before" ]; }
wait_until 60 "checkpoint advances past $before" moved
log "checkpoint moved: $before -> $(kc -n $TNS get bls shop -o 'jsonpath={.status.checkpoint.display}')"
kc -n $TNS get bls -o wide
bash "$HERE/prometheus.sh"   # a real Prometheus: every alert and dashboard query has series

# 3: delete the publisher pod while rows are being written; the next pod resumes.
( for i in $(seq 1 200); do sql -e "INSERT INTO shop.orders (item, qty) VALUES ('bulk', $i)"; sleep 0.02; done ) &
writer=$!
sleep 1
kc -n $TNS delete pod -l app.kubernetes.io/instance=shop --wait=false
wait "$writer"
expected=$(sql -N -e "SELECT COUNT(*) FROM shop.orders")
log "$expected rows in shop.orders; waiting for all of them on the stream"
count_stream() {
  in_cluster_net env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
    "$CACHE/pyrepl-1.0.17/bin/python" -c "
import boto3, json
k = boto3.client('kinesis', endpoint_url='http://$NODE_IP:4567')
it = k.get_shard_iterator(StreamName='shop-changes', ShardId='shardId-000000000000', ShardIteratorType='TRIM_HORIZON')['ShardIterator']
recs = []
while True:
    r = k.get_records(ShardIterator=it, Limit=10000)
    recs += r['Records']
    if not r['Records']: break
    it = r['NextShardIterator']
ids = [json.loads(x['Data'])['row']['values']['id'] for x in recs if json.loads(x['Data'])['type'] == 'WriteRowsEvent']
print(len(set(ids)), len(ids) - len(set(ids)))"
}
# Waits until every row of shop.orders is on the stream; sets $expected, $distinct, $dups.
all_rows_arrive() {  # seconds what
  expected=$(sql -N -e "SELECT COUNT(*) FROM shop.orders")
  local end=$((SECONDS + $1))
  while :; do
    read -r distinct dups < <(count_stream)
    [ "$distinct" -ge "$expected" ] && return 0
    [ "$SECONDS" -lt "$end" ] || die "only $distinct of $expected rows on the stream $2"
    sleep 2
  done
}
all_rows_arrive 180 "after the pod was deleted"
log "pod deleted mid-workload: all $expected rows on the stream, $dups duplicates"

# 4: the emulator stops answering for a while; a low lag threshold makes the lag visible.
kc -n $TNS patch bls shop --type merge -p '{"spec":{"lag":{"thresholdSeconds":5}}}'
sleep 3
kc -n $TNS rollout status deploy/bls-shop --timeout=120s
pod_ready() { [ "$(kc -n $TNS get pods -l app.kubernetes.io/instance=shop -o 'jsonpath={.items[*].status.containerStatuses[0].ready}')" = true ]; }
wait_until 120 "the rolled publisher pod is ready" pod_ready
wait_until 120 "Ready=True after the threshold change rolled the publisher" shop_ready
lag_reported() { [ -n "$(kc -n $TNS get bls shop -o 'jsonpath={.status.lagSeconds}')" ]; }
wait_until 60 "the restarted publisher reports its lag" lag_reported
kpid=$(cat "$STATE/pids/kinesalite")
kill -STOP "$kpid"
log "kinesalite frozen (SIGSTOP pid $kpid)"
sql -e "INSERT INTO shop.orders (item, qty) VALUES ('during-outage', 1)"
degraded() { cond $TNS shop Degraded status | grep -qx True; }
lagging() { cond $TNS shop Lagging status | grep -qx True; }
wait_until 180 "Degraded=True while Kinesis is unreachable" degraded
log "outage: Degraded=True $(cond $TNS shop Degraded reason): $(cond $TNS shop Degraded message)"
wait_until 120 "Lagging=True" lagging
log "outage: Lagging=True: $(cond $TNS shop Lagging message)"
kill -CONT "$kpid"
log "kinesalite resumed"
recovered() { cond $TNS shop Ready status | grep -qx True && cond $TNS shop Degraded status | grep -qx False; }
not_lagging() { cond $TNS shop Lagging status | grep -qx False; }
wait_until 180 "Ready=True and Degraded=False after the outage" recovered
wait_until 120 "Lagging clears" not_lagging
all_rows_arrive 120 "after the outage"
log "after the outage: Ready, not lagging, all $expected rows on the stream ($dups duplicates)"

# 4b: pause and resume by resource (issue 14): rows written while paused all arrive after.
kc -n $TNS patch bls shop --type merge -p '{"spec":{"paused":true}}'
paused() { cond $TNS shop Ready reason | grep -qx Paused && [ -z "$(kc -n $TNS get pods -l app.kubernetes.io/instance=shop -o name)" ]; }
wait_until 120 "Ready=False Paused and no publisher pod" paused
log "paused: $(cond $TNS shop Ready message)"
sql -e "INSERT INTO shop.orders (item, qty) VALUES ('while-paused', 1), ('while-paused', 2)"
kc -n $TNS patch bls shop --type merge -p '{"spec":{"paused":false}}'
wait_until 180 "Ready=True after resuming" shop_ready
all_rows_arrive 120 "after the pause"
log "resumed: all $expected rows on the stream ($dups duplicates)"

# 4c: the fence (issue 12): a second publisher of the same stream waits for the lease while
# the first runs, and streams only once the first has stopped, from its final checkpoint.
holder() { kc -n $TNS get lease bls-shop -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null; }
first=$(kc -n $TNS get pods -l app.kubernetes.io/instance=shop -o 'jsonpath={.items[0].metadata.name}')
holds_first() { [ "$(holder)" = "$first" ]; }
wait_until 60 "the publisher $first holds the lease" holds_first
kc -n $TNS get deploy bls-shop -o json | python3 -c '
import json, sys
t = json.load(sys.stdin)["spec"]["template"]
print(json.dumps({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "fence-second", "labels": {"app": "fence-second"}},
                  "spec": t["spec"]}))' | kc -n $TNS apply -f - >/dev/null
second_waits() { kc -n $TNS logs fence-second 2>/dev/null | grep -q "waiting for the publisher lease"; }
wait_until 120 "the second publisher waits for the lease" second_waits
sql -e "INSERT INTO shop.orders (item, qty) VALUES ('fence', 1)"
sleep 5
if kc -n $TNS logs fence-second | grep -q "holding the publisher lease"; then die "the second publisher took the lease while $first runs"; fi
[ "$(holder)" = "$first" ] || die "the lease moved to $(holder) while $first runs"
kc -n $TNS patch bls shop --type merge -p '{"spec":{"paused":true}}' >/dev/null  # the first drains and stops
second_holds() { [ "$(holder)" = fence-second ] && kc -n $TNS logs fence-second | grep -q "resuming from checkpoint"; }
wait_until 120 "the second publisher holds the lease once the first stopped" second_holds
sql -e "INSERT INTO shop.orders (item, qty) VALUES ('fence', 2)"
all_rows_arrive 120 "from the second publisher"
log "fence: fence-second waited while $first ran, then took the lease and resumed from its checkpoint: all $expected rows ($dups duplicates)"
kc -n $TNS delete pod fence-second --wait=true >/dev/null
kc -n $TNS patch bls shop --type merge -p '{"spec":{"paused":false}}' >/dev/null
wait_until 180 "Ready=True after the fence check" shop_ready

# 4d: snapshots by resource (issue 13) and moving the checkpoint (issue 14).
bash "$HERE/snapshot.sh"
bash "$HERE/rewind.sh"
bash "$HERE/recreate.sh"

# 5: invalid specs: what the schema can say is refused by kubectl apply itself, naming the
# field; the rest is reported by the operator, naming the field.
if out=$(kc -n $TNS apply -f - 2>&1 <<YAML
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: badport}
spec:
  source: {host: $NODE_IP, port: 70000, user: repl, passwordSecretRef: {name: shop-db-replication, key: password}}
  target: {stream: "bad stream name"}
YAML
); then die "kubectl apply accepted port 70000 and a bad stream name"; fi
echo "$out" | grep -q "spec.source.port" || die "the apply error does not name spec.source.port: $out"
echo "$out" | grep -q "spec.target.stream" || die "the apply error does not name spec.target.stream: $out"
log "rejected at apply time: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"
kc -n $TNS apply -f - <<YAML
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: badstart}
spec:
  source: {host: $NODE_IP, port: 3306, user: repl, passwordSecretRef: {name: shop-db-replication, key: password}}
  target: {stream: shop-changes}
  start: "binlog.000001:2"
---
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: nosecret}
spec:
  source: {host: $NODE_IP, port: 3306, user: repl, passwordSecretRef: {name: missing, key: password}}
  target: {stream: shop-changes}
YAML
invalid() { cond $TNS "$1" Ready reason | grep -qx InvalidSpec; }
wait_until 60 "badstart InvalidSpec" invalid badstart
wait_until 60 "nosecret InvalidSpec" invalid nosecret
log "badstart: $(cond $TNS badstart Ready message)"
log "nosecret: $(cond $TNS nosecret Ready message)"
cond $TNS badstart Ready message | grep -q "spec.start" || die "badstart message does not name spec.start"
cond $TNS nosecret Ready message | grep -q "spec.source.passwordSecretRef" || die "nosecret message does not name the field"

# 6: tenancy and privilege (issue 12). A Secret its owner did not opt in is refused and no
# pod mounts it; RBAC of the operator and of a publisher is what the README says.
kc -n $TNS apply -f - <<YAML
apiVersion: v1
kind: Secret
metadata: {name: not-opted-in}
type: Opaque
stringData: {password: replpw}
---
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: nooptin}
spec:
  source: {host: $NODE_IP, port: 3306, user: repl, passwordSecretRef: {name: not-opted-in, key: password}}
  target: {stream: shop-changes}
YAML
wait_until 60 "nooptin InvalidSpec" invalid nooptin
cond $TNS nooptin Ready message | grep -q "cdc.binlogstream.io/allow-binlogstreams" || die "nooptin message does not name the opt-in label"
log "nooptin: $(cond $TNS nooptin Ready message)"
[ -z "$(kc -n $TNS get deploy,pods -l app.kubernetes.io/instance=nooptin -o name)" ] || die "a publisher was created for a Secret without the opt-in"
can_i() { kc auth can-i "$@" 2>/dev/null || true; }
pub_sa="system:serviceaccount:$TNS:bls-shop"
op_sa="system:serviceaccount:bls-system:bls-operator"
kc auth can-i --list --as "$pub_sa" -n $TNS | tee "$STATE/publisher-can-i.txt" | sed 's/^/[e2e] publisher can: /' >&2
[ "$(can_i patch binlogstreams.cdc.binlogstream.io/shop --subresource=status --as "$pub_sa" -n $TNS)" = yes ] || die "the publisher cannot patch its own status"
[ "$(can_i get secrets --as "$pub_sa" -n $TNS)" = no ] || die "the publisher may read Secrets"
[ "$(can_i get secrets/shop-db-replication --as "$pub_sa" -n $TNS)" = no ] || die "the publisher may read its own Secret through the API"
[ "$(can_i patch binlogstreams.cdc.binlogstream.io/badstart --subresource=status --as "$pub_sa" -n $TNS)" = no ] || die "the publisher may write another stream's status"
[ "$(can_i get binlogstreams.cdc.binlogstream.io/shop --as "$pub_sa" -n $TNS)" = no ] || die "the publisher may read more than its status"
[ "$(can_i patch leases.coordination.k8s.io/bls-shop --as "$pub_sa" -n $TNS)" = yes ] || die "the publisher cannot renew its fence lease"
[ "$(can_i patch leases.coordination.k8s.io/bls-other --as "$pub_sa" -n $TNS)" = no ] || die "the publisher may patch another lease"
[ "$(can_i create leases.coordination.k8s.io --as "$pub_sa" -n $TNS)" = no ] || die "the publisher may create leases"
kc auth can-i --list --as "$op_sa" -n $TNS | sed 's/^/[e2e] operator can: /' >&2
[ "$(can_i list secrets --as "$op_sa" -n $TNS)" = no ] || die "the operator may list Secrets"
[ "$(can_i watch secrets --as "$op_sa" -n $TNS)" = no ] || die "the operator may watch Secrets"
[ "$(can_i create pods --as "$op_sa" -n $TNS)" = no ] || die "the operator may create pods"
[ "$(can_i delete deployments --as "$op_sa" -n $TNS)" = no ] || die "the operator may delete Deployments"
log "RBAC: publisher limited to its own status; operator cannot list/watch Secrets, create pods or delete"

# 7: a name longer than a label value (63): children get a hashed suffix and the stream runs.
long=shop-$(printf 'x%.0s' $(seq 1 70))
kc -n $TNS apply -f - <<YAML
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: $long}
spec:
  source: {host: $NODE_IP, port: 3306, user: repl, passwordSecretRef: {name: shop-db-replication, key: password}}
  tables: {include: ["shop.*"]}
  target: {stream: shop-changes, endpoint: "http://$NODE_IP:4567", region: us-east-1, credentialsSecretRef: {name: aws-keys}}
YAML
long_ready() { cond $TNS "$long" Ready status | grep -qx True; }
wait_until 180 "the long-named stream is Ready" long_ready
log "long name (${#long} chars): Ready; children: $(kc -n $TNS get deploy -o name | grep -c 'bls-shop-x') deployment(s)"
kc -n $TNS delete bls "$long" --wait=false

# 8: a quota that forbids the pod: the ReplicaSet's FailedCreate becomes the condition.
kc create namespace quota-e2e --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n quota-e2e apply -f - <<YAML
apiVersion: v1
kind: ResourceQuota
metadata: {name: no-pods}
spec: {hard: {pods: "0"}}
YAML
# Admission enforces a quota only once the API server's quota cache has it; a pod created in
# the moment after the quota (a failed CI run) slips through. The quota controller filling
# status.hard says the quota has been seen.
quota_known() { [ "$(kc -n quota-e2e get resourcequota no-pods -o 'jsonpath={.status.hard.pods}' 2>/dev/null)" = 0 ]; }
wait_until 60 "the quota no-pods is in force" quota_known
sleep 2
kc -n quota-e2e apply -f - <<YAML
apiVersion: v1
kind: Secret
metadata: {name: pw, labels: {cdc.binlogstream.io/allow-binlogstreams: "true"}}
type: Opaque
stringData: {password: replpw}
---
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: blocked}
spec:
  source: {host: $NODE_IP, port: 3306, user: repl, passwordSecretRef: {name: pw, key: password}}
  target: {stream: shop-changes}
YAML
quota_seen() { cond quota-e2e blocked Ready reason | grep -qx FailedCreate && cond quota-e2e blocked Degraded status | grep -qx True; }
wait_until 120 "blocked: Ready=False FailedCreate" quota_seen
log "quota: $(cond quota-e2e blocked Ready message)"
kc delete namespace quota-e2e --wait=false >/dev/null

# 8b: Kubernetes API faults while checkpoints are due (issue 11, scenario 11).
bash "$HERE/apifaults.sh"

# 8c: leader failover with two operator replicas (issue 12).
bash "$HERE/failover.sh"

# 9: API load for many streams (issue 12): CI runs 10 streams for 30 s windows; the full
# size is BLS_SCALE_STREAMS=50 BLS_SCALE_SECONDS=60.
BLS_SCALE_STREAMS=${BLS_SCALE_STREAMS:-10} BLS_SCALE_SECONDS=${BLS_SCALE_SECONDS:-30} bash "$HERE/scale.sh"

# 10: deleting the resource removes its children; uninstall removes the operator.
kc -n $TNS delete bls shop badstart nosecret nooptin
children_gone() { [ -z "$(kc -n $TNS get deploy,sa,role,rolebinding -l app.kubernetes.io/instance=shop -o name 2>/dev/null)" ]; }
wait_until 90 "children of shop garbage-collected" children_gone
kept=$(kc -n $TNS get configmap bls-shop-checkpoint -o 'jsonpath={.data.checkpoint\.json}') || die "shop's checkpoint was not kept"
log "shop deleted; its checkpoint is kept in ConfigMap bls-shop-checkpoint: $kept"
kc -n $TNS delete configmap bls-shop-checkpoint >/dev/null
hm uninstall bls -n bls-system
operator_gone() { [ -z "$(kc -n bls-system get deploy,sa,svc,role,rolebinding -l app.kubernetes.io/name=binlogstream-operator -o name 2>/dev/null)" ] && ! kc get clusterrole bls-operator >/dev/null 2>&1; }
wait_until 90 "operator objects gone" operator_gone
log "e2e passed"
