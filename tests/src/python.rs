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
