#!/usr/bin/env bash
# Fuzzes the binlog event parser and row decoder (cargo fuzz, nightly). The recorded MySQL
# binlogs seed the corpus, read in place; new corpus and crashes stay outside the repository
# except crash inputs worth keeping, which go to publisher/fuzz/regressions/ as tests.
#   publisher/fuzz/run.sh [SECONDS]   (default 600)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_TO_RUN="${1:-600}"
CACHE="${BINLOGSTREAM_CACHE:-$HOME/.cache/binlogstream}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
mkdir -p "$CACHE/fuzz-corpus"
SEEDS=../../../shared/fixtures/mysql-binlogs
extra=(); [ -d "$SEEDS" ] && extra+=("$SEEDS")
cargo +nightly fuzz run binlog "$CACHE/fuzz-corpus" "${extra[@]}" -- \
  -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=4096 -max_len=1048576
