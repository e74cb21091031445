#!/usr/bin/env bash
# Smoke check after up.sh + images.sh: installs the chart with the locally loaded images
# (pullPolicy Never), waits for the operator Deployment to be Available and lists every pod.
# Every client runs through `ip netns exec bls-e2e` (or as is with BLS_E2E_USE_KUBECONFIG=1).
#   bash tests/cluster/smoke.sh
set -euo pipefail
. "$(dirname "$0")/common.sh"

REL=bls
RNS=bls-system
DEPLOY="$REL-operator"

diagnose() {
  log "diagnostics:"
  hm history "$REL" -n "$RNS" >&2 || true
  kc get pods -A -o wide >&2 || true
  kc -n "$RNS" describe pods >&2 || true
  kc -n "$RNS" logs "deploy/$DEPLOY" --tail=50 >&2 || true
  kc get events -A --sort-by=.lastTimestamp >&2 2>/dev/null | tail -n 30 >&2 || true
}

CHART="${BLS_CHART:-$REPO/charts/binlogstream}"
status=$(hm status "$REL" -n "$RNS" -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["status"])' 2>/dev/null || true)
if [ "$status" = deployed ]; then
  log "release $REL already deployed in $RNS (helm uninstall $REL -n $RNS to start over)"
else
  if [ -n "$status" ]; then log "release $REL is '$status': uninstalling it first"; hm uninstall "$REL" -n "$RNS" --wait >/dev/null; fi
  log "helm install $REL $CHART -n $RNS --create-namespace (pullPolicy Never)"
  hm install "$REL" "$CHART" --namespace "$RNS" --create-namespace \
    --set image.pullPolicy=Never --set publisherImage.pullPolicy=Never || { diagnose; die "helm install failed (error above)"; }
fi
t=$SECONDS
if ! kc -n "$RNS" wait --for=condition=Available "deployment/$DEPLOY" --timeout=180s; then
  diagnose; die "operator Deployment $DEPLOY not Available after 180s"
fi
log "operator Deployment Available $((SECONDS - t))s after install"
kc get crd binlogstreams.cdc.binlogstream.io
kc get pods -A -o wide
kc -n "$RNS" logs "deploy/$DEPLOY" --tail=10 || true
log "smoke OK"
