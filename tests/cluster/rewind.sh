#!/usr/bin/env bash
# Moving the checkpoint by resource (issue 14, spec.checkpointRequest), on a cluster where
# stream.sh runs MariaDB and kinesalite:
#   - a rewind to an earlier FILE:POS: applied once, old and new positions in
#     status.checkpointRequest and a CheckpointRewound Event; the rows after it arrive again
#     (counted), those before it do not;
#   - a skip ahead without acknowledgeSkip: refused (Ready=False SkipNotAcknowledged, a Warning
#     Event, the checkpoint unchanged); with it: applied, a CheckpointSkippedAhead Event that
#     says the changes are skipped on purpose, and the skipped rows never arrive.
#   bash tests/cluster/rewind.sh      (e2e.sh calls it)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"
. "$HERE/requests-lib.sh"

TNS=shop
NAME=rw
STREAM=rw-changes

events_stream rw $NAME $STREAM
ready() { [ "$(cond $TNS $NAME Ready status)" = True ]; }
p0=$(field $TNS $NAME '{.status.checkpoint.display}')

moved_from() { local d; d=$(field $TNS $NAME '{.status.checkpoint.display}'); [ -n "$d" ] && [ "$d" != "$1" ]; }

sql -e "INSERT INTO rw.events SELECT seq, 'first' FROM rw.seq_1_to_20"
wait_until 120 "rows 1-20 on the stream" arrived 1 20
wait_until 60 "the checkpoint moves past the first 20 rows" moved_from "$p0"
p1=$(field $TNS $NAME '{.status.checkpoint.display}')
log "checkpoint after rows 1-20: $p1"
for b in 0 1 2; do sql -e "INSERT INTO rw.events SELECT seq, 'second' FROM rw.seq_$((21 + b * 10))_to_$((30 + b * 10))"; done
wait_until 120 "rows 21-50 on the stream" arrived 21 50
wait_until 60 "the checkpoint moves past rows 21-50" moved_from "$p1"
log "checkpoint after rows 21-50: $(field $TNS $NAME '{.status.checkpoint.display}')"
before_second=$(count_of 21 50)
before_first=$(count_of 1 20)

# 1. Rewind to p1: rows 21-50 arrive again, rows 1-20 do not.
kc -n $TNS patch bls $NAME --type merge -p "{\"spec\":{\"checkpointRequest\":{\"requestId\":\"rw-back\",\"to\":\"$p1\"}}}"
applied() { [ "$(field $TNS $NAME '{.status.checkpointRequest.requestId}')" = "$1" ] && [ "$(field $TNS $NAME '{.status.checkpointRequest.phase}')" = Applied ]; }
wait_until 180 "rw-back Applied" applied rw-back
log "status.checkpointRequest: $(field $TNS $NAME '{.status.checkpointRequest}')"
[ "$(field $TNS $NAME '{.status.checkpointRequest.direction}')" = Rewind ] || die "direction is not Rewind"
[ -n "$(field $TNS $NAME '{.status.checkpointRequest.from}')" ] || die "no old position recorded"
ev=$(events_of $TNS $NAME CheckpointRewound); log "CheckpointRewound event: $ev"
[ "$(echo "$ev" | grep -c .)" = 1 ] || die "expected one CheckpointRewound Event: $ev"
again() { [ "$(count_of 21 50)" -ge $((before_second + 30)) ]; }
wait_until 180 "rows 21-50 arrive again" again
wait_until 120 "Ready after the rewind" ready
sleep 5
after_second=$(count_of 21 50); after_first=$(count_of 1 20)
log "rewind to $p1: rows 21-50 records $before_second -> $after_second (+$((after_second - before_second)), 30 expected); rows 1-20 records $before_first -> $after_first"
[ "$after_first" = "$before_first" ] || die "rows before the rewind position arrived again ($before_first -> $after_first)"
# Applied once: a later reconcile (the publisher moved on since) does not move it back again.
sql -e "INSERT INTO rw.events VALUES (51, 'third')"
wait_until 60 "row 51" arrived 51 51
sleep 12
[ "$(count_of 21 50)" = "$after_second" ] || die "rows 21-50 were replayed a second time"
[ "$(echo "$(events_of $TNS $NAME CheckpointRewound)" | grep -c .)" = 1 ] || die "a second CheckpointRewound Event"

# 2. Skip ahead: pause, write rows, ask for the binlog end without the acknowledgement.
kc -n $TNS patch bls $NAME --type merge -p '{"spec":{"paused":true}}'
stopped() { [ "$(cond $TNS $NAME Ready reason)" = Paused ] && [ -z "$(kc -n $TNS get pods -l app.kubernetes.io/instance=$NAME -o name)" ]; }
wait_until 120 "$NAME paused, no pod" stopped
held=$(field $TNS $NAME '{.status.checkpoint.display}')
sql -e "INSERT INTO rw.events SELECT seq, 'skipped' FROM rw.seq_52_to_61"
end=$(sql -N -e "SHOW MASTER STATUS" | awk '{ print $1 ":" $2 }')
log "paused at $held; rows 52-61 written; binlog end $end"
kc -n $TNS patch bls $NAME --type merge -p "{\"spec\":{\"checkpointRequest\":{\"requestId\":\"rw-skip\",\"to\":\"$end\"}}}"
refused() { [ "$(cond $TNS $NAME Ready reason)" = SkipNotAcknowledged ]; }
wait_until 60 "Ready=False SkipNotAcknowledged" refused
log "refused: Ready=$(cond $TNS $NAME Ready status) $(cond $TNS $NAME Ready reason): $(cond $TNS $NAME Ready message)"
[ "$(field $TNS $NAME '{.status.checkpointRequest.phase}')" = Refused ] || die "checkpointRequest not Refused"
sleep 5
[ "$(field $TNS $NAME '{.status.checkpoint.display}')" = "$held" ] || die "the checkpoint changed although the skip was refused"
[ -n "$(events_of $TNS $NAME SkipNotAcknowledged)" ] || die "no SkipNotAcknowledged Event"
kc -n $TNS patch bls $NAME --type merge -p '{"spec":{"checkpointRequest":{"acknowledgeSkip":true}}}'
wait_until 120 "rw-skip Applied" applied rw-skip
log "status.checkpointRequest: $(field $TNS $NAME '{.status.checkpointRequest}')"
[ "$(field $TNS $NAME '{.status.checkpointRequest.direction}')" = SkipAhead ] || die "direction is not SkipAhead"
[ "$(field $TNS $NAME '{.status.checkpoint.display}')" = "$end" ] || die "the checkpoint is not $end"
ev=$(events_of $TNS $NAME CheckpointSkippedAhead); log "CheckpointSkippedAhead event: $ev"
echo "$ev" | grep -q "skipped on purpose" || die "the skip Event does not say the changes are skipped on purpose: $ev"
kc -n $TNS patch bls $NAME --type merge -p '{"spec":{"paused":false}}'
wait_until 180 "Ready after resuming" ready
sql -e "INSERT INTO rw.events SELECT seq, 'after-skip' FROM rw.seq_62_to_66"
wait_until 120 "rows 62-66 on the stream" arrived 62 66
sleep 3
skipped=$(count_of 52 61)
[ "$skipped" = 0 ] || die "$skipped records of the skipped rows 52-61 arrived"
log "skip ahead to $end: rows 52-61 skipped (0 records), rows 62-66 arrived"
kc -n $TNS delete bls $NAME --wait=false >/dev/null
log "rewind checks passed"
