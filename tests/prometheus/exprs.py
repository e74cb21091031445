#!/usr/bin/env python3
"""The PromQL expressions the chart ships, taken from the files themselves (never copied):
   exprs.py rules       -> one line per alert: NAME<TAB>EXPR (charts/.../files/alerts.yaml)
   exprs.py dashboard   -> one line per panel target: TITLE<TAB>EXPR (files/dashboard.json),
                           Grafana's variables replaced by what the check can run
                           ($__rate_interval -> 1m, $namespace/$binlogstream -> .*)
   exprs.py selectors EXPR -> the vector selectors in EXPR, one a line (name{matchers})
Used by tests/prometheus/check.sh (syntax, via promtool) and tests/cluster/prometheus.sh
(every expression against a real Prometheus)."""
import json
import os
import re
import sys

import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "binlogstream", "files")
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "5m",
                "$namespace": ".*", "$binlogstream": ".*"}


def one_line(e):
    return " ".join(e.split())


def rules():
    with open(os.path.join(CHART, "alerts.yaml")) as f:
        doc = yaml.safe_load(f)
    for g in doc["groups"]:
        for r in g["rules"]:
            yield r.get("alert") or r.get("record"), one_line(r["expr"])


def dashboard():
    with open(os.path.join(CHART, "dashboard.json")) as f:
        doc = json.load(f)
    for p in doc["panels"]:
        for t in p.get("targets", []):
            e = t["expr"]
            for k in sorted(GRAFANA_VARS, key=len, reverse=True):
                e = e.replace(k, GRAFANA_VARS[k])
            yield f'{p["title"]} [{t["refId"]}]', one_line(e)


KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "offset", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
            "bottomk", "quantile", "count_values", "group", "inf", "nan"}


def selectors(expr):
    # Drop label lists of by/on/... clauses and range/offset parts, then take every
    # identifier not followed by "(" (a function) with its matchers.
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\boffset\s+\S+", "", e)
    out = []
    for m in re.finditer(r'([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?', e):
        name, matchers, call = m.group(1), m.group(2) or "", m.group(3)
        if call or name.lower() in KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        s = name + matchers
        if s not in out:
            out.append(s)
    return out


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "selectors":
        print("\n".join(selectors(sys.argv[2])))
    else:
        for name, e in {"rules": rules, "dashboard": dashboard}[what]():
            print(f"{name}\t{e}")
