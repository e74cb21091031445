#!/usr/bin/env bash
# Dev loop for snapshot.sh, rewind.sh and recreate.sh alone: up → images → chart → stream.sh → the two
# scripts → down (always). Run it under the machine-wide lock:
#   flock /work/wt/cluster.lock bash tests/cluster/requests-dev.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"
diagnose() {
  echo "---- requests-dev failed: state for diagnosis ----" >&2
  kc get bls -A -o wide >&2 || true
  for n in snap rw rc; do
    kc -n shop get bls $n -o jsonpath='{.status}' >&2 || true; echo >&2
    kc -n shop logs -l app.kubernetes.io/instance=$n --tail=30 >&2 || true
  done
  kc -n bls-system logs -l app.kubernetes.io/name=binlogstream-operator --tail=60 >&2 || true
}
cleanup() { status=$?; [ "$status" = 0 ] || diagnose; bash "$HERE/down.sh" || status=1; exit $status; }
trap cleanup EXIT
bash "$HERE/up.sh"
bash "$HERE/images.sh"
bash "$HERE/smoke.sh"
bash "$HERE/stream.sh"
for s in ${BLS_REQUESTS_ONLY:-snapshot rewind recreate}; do bash "$HERE/$s.sh"; done
log "requests-dev passed"
