#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a fresh machine, then
# checks formatting and lints, runs the benchmark on a small row count (proves it still works;
# no timing is asserted) and every test against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

export BINLOGSTREAM_CACHE="${BINLOGSTREAM_CACHE:-$HOME/.cache/binlogstream}"
# Build outputs live outside the repository, keyed by toolchain, so CI's fresh clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BINLOGSTREAM_CACHE/target-$(rustc -V | tr -c '[:alnum:].\n' '_')}"

step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS" >&2; }

step "installing test dependencies"
bash tests/setup/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

step "supply chain: cargo deny (deny.toml)"
DENY="$BINLOGSTREAM_CACHE/cargo-deny/bin/cargo-deny"
"$DENY" --locked check --hide-inclusion-graph licenses bans sources
# Advisories need the RustSec database, which cargo-deny clones from a git host this
# workplace cannot reach; they run against a local checkout when there is one.
ADVISORY_DB="${BINLOGSTREAM_ADVISORY_DB:-$BINLOGSTREAM_CACHE/advisory-db}"
if git -C "$ADVISORY_DB" rev-parse --git-dir >/dev/null 2>&1; then
  echo "advisories: RustSec database at $ADVISORY_DB, last change $(git -C "$ADVISORY_DB" log -1 --format=%cs)" >&2
  # cargo-deny looks for the database under db-path, in a folder named after its URL.
  mkdir -p "$CARGO_TARGET_DIR/advisory-dbs"
  ln -sfn "$(cd "$ADVISORY_DB" && pwd)" "$CARGO_TARGET_DIR/advisory-dbs/advisory-db-3157b0e258782691"
  sed "s|^\[advisories\]$|[advisories]\ndb-path = \"$CARGO_TARGET_DIR/advisory-dbs\"|" deny.toml > "$CARGO_TARGET_DIR/deny.toml"
  "$DENY" --offline --config "$CARGO_TARGET_DIR/deny.toml" check --hide-inclusion-graph advisories
else
  echo "advisories: SKIPPED, no local RustSec advisory database (set BINLOGSTREAM_ADVISORY_DB to a checkout of it)" >&2
fi

step "crds/ and the chart's CRD match crdgen"
cargo run --locked -q -p operator --bin crdgen > "$CARGO_TARGET_DIR/crd.yaml"
diff -u crds/binlogstream.yaml "$CARGO_TARGET_DIR/crd.yaml" || { echo "crds/binlogstream.yaml is stale: run cargo run -p operator --bin crdgen > crds/binlogstream.yaml" >&2; exit 1; }
diff -u crds/binlogstream.yaml charts/binlogstream/crds/binlogstream.yaml || { echo "charts/binlogstream/crds/binlogstream.yaml differs from crds/binlogstream.yaml: copy it" >&2; exit 1; }

step "helm lint and template"
HELM="$BINLOGSTREAM_CACHE/k8s-tools/bin/helm"
"$HELM" lint --strict charts/binlogstream
"$HELM" template ci charts/binlogstream --namespace bls-system --include-crds >/dev/null
"$HELM" template ci charts/binlogstream --set metrics.serviceMonitor.enabled=true --set replicaCount=2 >/dev/null
"$HELM" template ci charts/binlogstream --set metrics.publisherPodMonitor.enabled=true --set metrics.prometheusRule.enabled=true --set metrics.dashboard.enabled=true --set 'watchNamespaces={a,b}' >/dev/null

step "alert rules and dashboard: promtool check/test rules (tests/prometheus/check.sh)"
bash tests/prometheus/check.sh

step "benchmark smoke run (20,000 rows per workload; 5,000 into kinesalite)"
cargo run --locked --release -q -p binlogstream-tests --bin bench -- --rows 20000 --txn-rows 20000 --kinesis-rows 5000 --original-rows 500 --original-decode-rows 2000 --latency-seconds 2

step "fault matrix, CI size (every scenario once; full size: faultmatrix --full, see README)"
cargo build --locked -q -p publisher -p binlogstream-tests --bins
"$CARGO_TARGET_DIR/debug/faultmatrix" --publisher "$CARGO_TARGET_DIR/debug/publisher"

step "end to end on a local Kubernetes 1.20 cluster (tests/cluster/e2e.sh; builds and caches Kubernetes on first use)"
bash tests/cluster/e2e.sh

step "cargo test"
cargo test --locked --workspace
