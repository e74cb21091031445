#!/usr/bin/env bash
# Snapshots by resource (issue 13), on a cluster where stream.sh runs MariaDB and kinesalite:
#   - a BinlogStream with `start: snapshot` on tables with pre-existing rows: its progress shows
#     in `kubectl get bls` (the Snapshot column) and in status.snapshot (per table: rows done,
#     estimated, started/finished), Snapshotting=True then False; every pre-existing row and every
#     row written during and after the snapshot arrives on the stream;
#   - an on-demand snapshot of one table (spec.snapshot): its rows arrive again, the request is
#     Completed in status.snapshotRequest with one SnapshotRequestCompleted Event, and a restarted
#     publisher does not run it again.
#   bash tests/cluster/snapshot.sh      (e2e.sh calls it; BLS_SNAPSHOT_ROWS sets the table size)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"
. "$HERE/requests-lib.sh"

TNS=shop
NAME=snap
STREAM=snap-changes
ROWS=${BLS_SNAPSHOT_ROWS:-60000}

sql <<EOF
DROP DATABASE IF EXISTS snap;
CREATE DATABASE snap CHARACTER SET utf8mb4;
CREATE TABLE snap.items (id INT PRIMARY KEY, name VARCHAR(40), qty INT);
CREATE TABLE snap.small (id INT PRIMARY KEY, label VARCHAR(20));
INSERT INTO snap.items SELECT seq, CONCAT('item-', seq), seq % 97 FROM snap.seq_1_to_$ROWS;
INSERT INTO snap.small SELECT seq, CONCAT('s-', seq) FROM snap.seq_1_to_50;
ANALYZE TABLE snap.items, snap.small;
EOF
log "snap.items: $(sql -N -e 'SELECT COUNT(*) FROM snap.items') rows, snap.small: 50 rows before the stream exists"
create_stream $STREAM
apply_stream $TNS $NAME $STREAM 'snap.*' snapshot

# A writer keeps inserting while the snapshot runs.
( for i in $(seq 1 60); do sql -e "INSERT INTO snap.items VALUES ($((ROWS + i)), 'during', $i)"; sleep 0.5; done ) &
writer=$!

saw_running=""
end=$((SECONDS + 300))
while :; do
  line=$(kc -n $TNS get bls $NAME --no-headers 2>/dev/null || true)
  state=$(field $TNS $NAME '{.status.snapshot.state}')
  if [ "$state" = Running ] && [ -z "$saw_running" ] && echo "$line" | grep -q "Running"; then
    saw_running=$line
    log "kubectl get bls while snapshotting:"
    kc -n $TNS get bls $NAME >&2
    log "status.snapshot: $(field $TNS $NAME '{.status.snapshot}')"
    snapshotting() { [ "$(cond $TNS $NAME Snapshotting status)" = True ]; }
    wait_until 10 "Snapshotting=True while status.snapshot says Running" snapshotting
    log "Snapshotting: $(cond $TNS $NAME Snapshotting status) $(cond $TNS $NAME Snapshotting reason): $(cond $TNS $NAME Snapshotting message)"
  fi
  [ "$state" = Done ] && break
  [ "$SECONDS" -lt "$end" ] || die "the snapshot did not finish in 300s (status.snapshot: $(field $TNS $NAME '{.status.snapshot}'))"
  sleep 1
done
wait "$writer"
[ -n "$saw_running" ] || die "never saw the snapshot Running in kubectl get bls"
kc -n $TNS get bls $NAME >&2
log "status.snapshot when done: $(field $TNS $NAME '{.status.snapshot}')"
items_done=$(field $TNS $NAME '{.status.snapshot.tables[?(@.table=="snap.items")].rowsDone}')
items_est=$(field $TNS $NAME '{.status.snapshot.tables[?(@.table=="snap.items")].rowsEstimated}')
items_fin=$(field $TNS $NAME '{.status.snapshot.tables[?(@.table=="snap.items")].finishedAt}')
[ "${items_done:-0}" -ge "$ROWS" ] || die "status says $items_done rows of snap.items done, expected at least $ROWS"
[ "${items_est:-0}" -gt 0 ] && [ -n "$items_fin" ] || die "no estimate or finish time for snap.items in status"
snap_done() { [ "$(cond $TNS $NAME Snapshotting reason)" = SnapshotDone ]; }
wait_until 60 "Snapshotting=False SnapshotDone" snap_done

sql -e "INSERT INTO snap.items VALUES ($((ROWS + 1000)), 'after', 1), ($((ROWS + 1001)), 'after', 2)"
want_items=$(sql -N -e "SELECT COUNT(*) FROM snap.items")
end=$((SECONDS + 180))
while :; do
  stats=$(stream_stats $STREAM)
  got_items=$(echo "$stats" | awk '$1 == "items" { print $3 }')
  got_small=$(echo "$stats" | awk '$1 == "small" { print $3 }')
  [ "${got_items:-0}" -ge "$want_items" ] && [ "${got_small:-0}" -ge 50 ] && break
  [ "$SECONDS" -lt "$end" ] || die "only ${got_items:-0} of $want_items items and ${got_small:-0} of 50 small rows on $STREAM"
  sleep 3
done
log "start: snapshot — on the stream (table records distinct snapshot-marked): $(echo "$stats" | tr '\n' ';')"
log "all $want_items rows of snap.items (pre-existing $ROWS + written during and after) and 50 of snap.small arrived"
small_snap_before=$(echo "$stats" | awk '$1 == "small" { print $4 }')

# On demand: snap.small again, once.
kc -n $TNS patch bls $NAME --type merge -p '{"spec":{"snapshot":{"requestId":"resnap-1","tables":["snap.small"]}}}'
completed() { [ "$(field $TNS $NAME '{.status.snapshotRequest.phase}')" = Completed ]; }
wait_until 240 "status.snapshotRequest Completed" completed
log "status.snapshotRequest: $(field $TNS $NAME '{.status.snapshotRequest}')"
end=$((SECONDS + 120))
while :; do
  small_snap=$(stream_stats $STREAM | awk '$1 == "small" { print $4 }')
  [ "${small_snap:-0}" -ge $((small_snap_before + 50)) ] && break
  [ "$SECONDS" -lt "$end" ] || die "the on-demand snapshot published $((small_snap - small_snap_before)) of 50 rows of snap.small"
  sleep 3
done
log "on demand: $((small_snap - small_snap_before)) snapshot rows of snap.small arrived again ($small_snap snapshot rows of it in all)"
ev=$(events_of $TNS $NAME SnapshotRequestCompleted)
log "SnapshotRequestCompleted events: $ev"
[ "$(echo "$ev" | grep -c .)" = 1 ] || die "expected one SnapshotRequestCompleted Event, found: $ev"

# Never again: a restarted publisher keeps the completed id (status.checkpoint.snapshot.completed).
log "checkpoint's completed requests: $(field $TNS $NAME '{.status.checkpoint.snapshot.completed}')"
old_pod=$(kc -n $TNS get pods -l app.kubernetes.io/instance=$NAME -o name)
kc -n $TNS delete pod -l app.kubernetes.io/instance=$NAME --wait=true >/dev/null
new_ready() { p=$(kc -n $TNS get pods -l app.kubernetes.io/instance=$NAME -o name); [ -n "$p" ] && [ "$p" != "$old_pod" ] && kc -n $TNS wait --for=condition=Ready "$p" --timeout=5s >/dev/null; }
wait_until 180 "a new publisher pod Ready after the restart" new_ready
sleep 15
again=$(stream_stats $STREAM | awk '$1 == "small" { print $4 }')
[ "$again" = "$small_snap" ] || die "snap.small snapshot rows went from $small_snap to $again after a restart: the completed request ran again"
[ "$(echo "$(events_of $TNS $NAME SnapshotRequestCompleted)" | grep -c .)" = 1 ] || die "a second SnapshotRequestCompleted Event"
[ "$(field $TNS $NAME '{.status.snapshotRequest.phase}')" = Completed ] || die "snapshotRequest no longer Completed"
log "restarted publisher: the completed request did not run again ($again snapshot rows of snap.small)"
kc -n $TNS delete bls $NAME --wait=false >/dev/null
log "snapshot checks passed"
