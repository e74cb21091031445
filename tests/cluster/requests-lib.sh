# Helpers shared by snapshot.sh, rewind.sh and recreate.sh (sourced after common.sh, on a cluster where
# stream.sh has started MariaDB and kinesalite and the operator is installed).
# shellcheck shell=bash

MDB="$STATE/mariadb"
KINESIS="http://$NODE_IP:4567"
PY="$CACHE/pyrepl-1.0.17/bin/python"
sql() { mariadb --no-defaults -uroot --socket="$MDB/sock" "$@"; }
# Readers print nothing on a failed call (callers poll), so `set -e` never ends a script on one.
cond() { kc -n "$1" get bls "$2" -o "jsonpath={.status.conditions[?(@.type==\"$3\")].$4}" 2>/dev/null || true; }
field() { kc -n "$1" get bls "$2" -o "jsonpath=$3" 2>/dev/null || true; }
wait_until() {  # seconds description command...
  local limit=$1 what=$2; shift 2; local end=$((SECONDS + limit))
  until "$@" 2>/dev/null; do [ "$SECONDS" -lt "$end" ] || die "timed out after ${limit}s: $what"; sleep 1; done
}
kin() {  # python snippet using client `k`
  in_cluster_net env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 "$PY" -c "
import boto3, json, sys
k = boto3.client('kinesis', endpoint_url='$KINESIS')
$1"
}
create_stream() {  # name
  kin "
try: k.create_stream(StreamName='$1', ShardCount=1)
except k.exceptions.ResourceInUseException: pass
import time
for _ in range(60):
    if k.describe_stream_summary(StreamName='$1')['StreamDescriptionSummary']['StreamStatus'] == 'ACTIVE': break
    time.sleep(0.5)
print('stream $1 active')"
}
# Inserts on the stream, per table: "<table> <records> <distinct ids> <snapshot records>".
stream_stats() {  # stream
  kin "
from collections import Counter, defaultdict
it = k.get_shard_iterator(StreamName='$1', ShardId='shardId-000000000000', ShardIteratorType='TRIM_HORIZON')['ShardIterator']
n = Counter(); ids = defaultdict(Counter); snap = Counter()
while True:
    r = k.get_records(ShardIterator=it, Limit=10000)
    for x in r['Records']:
        d = json.loads(x['Data'])
        if d['type'] != 'WriteRowsEvent': continue
        t = d['table']; n[t] += 1; ids[t][d['row']['values']['id']] += 1
        if (d.get('position') or {}).get('snapshot'): snap[t] += 1
    if not r['Records']: break
    it = r['NextShardIterator']
for t in sorted(n): print(t, n[t], len(ids[t]), snap[t])
" || true
}
# Records per id of one table as 'id count' lines.
id_counts() {  # stream table
  kin "
from collections import Counter
it = k.get_shard_iterator(StreamName='$1', ShardId='shardId-000000000000', ShardIteratorType='TRIM_HORIZON')['ShardIterator']
c = Counter()
while True:
    r = k.get_records(ShardIterator=it, Limit=10000)
    for x in r['Records']:
        d = json.loads(x['Data'])
        if d['type'] == 'WriteRowsEvent' and d['table'] == '$2': c[d['row']['values']['id']] += 1
    if not r['Records']: break
    it = r['NextShardIterator']
for i in sorted(c): print(i, c[i])
" || true
}
events_of() {  # namespace name reason
  kc -n "$1" get events --field-selector "involvedObject.name=$2,reason=$3" -o 'jsonpath={range .items[*]}{.count}|{.message}{"\n"}{end}' 2>/dev/null || true
}
apply_stream() {  # namespace name kinesis-stream include start
  kc -n "$1" apply -f - <<YAML
apiVersion: cdc.binlogstream.io/v1alpha1
kind: BinlogStream
metadata: {name: $2}
spec:
  source: {host: "$NODE_IP", port: 3306, user: repl, passwordSecretRef: {name: shop-db-replication, key: password}}
  tables: {include: ["$4"]}
  target: {stream: $3, region: us-east-1, endpoint: "$KINESIS", credentialsSecretRef: {name: aws-keys}}
  start: $5
  output: {position: true}
YAML
}
# Over ids LO..HI of table `events` on Kinesis stream $STREAM: records, distinct ids, all there.
count_of() { id_counts "$STREAM" events | awk -v lo="$1" -v hi="$2" '$1 >= lo && $1 <= hi { n += $2 } END { print n + 0 }'; }
distinct_of() { id_counts "$STREAM" events | awk -v lo="$1" -v hi="$2" '$1 >= lo && $1 <= hi { n++ } END { print n + 0 }'; }
arrived() { [ "$(distinct_of "$1" "$2")" -ge $(($2 - $1 + 1)) ]; }
# A fresh database DB with table `events (id, what)`, a Kinesis stream and a BinlogStream
# NAME in namespace shop reading DB.* from `latest`, Ready with a first checkpoint.
events_stream() {  # db name kinesis-stream
  sql -e "DROP DATABASE IF EXISTS $1; CREATE DATABASE $1 CHARACTER SET utf8mb4; CREATE TABLE $1.events (id INT PRIMARY KEY, what VARCHAR(20));"
  create_stream "$3"
  apply_stream shop "$2" "$3" "$1.*" latest
  wait_until 180 "$2 Ready" eval '[ "$(cond shop '"$2"' Ready status)" = True ]'
  wait_until 60 "$2 has a checkpoint" eval '[ -n "$(field shop '"$2"' "{.status.checkpoint.display}")" ]'
}
