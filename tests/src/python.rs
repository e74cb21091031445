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
/// boto3, one `put_record` per row with the constant key "default", each record also printed.
/// Changed only to point at the test servers, to read from the start of the binlog and to stop
/// after `limit` rows, printing `rows seconds` on stderr.
pub const ORIGINAL_SCRIPT: &str = r#"
import json, sys, time
import boto3
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

def main():
    port, password, endpoint, stream_name, limit = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    kinesis = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": port, "user": "repl", "passwd": password},
        server_id=100, blocking=False, resume_stream=False, is_mariadb=True,
        only_events=[DeleteRowsEvent, WriteRowsEvent, UpdateRowsEvent])
    n = 0
    start = time.monotonic()
    for binlogevent in stream:
        for row in binlogevent.rows:
            event = {"schema": binlogevent.schema, "table": binlogevent.table,
                     "type": type(binlogevent).__name__, "row": row}
            kinesis.put_record(StreamName=stream_name, Data=json.dumps(event, default=str), PartitionKey="default")
            print(json.dumps(event, default=str))
            n += 1
            if n >= limit:
                break
        if n >= limit:
            break
    elapsed = time.monotonic() - start
    stream.close()
    print(n, elapsed, file=sys.stderr)

main()
"#;

/// Runs [`ORIGINAL_SCRIPT`]; returns (rows, seconds).
pub fn run_original(db: &MariaDb, endpoint: &str, stream: &str, limit: u64) -> (u64, f64) {
    crate::ensure_deps();
    let python = crate::cache_dir().join(format!("pyrepl-{PYREPL_VERSION}/bin/python"));
    let out = Command::new(&python)
        .arg("-c")
        .arg(ORIGINAL_SCRIPT)
        .args([
            db.port.to_string(),
            db.repl_password.clone(),
            endpoint.to_string(),
            stream.to_string(),
            limit.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "original script failed: {stderr}");
    let last = stderr.lines().last().unwrap_or("");
    let mut f = last.split_whitespace();
    let rows = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let secs = f.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    (rows, secs)
}
