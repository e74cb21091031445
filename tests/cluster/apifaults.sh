#!/usr/bin/env bash
# Issue 11, scenario 11 on the real local cluster: Kubernetes API faults while status
# checkpoints are due, with a writer inserting rows steadily into shop.orders (the `shop`
# BinlogStream stream.sh created). Three faults, BLS_APIFAULT_SECONDS (30) each:
#   a) every status write answered 500: a ValidatingWebhookConfiguration on
#      binlogstreams/status (namespace shop) whose service does not exist, failurePolicy Fail;
#   b) every status write hangs: the webhook points at a listener that accepts TCP and never
#      answers, timeoutSeconds above the publisher's 10 s call timeout;
#   c) kube-apiserver killed (SIGKILL by its PID) and started again with up.sh's arguments.
# For each it checks: rows reach Kinesis DURING the fault; the publisher pod neither restarts
# nor is replaced; its metrics count the failed status writes and
# binlogstream_checkpoint_store_failing is 1; /readyz stays 200 and names the store problem;
# RSS stays within a bound; after the fault status.checkpoint reaches the source's position at
# the fault's end within BLS_APIFAULT_CATCHUP (45) seconds; every row written arrives. One
# table line per fault (the README's fault-matrix format).
#   bash tests/cluster/apifaults.sh        # after up.sh, images.sh, smoke.sh, stream.sh
set -euo pipefail
. "$(dirname "$0")/common.sh"
use_existing && die "apifaults.sh stops the local API server: local cluster only"

TNS=shop
BLS=shop
STREAM=shop-changes
KINESIS="http://$NODE_IP:4567"
PY="$CACHE/pyrepl-1.0.17/bin/python"
MDB="$STATE/mariadb"
METRICS_PORT=9464
FAULT_SECONDS=${BLS_APIFAULT_SECONDS:-30}
CATCHUP_LIMIT=${BLS_APIFAULT_CATCHUP:-45}
# Memory bound: the publisher's RSS at any probe stays under RSS_LIMIT_KIB, and grows by at most
# RSS_GROWTH_KIB over one fault (queued checkpoints are replaced, never accumulated).
RSS_LIMIT_KIB=${BLS_APIFAULT_RSS_KIB:-131072}
RSS_GROWTH_KIB=${BLS_APIFAULT_RSS_GROWTH_KIB:-16384}
WEBHOOK=bls-apifault
CTR=(ctr --address "$STATE/containerd/containerd.sock" -n k8s.io)
sql() { mariadb --no-defaults -uroot --socket="$MDB/sock" "$@"; }
[ "${FAULT_SECONDS}" -ge 20 ] || die "BLS_APIFAULT_SECONDS must be at least 20 (a status checkpoint is due every 10 s)"

RESULTS=()
WRITER_PID=""
cleanup_faults() {
  if [ -n "$WRITER_PID" ]; then rm -f "$STATE/apifault-writing"; wait "$WRITER_PID" 2>/dev/null || true; WRITER_PID=""; fi
  if ! live_pid kube-apiserver >/dev/null; then
    log "cleanup: starting kube-apiserver again"
    start_apiserver
    wait_for kube-apiserver 60 kc get --raw /readyz
  fi
  kc delete validatingwebhookconfiguration "$WEBHOOK" --ignore-not-found >/dev/null 2>&1 || true
  kc label namespace "$TNS" bls-apifault- >/dev/null 2>&1 || true
  if p=$(live_pid apifault-blackhole); then kill "$p" 2>/dev/null || true; rm -f "$STATE/pids/apifault-blackhole"; fi
}
trap cleanup_faults EXIT

# --- probes ------------------------------------------------------------------------------------------
POD="" POD_IP="" RESTARTS="" CID=""
pod_info() {  # sets POD POD_IP RESTARTS CID for the one live publisher pod
  local line
  line=$(kc -n $TNS get pods -l app.kubernetes.io/instance=$BLS -o 'jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].containerID}{"\n"}{end}')
  [ "$(echo "$line" | grep -c .)" = 1 ] || die "expected one publisher pod, got: $line"
  read -r POD POD_IP RESTARTS CID <<<"$line"
  CID=${CID#containerd://}
}
scrape() { in_cluster_net curl -sf --max-time 3 "http://$POD_IP:$METRICS_PORT/metrics"; }
metric() {  # name [scrape text]: value of an unlabelled sample
  awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print "missing" }' <<<"$2"
}
readyz() { in_cluster_net curl -s --max-time 3 -w ' HTTP %{http_code}' "http://$POD_IP:$METRICS_PORT/readyz" | tr '\n' ' '; }
publisher_pid() { "${CTR[@]}" tasks ls 2>/dev/null | awk -v id="$CID" '$1 == id { print $2 }'; }
RSS="" HWM=""
check_rss() {  # label: sets RSS and HWM (KiB), dies over the bound
  local pid; pid=$(publisher_pid)
  [ -n "$pid" ] || die "$1: no containerd task for container $CID"
  read -r RSS HWM < <(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { print r, h }' "/proc/$pid/status")
  [ -n "$RSS" ] || die "$1: no VmRSS for pid $pid"
  [ "$RSS" -le "$RSS_LIMIT_KIB" ] || die "$1: publisher RSS $RSS KiB over the bound $RSS_LIMIT_KIB KiB"
}
checkpoint() { kc -n $TNS get bls $BLS -o 'jsonpath={.status.checkpoint.file} {.status.checkpoint.position}'; }
source_position() { sql -N -e "SHOW MASTER STATUS" | awk '{ print $1, $2 }'; }
pos_ge() {  # file1 pos1 file2 pos2: true when (file1, pos1) >= (file2, pos2)
  local n1=${1##*.} n2=${3##*.}
  [ "$((10#$n1))" -gt "$((10#$n2))" ] || { [ "$((10#$n1))" -eq "$((10#$n2))" ] && [ "$2" -ge "$4" ]; }
}
# Reads the whole stream; with the ids of one phase on stdin prints
# "committed missing duplicates records_on_stream" for them.
cat >"$STATE/apifault-count.py" <<'PY'
import boto3, json, sys, collections
k = boto3.client('kinesis', endpoint_url=sys.argv[1])
it = k.get_shard_iterator(StreamName=sys.argv[2], ShardId='shardId-000000000000', ShardIteratorType='TRIM_HORIZON')['ShardIterator']
seen = collections.Counter()
total = 0
while True:
    r = k.get_records(ShardIterator=it, Limit=10000)
    for x in r['Records']:
        d = json.loads(x['Data'])
        total += 1
        if d.get('type') == 'WriteRowsEvent':
            seen[d['row']['values']['id']] += 1
    if not r['Records']:
        break
    it = r['NextShardIterator']
want = [int(l) for l in sys.stdin if l.strip()]
missing = sum(1 for i in want if seen[i] == 0)
dups = sum(seen[i] - 1 for i in want if seen[i] > 1)
print(len(want), missing, dups, total)
PY
stream_count() {  # item: committed missing dups total, for the rows written with that item
  sql -N -e "SELECT id FROM shop.orders WHERE item = '$1'" |
    in_cluster_net env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
      "$PY" "$STATE/apifault-count.py" "$KINESIS" "$STREAM"
}
start_writer() {  # item: one autocommitted row about every 0.1 s until stop_writer
  touch "$STATE/apifault-writing"
  ( i=0; while [ -e "$STATE/apifault-writing" ]; do
      i=$((i + 1)); sql -e "INSERT INTO shop.orders (item, qty) VALUES ('$1', $i)" || true; sleep 0.1
    done ) &
  WRITER_PID=$!
}
stop_writer() { rm -f "$STATE/apifault-writing"; wait "$WRITER_PID" || true; WRITER_PID=""; }

# --- faults ------------------------------------------------------------------------------------------
webhook() {  # clientConfig (YAML flow map) timeoutSeconds
  kc label namespace "$TNS" bls-apifault=on --overwrite >/dev/null
  kc apply -f - >/dev/null <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: $WEBHOOK}
webhooks:
  - name: status.apifault.binlogstream.io
    rules:
      - {apiGroups: [cdc.binlogstream.io], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: [binlogstreams/status], scope: Namespaced}
    namespaceSelector: {matchLabels: {bls-apifault: "on"}}
    clientConfig: $1
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
    timeoutSeconds: $2
YAML
}
no_webhook() {
  kc delete validatingwebhookconfiguration "$WEBHOOK" >/dev/null
  kc label namespace "$TNS" bls-apifault- >/dev/null
}
inject_500() { webhook '{service: {namespace: shop, name: no-such-webhook, path: /validate}}' 5; }
clear_500() { no_webhook; }
inject_hang() {
  rm -f "$STATE/apifault-blackhole.port"
  start apifault-blackhole python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0)); s.listen(64)
open(sys.argv[2] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
held = []
while True:
    c, _ = s.accept(); held.append(c)   # accepted, never answered (not even the TLS hello)
' "$NODE_IP" "$STATE/apifault-blackhole.port"
  for _ in $(seq 1 50); do [ -s "$STATE/apifault-blackhole.port" ] && break; sleep 0.1; done
  [ -s "$STATE/apifault-blackhole.port" ] || die "the black-hole listener did not start"
  webhook "{url: \"https://$NODE_IP:$(cat "$STATE/apifault-blackhole.port")/validate\"}" 20
}
clear_hang() {
  no_webhook
  local p; p=$(live_pid apifault-blackhole) && kill "$p"; rm -f "$STATE/pids/apifault-blackhole"
}
inject_apiserver() {
  local p; p=$(live_pid kube-apiserver) || die "kube-apiserver is not running"
  kill -KILL "$p"
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$p" 2>/dev/null || die "kube-apiserver (pid $p) did not exit"
  log "kube-apiserver (pid $p) killed"
}
clear_apiserver() {
  mv "$STATE/logs/kube-apiserver.log" "$STATE/logs/kube-apiserver.before-apifault.log"
  start_apiserver
  wait_for kube-apiserver 60 kc get --raw /readyz
  log "kube-apiserver started again (pid $(cat "$STATE/pids/kube-apiserver"))"
}

run_fault() {  # id label inject clear api_up_during(0|1)
  local id=$1 label=$2 inject=$3 clear=$4 api_up=$5 item="apifault-$1"
  pod_info
  local pod0=$POD restarts0=$RESTARTS m0 fail0 rss0 hwm0
  m0=$(scrape); fail0=$(metric binlogstream_checkpoint_store_failures_total "$m0")
  check_rss "$id before"; rss0=$RSS; hwm0=$HWM
  start_writer "$item"
  sleep 5
  local cp0; cp0=$(checkpoint)
  log "$id: $label for ${FAULT_SECONDS}s (pod $POD at $POD_IP, checkpoint $cp0, RSS $rss0 KiB)"
  "$inject"
  local t0=$SECONDS
  sleep 3
  local on1; on1=$(stream_count "$item" | awk '{ print $1 - $2 }')
  sleep $((FAULT_SECONDS - 8))
  local on2 m1 failing fail1 ready rss1 hwm1 cp1="(API down)"
  on2=$(stream_count "$item" | awk '{ print $1 - $2 }')
  m1=$(scrape); failing=$(metric binlogstream_checkpoint_store_failing "$m1")
  fail1=$(metric binlogstream_checkpoint_store_failures_total "$m1")
  ready=$(readyz)
  check_rss "$id during"; rss1=$RSS; hwm1=$HWM
  [ "$api_up" = 1 ] && cp1=$(checkpoint)
  log "$id during: rows on the stream $on1 -> $on2; store_failing=$failing failures $fail0 -> $fail1; readyz: $ready; checkpoint $cp1; RSS $rss1 KiB"
  [ "$on2" -gt "$on1" ] || die "$id: no row reached Kinesis during the fault ($on1 -> $on2)"
  [ "$failing" = 1 ] || die "$id: binlogstream_checkpoint_store_failing is $failing during the fault"
  [ "$fail1" -gt "$fail0" ] || die "$id: no failed status write counted ($fail0 -> $fail1)"
  case "$ready" in *"checkpoint store failing"*"HTTP 200") ;; *) die "$id: /readyz during the fault: $ready" ;; esac
  [ "$api_up" = 0 ] || [ "$cp1" = "$cp0" ] || log "$id: note: the checkpoint moved during the fault ($cp0 -> $cp1)"
  local left=$((FAULT_SECONDS - (SECONDS - t0)))
  [ "$left" -le 0 ] || sleep "$left"
  "$clear"
  local target t1=$SECONDS
  target=$(source_position)
  log "$id: fault cleared after $((t1 - t0))s; source at $target"
  local end=$((SECONDS + CATCHUP_LIMIT)) cp
  # shellcheck disable=SC2086
  until cp=$(checkpoint 2>/dev/null) && [ -n "${cp// /}" ] && pos_ge $cp $target; do
    [ "$SECONDS" -lt "$end" ] || die "$id: status.checkpoint ($cp) did not reach $target within ${CATCHUP_LIMIT}s"
    sleep 1
  done
  local catchup=$((SECONDS - t1))
  sleep 3
  stop_writer
  local committed missing dups
  end=$((SECONDS + 60))
  while :; do
    read -r committed missing dups _ < <(stream_count "$item")
    [ "$missing" = 0 ] && break
    [ "$SECONDS" -lt "$end" ] || die "$id: $missing of $committed rows never reached the stream"
    sleep 2
  done
  pod_info
  [ "$POD" = "$pod0" ] || die "$id: the publisher pod was replaced ($pod0 -> $POD)"
  [ "$RESTARTS" = "$restarts0" ] || die "$id: the publisher restarted ($restarts0 -> $RESTARTS)"
  local m2 rss2 hwm2 ready2
  m2=$(scrape)
  check_rss "$id after"; rss2=$RSS; hwm2=$HWM
  [ "$((rss2 - rss0))" -le "$RSS_GROWTH_KIB" ] || die "$id: RSS grew by $((rss2 - rss0)) KiB over the fault (bound $RSS_GROWTH_KIB KiB)"
  end=$((SECONDS + 20))
  until [ "$(metric binlogstream_checkpoint_store_failing "$(scrape)")" = 0 ]; do
    [ "$SECONDS" -lt "$end" ] || die "$id: binlogstream_checkpoint_store_failing still 1 after the checkpoint caught up"
    sleep 1
  done
  ready2=$(readyz)
  case "$ready2" in "ready  HTTP 200") ;; *) die "$id: /readyz after the fault: $ready2" ;; esac
  local degraded; degraded=$(kc -n $TNS get bls $BLS -o 'jsonpath={.status.conditions[?(@.type=="Degraded")].status}')
  log "$id after: checkpoint $(checkpoint) (caught up ${catchup}s after the fault); $committed rows, $missing lost, $dups duplicates; restarts $RESTARTS; RSS $rss0 -> $rss2 KiB (peak $hwm2); failures counted $(metric binlogstream_checkpoint_store_failures_total "$m2"); Degraded=$degraded"
  RESULTS+=("| 11$id $label | 1 | $committed | $missing | $dups | 0 | rows on Kinesis during the fault ($on1 -> $on2 of this phase's rows); $((fail1 - fail0)) failed status writes counted, \`/readyz\` 200 naming the store; checkpoint caught up ${catchup} s after; RSS $((rss0 / 1024)) -> $((rss2 / 1024)) MiB (peak $((hwm2 / 1024)) MiB), no restart |")
}

log "Kubernetes API faults (scenario 11): ${FAULT_SECONDS}s each, catch-up bound ${CATCHUP_LIMIT}s, RSS bound $RSS_LIMIT_KIB KiB (+$RSS_GROWTH_KIB KiB per fault)"
pod_info
end=$((SECONDS + 60))
until [ "$(metric binlogstream_checkpoint_store_failing "$(scrape)")" = 0 ]; do
  [ "$SECONDS" -lt "$end" ] || die "the publisher's metrics do not show binlogstream_checkpoint_store_failing 0 (an older image?)"
  sleep 2
done
run_fault a "API answers 500 (admission webhook, no service)" inject_500 clear_500 1
run_fault b "API calls hang (webhook never answers, 20 s)" inject_hang clear_hang 1
run_fault c "kube-apiserver killed, restarted after ${FAULT_SECONDS} s" inject_apiserver clear_apiserver 0
trap - EXIT
cleanup_faults
echo "| scenario | trials | committed | lost | duplicates | order violations | notes |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
log "API faults done"
