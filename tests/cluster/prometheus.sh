#!/usr/bin/env bash
# A real Prometheus (Debian's binary) scrapes the cluster, and every query the chart ships must
# return series. Runs after stream.sh (a BinlogStream streaming); e2e.sh calls it.
#   bash tests/cluster/prometheus.sh
# - Scrape config: the chart's rendered PodMonitor, turned into pod discovery with the same
#   keep rules and relabelings, so the relabeling tested is the one that ships; the operator is
#   scraped the way its ServiceMonitor does (port `metrics`, honor_labels). Debian's prometheus
#   2.42 is built without kubernetes_sd, so discovery is file_sd fed by a loop (PID file
#   sd-refresh) that turns `kubectl get pods -A -o json` into the __meta_kubernetes_pod_*
#   labels kubernetes_sd (role pod) gives (tests/prometheus/pod_sd.py) every 5 s.
#   Prometheus also loads files/alerts.yaml: every rule must evaluate without error.
# - Every expression of the PrometheusRule and of every dashboard panel (read from the files
#   by tests/prometheus/exprs.py) is queried. Dashboard queries must return series. An alert
#   expression is empty on a healthy stream (that is what healthy means), so when it is empty
#   each vector selector in it must return series instead: the metric names and label values
#   it filters on exist. A join of a publisher metric with an operator metric on
#   (namespace, binlogstream) must return series too: both sides label streams alike.
# - Snapshot metrics (binlogstream_snapshot_table_rows{,_estimated}) have series only once a
#   snapshot ran in a publisher, and no BinlogStream asks for one yet: a "snapshot probe" (the
#   same publisher binary as the image, run in the netns outside Kubernetes, one-off snapshot
#   of shop.orders into its own Kinesis stream) is scraped as a static target with namespace
#   and binlogstream labels, so those queries return series from the real binary.
# Prometheus and the probe run inside netns $NS on 127.0.0.1 with their data under
# $STATE/prometheus, and are stopped by PID on exit (down.sh would also stop them: their PID
# files are in $STATE/pids).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"
use_existing && die "prometheus.sh runs Prometheus inside netns $NS: local cluster only"
command -v prometheus >/dev/null || bash "$REPO/tests/setup/install-deps.sh"

INTERVAL=5
PDIR="$STATE/prometheus"
rm -rf "$PDIR"; mkdir -p "$PDIR/data" "$STATE/logs" "$STATE/pids"
stop_by_pid() {
  local p
  p=$(live_pid "$1") || { rm -f "$STATE/pids/$1"; return 0; }
  kill "$p" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$p" 2>/dev/null || true
  rm -f "$STATE/pids/$1"
  log "$1 stopped (pid $p)"
}
trap 'stop_by_pid prometheus; stop_by_pid snapshot-probe; stop_by_pid sd-refresh' EXIT
free_port() { ip netns exec "$NS" python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the snapshot probe ----------------------------------------------------------------------------
PROBE_PORT=$(free_port)
in_cluster_net env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
  "$CACHE/pyrepl-1.0.17/bin/python" -c "
import boto3
k = boto3.client('kinesis', endpoint_url='http://$NODE_IP:4567')
try: k.create_stream(StreamName='metrics-probe', ShardCount=1)
except k.exceptions.ResourceInUseException: pass"
printf 'replpw\n' >"$PDIR/probe-password"
cp "$CACHE/target-images/release/publisher" "$PDIR/publisher"
start snapshot-probe env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true "$PDIR/publisher" run --source "mysql://repl@$NODE_IP:3306" \
  --password-file "$PDIR/probe-password" --server-id 4077 --start latest --sink kinesis \
  --stream metrics-probe --endpoint "http://$NODE_IP:4567" --checkpoint-file "$PDIR/probe-checkpoint.json" \
  --snapshot-tables shop.orders --snapshot-request-id e2e-metrics --metrics-addr "127.0.0.1:$PROBE_PORT"
log "snapshot probe: publisher on 127.0.0.1:$PROBE_PORT (pid $(cat "$STATE/pids/snapshot-probe"))"

# --- pod discovery (file_sd) ------------------------------------------------------------------------
echo '[]' >"$PDIR/pods.json"
assert_local
start sd-refresh env KUBECONFIG="$STATE/kubeconfig" bash -c 'while :; do
  "$1" get pods -A -o json >"$2.raw" && python3 "$3" <"$2.raw" >"$2.tmp" && mv "$2.tmp" "$2"
  sleep 5; done' sd-refresh "$TOOLS_BIN/kubectl" "$PDIR/pods.json" "$REPO/tests/prometheus/pod_sd.py"
wait_for sd-refresh 30 grep -q __meta_kubernetes_pod_container_port_name "$PDIR/pods.json"

# --- scrape config from the chart ------------------------------------------------------------------
"$TOOLS_BIN/helm" template bls "$REPO/charts/binlogstream" -n bls-system \
  --set metrics.publisherPodMonitor.enabled=true --set metrics.serviceMonitor.enabled=true >"$PDIR/chart.yaml"
python3 - "$PDIR/chart.yaml" "$PDIR/pods.json" "$REPO/charts/binlogstream/files/alerts.yaml" "$INTERVAL" "127.0.0.1:$PROBE_PORT" >"$PDIR/prometheus.yml" <<'PY'
import re, sys, yaml
chart, pods_file, rules, interval, probe = sys.argv[1:6]
docs = [d for d in yaml.safe_load_all(open(chart)) if d]
pm = next(d for d in docs if d["kind"] == "PodMonitor")
sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
def meta(label):  # what the Prometheus Operator does with a label selector
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)
def snake(r):
    out = {}
    for k, v in r.items():
        out[{"sourceLabels": "source_labels", "targetLabel": "target_label"}.get(k, k)] = v
    return out
def keep(labels):
    return [{"source_labels": [meta(k)], "regex": v, "action": "keep"} for k, v in labels.items()]
# kubernetes_sd (role pod) is emulated by file_sd: see pod_sd.py.
sd = [{"files": [pods_file], "refresh_interval": f"{interval}s"}]
ep = pm["spec"]["podMetricsEndpoints"][0]
publishers = {
    "job_name": "binlogstream-publishers",
    "scrape_interval": f"{interval}s",
    "metrics_path": ep.get("path", "/metrics"),
    "file_sd_configs": sd,
    "relabel_configs": keep(pm["spec"]["selector"]["matchLabels"])
    + [{"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ep["port"], "action": "keep"}]
    + [snake(r) for r in ep.get("relabelings", [])],
}
sep = sm["spec"]["endpoints"][0]
operator = {
    "job_name": "binlogstream-operator",
    "scrape_interval": f"{interval}s",
    "honor_labels": bool(sep.get("honorLabels")),
    "file_sd_configs": sd,
    "relabel_configs": keep(sm["spec"]["selector"]["matchLabels"])
    + [{"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": sep["port"], "action": "keep"},
       {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
       {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}],
}
print(yaml.safe_dump({
    "global": {"scrape_interval": f"{interval}s", "evaluation_interval": f"{interval}s"},
    "rule_files": [rules],
    "scrape_configs": [publishers, operator, {
        "job_name": "binlogstream-snapshot-probe",
        "scrape_interval": f"{interval}s",
        "static_configs": [{"targets": [probe], "labels": {"namespace": "shop", "binlogstream": "snapshot-probe"}}],
    }],
}, sort_keys=False))
PY
promtool check config "$PDIR/prometheus.yml" >/dev/null

PORT=$(free_port)
start prometheus prometheus --config.file="$PDIR/prometheus.yml" --storage.tsdb.path="$PDIR/data" \
  --web.listen-address="127.0.0.1:$PORT" --storage.tsdb.retention.time=2h
log "prometheus up on 127.0.0.1:$PORT in netns $NS (pid $(cat "$STATE/pids/prometheus")), config $PDIR/prometheus.yml"

# --- the checks (inside the namespace, where 127.0.0.1:$PORT is this Prometheus) ---------------------
python3 "$REPO/tests/prometheus/exprs.py" rules >"$PDIR/rules.tsv"
python3 "$REPO/tests/prometheus/exprs.py" dashboard >"$PDIR/dashboard.tsv"
in_cluster_net python3 - "$PORT" "$INTERVAL" "$PDIR" "$REPO/tests/prometheus" <<'PY'
import json, sys, time, urllib.parse, urllib.request
port, interval, pdir, lib = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, lib)
from exprs import selectors
BASE = f"http://127.0.0.1:{port}/api/v1/"
def api(path, **params):
    url = BASE + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"{path} {params}: {body}")
    return body["data"]
def say(msg):
    print(f"[prometheus] {msg}", file=sys.stderr, flush=True)

# Targets: at least one publisher and one operator pod up.
deadline = time.time() + 90
while True:
    try:
        targets = api("targets")["activeTargets"]
    except OSError:
        targets = []
    up = {}
    for t in targets:
        up.setdefault(t["labels"]["job"], []).append(t["health"])
    if all("up" in up.get(j, []) for j in ("binlogstream-publishers", "binlogstream-operator", "binlogstream-snapshot-probe")):
        break
    if time.time() > deadline:
        raise SystemExit(f"targets not up after 90 s: {json.dumps(targets, indent=1)[:3000]}")
    time.sleep(1)
for t in targets:
    say(f"target {t['labels']['job']} {t['scrapeUrl']} {t['health']} labels={t['labels']}")
# rate() over [1m] needs two samples: wait three scrape intervals (and rules two evaluations).
time.sleep(3 * interval + 1)

failed = []
def series(expr):
    return api("query", query=expr)["result"]
def check(kind, name, expr, empty_ok):
    got = series(expr)
    if got:
        say(f"ok   {kind} {name}: {len(got)} series, e.g. {got[0]['metric']}")
        return
    if not empty_ok:
        failed.append(f"{kind} {name}: no series for {expr}")
        say(f"FAIL {kind} {name}: no series: {expr}")
        return
    for sel in selectors(expr):
        n = len(series(sel))
        if n:
            say(f"ok   {kind} {name}: empty (healthy); its selector {sel} has {n} series")
        else:
            failed.append(f"{kind} {name}: selector {sel} has no series")
            say(f"FAIL {kind} {name}: empty, and its selector {sel} has no series")

for line in open(f"{pdir}/rules.tsv"):
    name, expr = line.rstrip("\n").split("\t", 1)
    check("alert", name, expr, empty_ok=True)
for line in open(f"{pdir}/dashboard.tsv"):
    name, expr = line.rstrip("\n").split("\t", 1)
    check("panel", name, expr, empty_ok=False)
check("join", "publisher x operator on (namespace, binlogstream)",
      'binlogstream_replication_lag_seconds * on (namespace, binlogstream) group_left '
      'binlogstream_operator_stream_condition{condition="Ready",status="True"}', empty_ok=False)

# The rules loaded into this Prometheus evaluate without error.
groups = api("rules")["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]
say(f"{len(rules)} rules loaded, {len(rules) - len(bad)} evaluate ok; firing now: "
    + (", ".join(f"{r['name']}" for r in rules if r.get("state") == "firing") or "none"))
failed += [f"rule {b}" for b in bad]
if failed:
    raise SystemExit("prometheus checks failed:\n  " + "\n  ".join(failed))
say("every rule and dashboard query checked against the real Prometheus")
PY
log "prometheus checks passed"
