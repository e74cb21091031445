#!/usr/bin/env bash
# The main job on an embedded default: starts a private MariaDB (own datadir and port on
# loopback) and a Kinesis emulator (kinesalite), runs the publisher following the binlog into a
# 2-shard stream, writes sample rows, and reads the records back from the stream with
# `publisher tail`. Everything it starts is stopped and removed on exit.
#   ./demo.sh                the whole product on a local Kubernetes 1.20 cluster (no Docker):
#                            cluster, images, helm install, MariaDB + kinesalite, a BinlogStream,
#                            rows written and read back, `kubectl get bls`; left running, with a
#                            writer (a row a second) and a consumer (`publisher tail --follow`)
#   ./demo.sh kubectl ARGS…  kubectl against that cluster (it lives in netns bls-e2e)
#   ./demo.sh shell          a shell inside the cluster's network namespace, kubectl working
#   ./demo.sh sql "SQL"      the demo's MariaDB (database shop), as root
#   ./demo.sh --down         stop writer and consumer, tear all of that down (host left as before)
#   ./demo.sh --standalone   the publisher alone: MariaDB + kinesalite, no Kubernetes
#   ./demo.sh --standalone --follow   keep writing a change a second until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")"

# The cluster's helpers (kc: kubectl inside the namespace, after checking the node address is
# local there; live_pid; start).
cluster_env() { . tests/cluster/common.sh; }
need_cluster() {
  [ -f "$STATE/kubeconfig" ] && ip netns list 2>/dev/null | grep -qw "^$NS" \
    || { echo "no demo cluster is running: start it with ./demo.sh" >&2; exit 1; }
}
stop_demo_clients() {
  local name p
  for name in demo-writer demo-consumer; do
    p=$(live_pid "$name") || { rm -f "$STATE/pids/$name"; continue; }
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 25); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
    rm -f "$STATE/pids/$name"
    echo "[demo] stopped $name (pid $p)" >&2
  done
}

case "${1:-}" in
  --down)
    cluster_env
    stop_demo_clients
    exec bash tests/cluster/down.sh ;;
  kubectl)
    shift; cluster_env; need_cluster
    kc "$@"; exit ;;
  shell)
    shift; cluster_env; need_cluster; assert_local
    mkdir -p "$STATE/demo"
    cat >"$STATE/demo/bashrc" <<RC
[ -f /etc/bash.bashrc ] && . /etc/bash.bashrc
export KUBECONFIG="$STATE/kubeconfig" PATH="$TOOLS_BIN:\$PATH"
alias k=kubectl
PS1='[bls-demo \W]\\$ '
echo "Inside netns $NS: kubectl (alias k) talks to the demo cluster. Try: kubectl get bls -A -w   (exit to leave)"
RC
    exec ip netns exec "$NS" bash --rcfile "$STATE/demo/bashrc" -i ;;
  sql)
    shift; cluster_env; need_cluster
    exec mariadb --no-defaults -uroot --socket="$STATE/mariadb/sock" shop -e "$*" ;;
  --standalone)
    shift ;;
  "")
    # Kubernetes: the cluster lives in network namespace bls-e2e; every client runs inside it.
    export BLS_E2E_KEEP_STATE=1
    bash tests/setup/install-deps.sh
    bash tests/cluster/up.sh
    bash tests/cluster/images.sh
    bash tests/cluster/smoke.sh
    bash tests/cluster/stream.sh
    cluster_env
    # A writer (a row a second) and a consumer (the stream's records as they arrive), so that
    # `kubectl get bls -w` shows the position moving. Both are background processes with PID
    # files in $STATE/pids (./demo.sh --down, and down.sh, stop them).
    stop_demo_clients
    mkdir -p "$STATE/demo"
    start demo-writer bash -c 'i=0; while :; do i=$((i + 1)); mariadb --no-defaults -uroot --socket="$0" -e "INSERT INTO shop.orders (item, qty) VALUES (\"demo\", $i)" || echo "insert $i failed"; sleep 1; done' "$STATE/mariadb/sock"
    cp "$CACHE/target-images/release/publisher" "$STATE/demo/publisher"
    start demo-consumer env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
      AWS_EC2_METADATA_DISABLED=true "$STATE/demo/publisher" tail --stream shop-changes \
      --endpoint "http://$NODE_IP:4567" --from latest --follow --keys
    sleep 15
    kc get bls -A -o wide
    kc -n shop get bls shop -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'
    cat <<NEXT

The demo is running: Kubernetes 1.20 in network namespace $NS, the operator (namespace bls-system),
BinlogStream shop/shop streaming MariaDB's shop.* into Kinesis stream shop-changes (kinesalite).
A writer inserts a row into shop.orders every second; a consumer prints the records
($STATE/logs/demo-consumer.log).

Try next:
  ./demo.sh kubectl get bls -A -w                 watch the position move (the publisher stores it
                                                  in status every 10 s; Ctrl-C to stop watching)
  tail -f $STATE/logs/demo-consumer.log     the records a consumer receives
  ./demo.sh kubectl -n shop patch bls shop --type merge -p '{"spec":{"paused":true}}'
                                                  pause: drains, Ready=False (Paused), no pod
  ./demo.sh kubectl -n shop patch bls shop --type merge -p '{"spec":{"paused":false}}'
                                                  resume exactly where it stopped
  kill -STOP \$(cat $STATE/pids/kinesalite)   break Kinesis: Degraded, then Lagging (kill -CONT to heal)
  kill -STOP \$(cat $STATE/pids/mariadb)      break the source (kill -CONT to heal)
  ./demo.sh kubectl -n shop get bls shop -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
                                                  the conditions and why
  ./demo.sh kubectl -n shop get events --sort-by=.lastTimestamp
  ./demo.sh sql "SELECT COUNT(*) FROM orders"     the source
  ./demo.sh shell                                 a shell with kubectl (alias k) working
Tear everything down with: ./demo.sh --down
NEXT
    exit 0 ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
    exit 2 ;;
esac
FOLLOW=0; [ "${1:-}" = "--follow" ] && FOLLOW=1

export BINLOGSTREAM_CACHE="${BINLOGSTREAM_CACHE:-$HOME/.cache/binlogstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BINLOGSTREAM_CACHE/target-$(rustc -V | tr -c '[:alnum:].\n' '_')}"
say() { printf '\033[1m[demo %3ss]\033[0m %s\n' "$SECONDS" "$*" >&2; }

say "installing MariaDB and kinesalite if missing"
bash tests/setup/install-deps.sh
say "building the publisher (release; first build takes a few minutes)"
cargo build --release -q -p publisher
BIN="$CARGO_TARGET_DIR/release/publisher"

WORK=$(mktemp -d /tmp/binlogstream-demo.XXXXXX)
DB_PID=""; PUB_PID=""; KIN_PID=""
cleanup() {
  [ -n "$PUB_PID" ] && kill "$PUB_PID" 2>/dev/null && wait "$PUB_PID" 2>/dev/null || true
  [ -n "$KIN_PID" ] && kill "$KIN_PID" 2>/dev/null && wait "$KIN_PID" 2>/dev/null || true
  [ -n "$DB_PID" ] && kill "$DB_PID" 2>/dev/null && wait "$DB_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
say "starting MariaDB on 127.0.0.1:$PORT (datadir $WORK/data, ROW binlog)"
mariadb-install-db --no-defaults --user=root --auth-root-authentication-method=normal --datadir="$WORK/data" >/dev/null 2>&1
mariadbd --no-defaults --user=root --datadir="$WORK/data" --port="$PORT" --bind-address=127.0.0.1 \
  --skip-name-resolve --socket="$WORK/sock" --log-bin="$WORK/data/binlog" --binlog-format=ROW \
  --server-id=1 --character-set-server=utf8mb4 >"$WORK/mariadbd.log" 2>&1 &
DB_PID=$!
sql() { mariadb -uroot -h127.0.0.1 -P"$PORT" -e "$1"; }
for _ in $(seq 1 100); do sql "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
sql "DROP USER IF EXISTS ''@'localhost';
     CREATE USER repl@'%' IDENTIFIED BY 'demo-password';
     GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO repl@'%';
     CREATE DATABASE kinesistest CHARACTER SET utf8mb4;
     CREATE TABLE kinesistest.Users (idUsers INT PRIMARY KEY, Name VARCHAR(100), Balance DECIMAL(10,2),
       Joined DATETIME(3), Tags SET('new','vip'), Profile JSON);"
printf 'demo-password\n' > "$WORK/password"

KPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
say "starting kinesalite on 127.0.0.1:$KPORT and creating stream 'changes' (2 shards)"
node "$BINLOGSTREAM_CACHE/kinesalite-3.3.3/node_modules/kinesalite/cli.js" --port "$KPORT" --host 127.0.0.1 \
  --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0 >"$WORK/kinesalite.log" 2>&1 &
KIN_PID=$!
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
ENDPOINT="http://127.0.0.1:$KPORT"
for _ in $(seq 1 100); do
  curl -s -o /dev/null -X POST "$ENDPOINT" -H 'X-Amz-Target: Kinesis_20131202.CreateStream' \
    -H 'Content-Type: application/x-amz-json-1.1' -d '{"StreamName":"changes","ShardCount":2}' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=x' \
    -H 'X-Amz-Date: 20260101T000000Z' && break
  sleep 0.1
done

say "publisher: run --source mysql://repl@127.0.0.1:$PORT --password-file … --sink kinesis --stream changes --endpoint $ENDPOINT"
"$BIN" run --source "mysql://repl@127.0.0.1:$PORT" --password-file "$WORK/password" \
  --server-id 4242 --start latest --sink kinesis --stream changes --endpoint "$ENDPOINT" \
  --checkpoint-file "$WORK/checkpoint.json" 2>"$WORK/publisher.log" &
PUB_PID=$!
sleep 1

say "writing sample rows"
sql "INSERT INTO kinesistest.Users VALUES (123, 'Foo User', 10.50, '2024-02-29 13:45:00.120', 'new', '{\"lang\": \"en\"}')"
sql "INSERT INTO kinesistest.Users VALUES (124, 'Bar user', 0, NOW(3), 'new,vip', NULL)"
sql "UPDATE kinesistest.Users SET Name = 'Bar User', Balance = Balance + 1 WHERE idUsers = 123"
sql "DELETE FROM kinesistest.Users WHERE idUsers = 124"
i=200
while [ "$FOLLOW" = 1 ]; do
  sleep 1; i=$((i + 1))
  sql "INSERT INTO kinesistest.Users (idUsers, Name) VALUES ($i, 'User $i')"
done
sleep 1
kill -TERM "$PUB_PID"; wait "$PUB_PID" || true; PUB_PID=""
say "publisher stopped on SIGTERM (drained, final checkpoint written):"
cat "$WORK/checkpoint.json" >&2
say "reading the stream back: publisher tail --stream changes --endpoint $ENDPOINT --keys"
"$BIN" tail --stream changes --endpoint "$ENDPOINT" --keys 2>/dev/null
