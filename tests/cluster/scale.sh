#!/usr/bin/env bash
# API load of the operator and the publishers for N BinlogStreams (issue 12), measured on the
# cluster stream.sh left up, from the API server's own audit log (who made which request) and
# its apiserver_request_total counter; plus the operator's reconcile-latency histogram, CPU
# and peak RSS. Prints one table; asserts nothing about the figures (they are measurements).
#   BLS_SCALE_STREAMS=50 BLS_SCALE_SECONDS=60 bash tests/cluster/scale.sh
# Every stream it creates lives in namespace `scale`, deleted at the end.
set -euo pipefail
. "$(dirname "$0")/common.sh"
use_existing && die "scale.sh reads the local API server's audit log: local cluster only"

N=${BLS_SCALE_STREAMS:-10}
WINDOW=${BLS_SCALE_SECONDS:-60}
RATE=${BLS_SCALE_ROWS_PER_SEC:-20}
SNS=scale
MDB="$STATE/mariadb"
AUDIT="$STATE/audit.log"
[ -f "$AUDIT" ] || die "no audit log at $AUDIT (the cluster was started by an older up.sh: run down.sh, then up.sh)"
sql() { mariadb --no-defaults -uroot --socket="$MDB/sock" "$@"; }

sql -e "CREATE DATABASE IF NOT EXISTS scale; CREATE TABLE IF NOT EXISTS scale.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
kc create namespace $SNS --dry-run=client -o yaml | kc apply -f - >/dev/null
{
  cat <<YAML
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: $SNS, labels: {cdc.binlogstream.io/allow-binlogstreams: "true"}}
type: Opaque
stringData: {password: replpw}
---
apiVersion: v1
kind: Secret
metadata: {name: aws, namespace: $SNS, labels: {cdc.binlogstream.io/allow-binlogstreams: "true"}}
type: Opaque
stringData: {AWS_ACCESS_KEY_ID: test, AWS_SECRET_ACCESS_KEY: test}
YAML
  for i in $(seq -w 1 "$N"); do
    cat <<YAML
---
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: s$i, namespace: $SNS}
spec:
  source: {host: "$NODE_IP", port: 3306, user: repl, passwordSecretRef: {name: db, key: password}}
  tables: {include: ["scale.t"]}
  target: {stream: shop-changes, region: us-east-1, endpoint: "http://$NODE_IP:4567", credentialsSecretRef: {name: aws}}
  publisher:
    resources: {requests: {cpu: 5m, memory: 16Mi}}
YAML
  done
} | kc apply -f - >/dev/null
log "$N BinlogStreams applied in namespace $SNS; waiting for all Ready"
t_applied=$SECONDS
ready_count() { kc -n $SNS get bls -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -cx True || true; }
end=$((SECONDS + 120 + 8 * N))
until [ "$(ready_count)" -ge "$N" ]; do
  [ "$SECONDS" -lt "$end" ] || { kc -n $SNS get bls,pods -o wide >&2; die "only $(ready_count) of $N streams Ready"; }
  sleep 3
done
log "all $N Ready after $((SECONDS - t_applied))s"
sleep 20   # let start-up writes settle before measuring "at rest"

operator_pid() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | awk '{print $1}')" = /usr/local/bin/operator ] && { basename "$p"; return 0; }
  done
  return 1
}
OPID=$(operator_pid) || die "operator process not found"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$OPID/stat"; }
apiserver_total() {
  kc get --raw /metrics | awk '/^apiserver_request_total\{/ {s += $NF} END {printf "%d\n", s}'
}
reconcile_hist() {
  local pod
  pod=$(kc -n bls-system get pods -l app.kubernetes.io/name=binlogstream-operator -o 'jsonpath={.items[0].metadata.name}')
  kc get --raw "/api/v1/namespaces/bls-system/pods/$pod:8080/proxy/metrics" | grep '^binlogstream_operator_reconcile_duration_seconds_bucket'
}

# measure NAME: one window of WINDOW seconds; appends a row to $ROWS.
ROWS="$STATE/scale-rows.txt"; : >"$ROWS"
measure() {
  local name=$1 t0 t1 c0 c1 a0 a1 h0 h1 off
  off=$(stat -c %s "$AUDIT")
  t0=$(date -u +%s.%N); c0=$(cpu_ticks); a0=$(apiserver_total); h0=$(reconcile_hist)
  sleep "$WINDOW"
  t1=$(date -u +%s.%N); c1=$(cpu_ticks); a1=$(apiserver_total); h1=$(reconcile_hist)
  printf '%s\n' "$h0" >"$STATE/h0"; printf '%s\n' "$h1" >"$STATE/h1"
  python3 - "$AUDIT" "$off" "$t0" "$t1" "$N" "$SNS" "$name" "$c0" "$c1" "$a0" "$a1" "$STATE/h0" "$STATE/h1" "$(getconf CLK_TCK)" >>"$ROWS" <<'PY'
import json, sys, datetime, collections
audit, off, t0, t1, n, ns, name, c0, c1, a0, a1, h0, h1, tck = sys.argv[1:]
off, t0, t1, n = int(off), float(t0), float(t1), int(n)
def ts(s):
    return datetime.datetime.strptime(s[:26].rstrip('Z'), '%Y-%m-%dT%H:%M:%S.%f').replace(tzinfo=datetime.timezone.utc).timestamp()
seen = {}
with open(audit, 'rb') as f:
    f.seek(max(0, off - 65536))
    for line in f:
        try: e = json.loads(line)
        except Exception: continue
        t = ts(e['requestReceivedTimestamp'])
        if t0 <= t < t1: seen[e['auditID']] = e
minutes = (t1 - t0) / 60
op = [e for e in seen.values() if e['user']['username'].endswith(':bls-system:bls-operator')]
pubs = collections.Counter(e['user']['username'] for e in seen.values()
                           if e['user']['username'].startswith(f'system:serviceaccount:{ns}:')
                           and e.get('objectRef', {}).get('subresource') == 'status' and e['verb'] == 'patch')
op_by = collections.Counter(f"{e['verb']} {e.get('objectRef', {}).get('resource', '?')}" + (f"/{e['objectRef']['subresource']}" if e.get('objectRef', {}).get('subresource') else '') for e in op)
per_pub = [pubs.get(f'system:serviceaccount:{ns}:bls-s{i:0{len(str(n))}d}', 0) / minutes for i in range(1, n + 1)]
def buckets(p):
    out = {}
    for l in open(p):
        if not l.strip(): continue
        le = l.split('le="')[1].split('"')[0]
        out[float('inf') if le == '+Inf' else float(le)] = float(l.split()[-1])
    return out
b0, b1 = buckets(h0), buckets(h1)
d = sorted((le, b1.get(le, 0) - b0.get(le, 0)) for le in b1)
total = d[-1][1] if d else 0
def q(x):
    if total <= 0: return float('nan')
    for le, c in d:
        if c >= x * total: return le * 1000
    return float('inf')
cpu = (float(c1) - float(c0)) / float(tck) / (t1 - t0)
print(f"{name:<22} {n:>7} {len(op) / minutes:>10.1f} {len(op) / minutes / n:>10.2f} "
      f"{sum(per_pub) / max(1, n):>10.2f} {max(per_pub or [0]):>9.2f} {(float(a1) - float(a0)) / minutes:>11.1f} "
      f"{int(total):>6} {q(0.5):>8.1f} {q(0.99):>8.1f} {cpu:>7.3f}   "
      + ", ".join(f"{k} {v}" for k, v in op_by.most_common(4)))
PY
}

measure "idle" 
writer() {
  local end=$((SECONDS + WINDOW)) i=0
  while [ "$SECONDS" -lt "$end" ]; do
    sql -e "INSERT INTO scale.t (v) VALUES ($i)"; i=$((i + 1)); sleep "$(awk "BEGIN {print 1 / $RATE}")"
  done
}
writer & wpid=$!
measure "rows ${RATE}/s"
wait "$wpid" || true

rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$OPID/status")
rss_now=$(awk '/VmRSS/ {print $2}' "/proc/$OPID/status")
printf '\n%-22s %7s %10s %10s %10s %9s %11s %6s %8s %8s %7s   %s\n' scenario streams "op req/min" "op/stream" "pub wr/min" "pub max" "apisrv/min" recs "p50 ms" "p99 ms" "op cpu" "operator requests by verb/resource"
cat "$ROWS"
printf 'operator RSS now %d KiB, peak %d KiB\n' "$rss_now" "$rss_peak"
printf '(op = requests by the operator service account; pub wr/min = status patches per publisher per minute, mean and max; apisrv/min = all apiserver_request_total; recs/p50/p99 = reconciles in the window and their latency)\n'

kc delete namespace $SNS --wait=false >/dev/null
log "scale run done; namespace $SNS deleted"
