#!/usr/bin/env bash
# Fast checks of what the chart ships for Prometheus and Grafana (tests/run.sh runs this):
#   - promtool check rules / test rules on charts/binlogstream/files/alerts.yaml;
#   - the PrometheusRule the chart renders holds exactly those groups;
#   - every dashboard query parses (as a recording rule, through promtool).
# The e2e (tests/cluster/prometheus.sh) then runs all of them against a real Prometheus.
set -euo pipefail
cd "$(dirname "$0")/../.."
RULES=charts/binlogstream/files/alerts.yaml
HELM="${BINLOGSTREAM_CACHE:-$HOME/.cache/binlogstream}/k8s-tools/bin/helm"
command -v promtool >/dev/null || { echo "promtool missing: bash tests/setup/install-deps.sh (Debian package prometheus)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

promtool check rules "$RULES"
(cd tests/prometheus && promtool test rules alerts_test.yaml)

"$HELM" template ci charts/binlogstream --set metrics.prometheusRule.enabled=true \
  --set metrics.dashboard.enabled=true --set metrics.publisherPodMonitor.enabled=true >"$tmp/rendered.yaml"
python3 - "$tmp/rendered.yaml" "$RULES" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rule = next(d for d in docs if d["kind"] == "PrometheusRule")
want = yaml.safe_load(open(sys.argv[2]))["groups"]
assert rule["spec"]["groups"] == want, "the rendered PrometheusRule differs from files/alerts.yaml"
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "binlogstream.json" in d.get("data", {}))
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap lacks grafana_dashboard: \"1\""
assert json.loads(cm["data"]["binlogstream.json"]) == json.load(open("charts/binlogstream/files/dashboard.json"))
print("chart: PrometheusRule == files/alerts.yaml; dashboard ConfigMap == files/dashboard.json")
PY

python3 tests/prometheus/exprs.py dashboard | python3 -c '
import sys, yaml
rules = [{"record": "dashboard:query_%d" % i, "expr": l.rstrip("\n").split("\t", 1)[1]} for i, l in enumerate(sys.stdin)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(len(rules), "dashboard queries")' "$tmp/dashboard-rules.yaml"
promtool check rules "$tmp/dashboard-rules.yaml"
echo "prometheus checks OK"
