#!/usr/bin/env bash
# A checkpoint that survives (issue 12), on a cluster where stream.sh runs MariaDB and kinesalite:
#   1. delete and recreate: deleting BinlogStream `rc` stops its publisher and keeps its final
#      checkpoint in ConfigMap bls-rc-checkpoint (Event CheckpointRetained). Rows written while
#      no stream exists arrive once the stream is created again under the same name, although
#      its spec says `start: latest`; the rows before the deletion do not arrive again;
#      status.restoredCheckpoint and a CheckpointRestored Event say so; the ConfigMap is gone.
#   2. a source host change: a second MariaDB (a GTID replica of the first, server id 2, on
#      another address) becomes spec.source.host. The publisher sees another server, resumes by
#      the checkpoint's GTIDs (never its file:pos, which means nothing there), and every row
#      written around the switch arrives exactly once.
#   bash tests/cluster/recreate.sh      (e2e.sh calls it)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"
. "$HERE/requests-lib.sh"

TNS=shop
NAME=rc
STREAM=rc-changes
CM=bls-$NAME-checkpoint
HOST2=10.96.0.253   # the second server's own address, on the namespace's lo beside $NODE_IP
MDB2="$STATE/mariadb2"
sql2() { mariadb --no-defaults -uroot --socket="$MDB2/sock" "$@"; }

cleanup() {
  local p
  if p=$(live_pid mariadb2); then kill -TERM "$p"; for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; fi
  rm -f "$STATE/pids/mariadb2"; rm -rf "$MDB2"
  in_cluster_net ip addr del "$HOST2/32" dev lo 2>/dev/null || true
}
trap cleanup EXIT

events_stream rc $NAME $STREAM
ready() { [ "$(cond $TNS $NAME Ready status)" = True ]; }
field $TNS $NAME '{.metadata.finalizers}' | grep -q 'cdc.binlogstream.io/retain-checkpoint' ||
  die "no retain-checkpoint finalizer on $NAME: $(field $TNS $NAME '{.metadata.finalizers}')"


# 1. Delete and recreate.
sql -e "INSERT INTO rc.events SELECT seq, 'before' FROM rc.seq_1_to_20"
wait_until 120 "rows 1-20 on the stream" arrived 1 20
t0=$SECONDS
kc -n $TNS delete bls $NAME --timeout=180s >/dev/null || die "deleting $NAME did not finish"
log "deleted $NAME in $((SECONDS - t0)) s"
kept=$(kc -n $TNS get configmap $CM -o 'jsonpath={.data.checkpoint\.json}' 2>/dev/null) || die "no ConfigMap $CM after the deletion"
[ -n "$kept" ] || die "ConfigMap $CM holds no checkpoint"
log "kept in $CM: $kept"
[ -z "$(kc -n $TNS get configmap $CM -o 'jsonpath={.metadata.ownerReferences}')" ] || die "$CM has an owner: the garbage collector would remove it"
ev=$(events_of $TNS $NAME CheckpointRetained); log "CheckpointRetained event: $ev"
[ -n "$ev" ] || die "no CheckpointRetained Event"
# The deletion finished only once no publisher pod was left; the garbage collector then
# removes the children.
[ -z "$(kc -n $TNS get pods -l app.kubernetes.io/instance=$NAME -o name)" ] || die "a publisher pod outlived the deletion"
gone() { [ -z "$(kc -n $TNS get deploy,sa,role,rolebinding -l app.kubernetes.io/instance=$NAME -o name 2>/dev/null)" ]; }
wait_until 90 "children of $NAME garbage-collected" gone

sql -e "INSERT INTO rc.events SELECT seq, 'gap' FROM rc.seq_21_to_40"   # no stream exists now
apply_stream $TNS $NAME $STREAM 'rc.*' latest
restored() { [ -n "$(field $TNS $NAME '{.status.restoredCheckpoint.position}')" ]; }
wait_until 60 "$NAME records the checkpoint it took over" restored
log "status.restoredCheckpoint: $(field $TNS $NAME '{.status.restoredCheckpoint}')"
wait_until 180 "$NAME Ready again" ready
wait_until 120 "rows 21-40 (written while no stream existed) on the stream" arrived 21 40
sleep 5
before=$(count_of 1 20); gap=$(count_of 21 40)
log "recreated with start: latest: rows 1-20 records $before (20 expected), rows 21-40 records $gap (20 expected)"
[ "$before" = 20 ] || die "rows from before the deletion arrived again ($before records)"
[ "$gap" = 20 ] || die "rows written while no stream existed: $gap records, 20 expected"
ev=$(events_of $TNS $NAME CheckpointRestored); log "CheckpointRestored event: $ev"
[ -n "$ev" ] || die "no CheckpointRestored Event"
! kc -n $TNS get configmap $CM >/dev/null 2>&1 || die "ConfigMap $CM still there after the stream took it over"

# 2. A source host change to a GTID replica on another address.
in_cluster_net ip addr add "$HOST2/32" dev lo
rm -rf "$MDB2"; mkdir -p "$MDB2"
tpl=$(ls -d "$CACHE"/mariadb-template-* 2>/dev/null | head -n 1 || true)
if [ -n "$tpl" ]; then cp -a "$tpl" "$MDB2/data"; else
  mariadb-install-db --no-defaults --datadir="$MDB2/data" --user=root --auth-root-authentication-method=normal >/dev/null
fi
start mariadb2 mariadbd --no-defaults --datadir="$MDB2/data" --user=root --port=3306 \
  --bind-address="$HOST2" --socket="$MDB2/sock" --log-bin="$MDB2/data/binlog" --binlog-format=ROW \
  --server-id=2 --log-slave-updates --binlog-row-metadata=FULL --character-set-server=utf8mb4
wait_for mariadb2 30 sql2 -e 'SELECT 1'
sql2 -e "CHANGE MASTER TO master_host='$NODE_IP', master_port=3306, master_user='repl', master_password='replpw', master_use_gtid=slave_pos; START SLAVE"
caught_up() { [ "$(sql2 -N -e "SELECT MASTER_GTID_WAIT('$(sql -N -e 'SELECT @@gtid_binlog_pos')', 5)")" = 0 ]; }
wait_until 180 "the replica on $HOST2 caught up with $NODE_IP" caught_up
log "replica on $HOST2 (server id 2) follows $NODE_IP by GTID"

sql -e "INSERT INTO rc.events SELECT seq, 'primary' FROM rc.seq_41_to_50"
wait_until 120 "rows 41-50 on the stream" arrived 41 50
cp_before=$(field $TNS $NAME '{.status.checkpoint}')
log "checkpoint on the first server: $cp_before"
kc -n $TNS patch bls $NAME --type merge -p "{\"spec\":{\"source\":{\"host\":\"$HOST2\"}}}" >/dev/null
sql -e "INSERT INTO rc.events SELECT seq, 'switch' FROM rc.seq_51_to_60"   # while the publisher rolls
on_second() { field $TNS $NAME '{.status.checkpoint.source.host}' | grep -q "@$HOST2:"; }
wait_until 180 "the checkpoint names the server on $HOST2" on_second
wait_until 120 "rows 51-60 on the stream" arrived 51 60
sql -e "INSERT INTO rc.events SELECT seq, 'after' FROM rc.seq_61_to_70"
wait_until 120 "rows 61-70 on the stream" arrived 61 70
sleep 5
pod=$(kc -n $TNS get pods -l app.kubernetes.io/instance=$NAME -o 'jsonpath={.items[0].metadata.name}')
kc -n $TNS logs "$pod" | grep -q "resuming by its GTIDs" || die "the publisher on $HOST2 did not say it resumed by GTID"
[ "$(field $TNS $NAME '{.status.checkpoint.source.serverId}')" = 2 ] || die "the checkpoint does not name server id 2"
total=$(count_of 41 70)
log "host change $NODE_IP -> $HOST2: resumed by GTID; rows 41-70 records $total (30 expected); checkpoint now $(field $TNS $NAME '{.status.checkpoint.source}')"
[ "$total" = 30 ] || die "rows 41-70 around the host change: $total records, 30 expected (lost or repeated)"
[ "$(cond $TNS $NAME Ready status)" = True ] || die "not Ready after the host change: $(cond $TNS $NAME Ready reason)"

kc -n $TNS delete bls $NAME --timeout=180s >/dev/null
kc -n $TNS delete configmap $CM --ignore-not-found >/dev/null
log "recreate and host-change checks passed"
