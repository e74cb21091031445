//! The original publisher's decoder, python-mysql-replication, from a venv built by
//! `tests/setup/install-deps.sh`.

use std::process::Command;

use crate::mariadb::MariaDb;

pub const PYREPL_VERSION: &str = "1.0.17";

const SCRIPT: &str = r#"
import json, sys
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

port, password = int(sys.argv[1]), sys.argv[2]
stream = BinLogStreamReader(
    connection_settings={"host": "127.0.0.1", "port": port, "user": "repl", "passwd": password},
    server_id=4077, blocking=False, resume_stream=False, is_mariadb=True,
    only_events=[DeleteRowsEvent, WriteRowsEvent, UpdateRowsEvent])
for ev in stream:
    for row in ev.rows:
        row = {k: v for k, v in row.items() if not k.endswith("none_sources")}
        # The blog's sample key order (table, row, type, schema), which the format keeps.
        print(json.dumps({"table": ev.table, "row": row, "type": type(ev).__name__, "schema": ev.schema}))
stream.close()
"#;

/// What the original would have printed for every row change in `db`'s binlog.
pub fn original_records(db: &MariaDb) -> Vec<String> {
    crate::ensure_deps();
    let python = crate::cache_dir().join(format!("pyrepl-{PYREPL_VERSION}/bin/python"));
    let out = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(db.port.to_string())
        .arg(&db.repl_password)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "python-mysql-replication failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The original publisher (../shared/seed), ported to Python 3: python-mysql-replication plus
/// boto3, one `put_record` per row with the constant key "default". Changed only to point at
/// the test servers, to read one table from the start of the binlog (`only_tables`), to stop
/// after `limit` rows, to encode DECIMAL/DATETIME/bytes with `default=str` (the original
/// crashes on them), and to print `rows seconds cpu_seconds peak_rss_kib` on stderr, timed
/// from its first row (so skipping other tables' events before it is not counted against it).
/// With endpoint `-` it only decodes and encodes (the original's decoding alone).
pub const ORIGINAL_SCRIPT: &str = r#"
import json, resource, sys, time
import boto3
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

def main():
    port, password, endpoint, stream_name, limit, table = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
    kinesis = None
    if endpoint != "-":
        kinesis = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": port, "user": "repl", "passwd": password},
        server_id=100, blocking=False, resume_stream=False, is_mariadb=True, only_tables=[table],
        only_events=[DeleteRowsEvent, WriteRowsEvent, UpdateRowsEvent])
    n = 0
    start = cpu0 = None
    for binlogevent in stream:
        for row in binlogevent.rows:
            if start is None:
                start, cpu0 = time.monotonic(), time.process_time()
            event = {"schema": binlogevent.schema, "table": binlogevent.table,
                     "type": type(binlogevent).__name__, "row": row}
            data = json.dumps(event, default=str)
            if kinesis is not None:
                kinesis.put_record(StreamName=stream_name, Data=data, PartitionKey="default")
            n += 1
            if n >= limit:
                break
        if n >= limit:
            break
    elapsed = time.monotonic() - start
    cpu = time.process_time() - cpu0
    stream.close()
    print(n, elapsed, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)

main()
"#;

/// One run of [`ORIGINAL_SCRIPT`].
pub struct OriginalRun {
    pub rows: u64,
    pub secs: f64,
    pub cpu_secs: f64,
    pub peak_rss_kib: u64,
}

/// Runs [`ORIGINAL_SCRIPT`] over `table`'s first `limit` rows; `endpoint` None only decodes.
pub fn run_original(
    db: &MariaDb,
    endpoint: Option<&str>,
    stream: &str,
    table: &str,
    limit: u64,
) -> OriginalRun {
    crate::ensure_deps();
    let python = crate::cache_dir().join(format!("pyrepl-{PYREPL_VERSION}/bin/python"));
    let out = Command::new(&python)
        .arg("-c")
        .arg(ORIGINAL_SCRIPT)
        .args([
            db.port.to_string(),
            db.repl_password.clone(),
            endpoint.unwrap_or("-").to_string(),
            stream.to_string(),
            limit.to_string(),
            table.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "original script failed: {stderr}");
    let last = stderr.lines().last().unwrap_or("");
    let f: Vec<&str> = last.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    OriginalRun {
        rows: num(0).unwrap_or(0.0) as u64,
        secs: num(1).unwrap_or(f64::NAN),
        cpu_secs: num(2).unwrap_or(f64::NAN),
        peak_rss_kib: num(3).unwrap_or(0.0) as u64,
    }
}

const DEAGGREGATE: &str = r#"
import base64, json, sys
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
for line in sys.stdin:
    r = json.loads(line)
    event = {"kinesis": {"data": r["data"], "partitionKey": r["key"], "sequenceNumber": r["seq"],
                         "kinesisSchemaVersion": "1.0", "approximateArrivalTimestamp": 1732480000.0}, "eventSourceARN": "arn:aws:kinesis:us-east-1:1:stream/s"}
    for u in iter_deaggregate_records([event]):
        d = u["kinesis"]["data"]
        d = d.decode() if isinstance(d, bytes) else d
        print(json.dumps({"shard": r["shard"], "key": u["kinesis"]["partitionKey"], "data": d}))
"#;

/// Runs the PyPI `aws-kinesis-agg` de-aggregator (what Lambda consumers use) over records
/// read from a stream; returns its user records as (shard, partition key, data).
pub fn deaggregate(records: &[crate::kinesis::StreamRecord]) -> Vec<(String, String, Vec<u8>)> {
    crate::ensure_deps();
    let python = crate::cache_dir().join(format!("pyrepl-{PYREPL_VERSION}/bin/python"));
    let mut cmd = Command::new(&python);
    cmd.arg("-c").arg(DEAGGREGATE);
    crate::kinesis::run_deaggregator(cmd, "PyPI aws-kinesis-agg", records)
}
