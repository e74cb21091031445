//! The npm `aws-kinesis-agg` de-aggregator (what Node.js Lambda consumers use), installed by
//! `tests/setup/install-deps.sh`: a second implementation nobody here wrote to read our KPL
//! aggregates with.

use std::process::Command;

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
    crate::ensure_deps();
    let modules = crate::cache_dir().join(format!(
        "npm-aws-kinesis-agg-{NPM_AGG_VERSION}/node_modules"
    ));
    let mut cmd = Command::new("node");
    cmd.arg("-e").arg(DEAGGREGATE).env("NODE_PATH", &modules);
    crate::kinesis::run_deaggregator(cmd, "npm aws-kinesis-agg", records)
}
