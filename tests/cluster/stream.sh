#!/usr/bin/env bash
# End-to-end check after smoke.sh: MariaDB and kinesalite inside netns bls-e2e (bound to
# 10.96.0.254, PIDs in $STATE/pids so down.sh stops them), a Kinesis stream, a BinlogStream
# pointing at both; inserts rows and waits for the publisher pod to run and report a position,
# then reads the records back from kinesalite.
#   bash tests/cluster/stream.sh
set -euo pipefail
. "$(dirname "$0")/common.sh"
use_existing && die "stream.sh runs its services inside netns $NS: local cluster only"

DBPORT=3306
KPORT=4567
TNS=shop
STREAM=shop-changes
KINESIS="http://$NODE_IP:$KPORT"
PY="$CACHE/pyrepl-1.0.17/bin/python"   # has boto3 (tests/setup/install-deps.sh)
KINESALITE="$CACHE/kinesalite-3.3.3/node_modules/kinesalite/cli.js"
[ -x "$PY" ] && [ -f "$KINESALITE" ] || bash "$REPO/tests/setup/install-deps.sh"
MDB="$STATE/mariadb"
sql() { mariadb --no-defaults -uroot --socket="$MDB/sock" "$@"; }

# --- MariaDB -------------------------------------------------------------------------------------
if ! live_pid mariadb >/dev/null; then
  rm -rf "$MDB"; mkdir -p "$MDB"
  tpl=$(ls -d "$CACHE"/mariadb-template-* 2>/dev/null | head -n 1 || true)
  if [ -n "$tpl" ]; then cp -a "$tpl" "$MDB/data"; else
    mariadb-install-db --no-defaults --datadir="$MDB/data" --user=root --auth-root-authentication-method=normal >/dev/null
  fi
  start mariadb mariadbd --no-defaults --datadir="$MDB/data" --user=root --port="$DBPORT" \
    --bind-address="$NODE_IP" --socket="$MDB/sock" --log-bin="$MDB/data/binlog" --binlog-format=ROW \
    --server-id=1 --binlog-row-metadata=FULL --character-set-server=utf8mb4
  wait_for mariadb 30 sql -e 'SELECT 1'
  log "mariadbd up on $NODE_IP:$DBPORT (pid $(cat "$STATE/pids/mariadb"))"
fi
sql <<'EOF'
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'replpw';
GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'repl'@'%';
CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4;
CREATE TABLE IF NOT EXISTS shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item VARCHAR(64), qty INT);
EOF

# --- kinesalite + stream ---------------------------------------------------------------------------
if ! live_pid kinesalite >/dev/null; then
  start kinesalite node "$KINESALITE" --host "$NODE_IP" --port "$KPORT" --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0
  wait_for kinesalite 30 in_cluster_net curl -s --max-time 2 -o /dev/null "$KINESIS"
  log "kinesalite up on $KINESIS (pid $(cat "$STATE/pids/kinesalite"))"
fi
kin() {  # python snippet using client `k`
  in_cluster_net env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 "$PY" -c "
import boto3, json, sys
k = boto3.client('kinesis', endpoint_url='$KINESIS')
$1"
}
kin "
try: k.create_stream(StreamName='$STREAM', ShardCount=1)
except k.exceptions.ResourceInUseException: pass
print('stream', k.describe_stream_summary(StreamName='$STREAM')['StreamDescriptionSummary']['StreamStatus'])"

# --- Secrets + BinlogStream --------------------------------------------------------------------------
kc create namespace "$TNS" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc apply -f - <<EOF
apiVersion: v1
kind: Secret
metadata: {name: shop-db-replication, namespace: $TNS, labels: {cdc.binlogstream.io/allow-binlogstreams: "true"}}
type: Opaque
stringData: {password: replpw}
---
apiVersion: v1
kind: Secret
metadata: {name: aws-keys, namespace: $TNS, labels: {cdc.binlogstream.io/allow-binlogstreams: "true"}}
type: Opaque
stringData: {AWS_ACCESS_KEY_ID: test, AWS_SECRET_ACCESS_KEY: test}
---
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: shop, namespace: $TNS}
spec:
  source:
    host: "$NODE_IP"
    port: $DBPORT
    user: repl
    passwordSecretRef: {name: shop-db-replication, key: password}
  tables:
    include: ["shop.*"]
  target:
    stream: $STREAM
    region: us-east-1
    endpoint: "$KINESIS"
    credentialsSecretRef: {name: aws-keys}
  start: earliest
  output:
    position: true
EOF

sql -e "INSERT INTO shop.orders (item, qty) VALUES ('apple', 1), ('pear', 2), ('plum', 3);"
log "3 rows inserted; waiting for the publisher pod"
end=$((SECONDS + 180))
until kc -n "$TNS" get pods -o 'jsonpath={range .items[*]}{.status.phase}{"\n"}{end}' 2>/dev/null | grep -qx Running; do
  [ "$SECONDS" -lt "$end" ] || { kc -n "$TNS" get all,bls -o wide >&2; kc -n "$TNS" describe pods >&2; kc -n "$TNS" describe bls >&2; die "no publisher pod Running after 180s"; }
  sleep 2
done
kc -n "$TNS" get pods -o wide
end=$((SECONDS + 120))
until [ -n "$(kc -n "$TNS" get bls shop -o 'jsonpath={.status.checkpoint.display}' 2>/dev/null)" ]; do
  restarts=$(kc -n "$TNS" get pods -o 'jsonpath={.items[*].status.containerStatuses[0].restartCount}' 2>/dev/null | tr ' ' '\n' | sort -n | tail -n 1)
  if [ "${restarts:-0}" -ge 2 ]; then
    kc -n "$TNS" get pods,bls -o wide >&2
    kc -n "$TNS" logs -l app.kubernetes.io/instance=shop --tail=15 >&2 || true
    kc -n "$TNS" logs -l app.kubernetes.io/instance=shop --previous --tail=15 >&2 || true
    die "the publisher pod keeps crashing (restarts: $restarts); its log is above"
  fi
  [ "$SECONDS" -lt "$end" ] || { kc -n "$TNS" get bls -o yaml >&2; kc -n "$TNS" logs -l app.kubernetes.io/instance=shop --tail=40 >&2 || true; die "no position in BinlogStream status after 120s"; }
  sleep 2
done
sql -e "INSERT INTO shop.orders (item, qty) VALUES ('fig', 4);"
sleep 5
kc -n "$TNS" get bls -o wide
kin "
it = k.get_shard_iterator(StreamName='$STREAM', ShardId='shardId-000000000000', ShardIteratorType='TRIM_HORIZON')['ShardIterator']
recs = k.get_records(ShardIterator=it, Limit=100)['Records']
print(len(recs), 'records in', '$STREAM')
for r in recs[:5]: print(r['Data'][:200].decode(errors='replace'))"
log "stream check done"
