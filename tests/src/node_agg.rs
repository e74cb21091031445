//! The npm `aws-kinesis-agg` de-aggregator (what Node.js Lambda consumers use), installed by
//! `tests/setup/install-deps.sh`: a second implementation nobody here wrote to read our KPL
//! aggregates with.

use std::{io::Write, process::Command};

pub const NPM_AGG_VERSION: &str = "4.2.8";

const DEAGGREGATE: &str = r#"
const agg = require("aws-kinesis-agg");
const lines = require("fs").readFileSync(0, "utf8").split("\n").filter((l) => l.length > 0);
const out = [];
for (const line of lines) {
  const r = JSON.parse(line);
  const record = { partitionKey: r.key, sequenceNumber: r.seq, data: r.data };
  // Checksums verified: a wrong MD5 trailer must fail here, not pass silently.
  agg.deaggregateSync(record, true, (err, users) => {
    if (err) { console.error(`record ${r.seq}: ${err}`); process.exit(1); }
    for (const u of users) out.push(JSON.stringify({ shard: r.shard, key: u.partitionKey, data: u.data }));
  });
}
process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
"#;

/// Runs the npm de-aggregator over records read from a stream; returns its user records as
/// (shard, partition key, data), in the order it yields them.
pub fn deaggregate(records: &[crate::kinesis::StreamRecord]) -> Vec<(String, String, Vec<u8>)> {
    use base64::Engine;
    crate::ensure_deps();
    let b64 = base64::engine::general_purpose::STANDARD;
    let modules = crate::cache_dir().join(format!(
        "npm-aws-kinesis-agg-{NPM_AGG_VERSION}/node_modules"
    ));
    let mut child = Command::new("node")
        .arg("-e")
        .arg(DEAGGREGATE)
        .env("NODE_PATH", &modules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    let mut input = String::new();
    for r in records {
        input.push_str(
            &serde_json::json!({"shard": r.shard, "key": r.partition_key, "seq": r.sequence, "data": b64.encode(&r.data)})
                .to_string(),
        );
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("deaggregator");
    assert!(
        out.status.success(),
        "npm aws-kinesis-agg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    writer.join().expect("writer").expect("write");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["shard"].as_str().expect("shard").to_string(),
                v["key"].as_str().expect("key").to_string(),
                b64.decode(v["data"].as_str().expect("data"))
                    .expect("base64"),
            )
        })
        .collect()
}
