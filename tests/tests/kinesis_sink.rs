//! The Kinesis sink against kinesalite, with a fault-injecting proxy in between: every row
//! arrives, per-key order holds, oversize rows follow the chosen policy.

use std::{collections::HashMap, sync::Arc, time::Duration};

use binlogstream_tests::{
    capture::{config, read_all},
    fault_proxy::{FaultProxy, Faults},
    kinesis::{client_for, Kinesalite, StreamRecord},
    mariadb::{MariaDb, Metadata},
};
use publisher::{
    metrics::Metrics,
    pipeline::{PipelineError, Summary},
    position::StartFrom,
    sink::kinesis::{
        key::{Oversize, PartitionKey},
        retry::Backoff,
        KinesisConfig,
    },
};

fn fast_retries(stream: &str) -> KinesisConfig {
    let mut k = KinesisConfig::new(stream);
    k.backoff = Backoff {
        base: Duration::from_millis(2),
        max: Duration::from_millis(50),
    };
    k
}

async fn publish(
    db: &MariaDb,
    endpoint: &str,
    k: KinesisConfig,
    metrics: Arc<Metrics>,
) -> Result<Summary, PipelineError> {
    let mut cfg = config(db, StartFrom::Earliest);
    cfg.encode.position = true;
    binlogstream_tests::capture::publish_to_kinesis(cfg, endpoint, k, metrics).await
}

type Pos = (String, u64, u64);

fn position(r: &StreamRecord) -> Pos {
    let v = r.json();
    let p = &v["position"];
    (
        p["file"].as_str().expect("file").to_string(),
        p["pos"].as_u64().expect("pos"),
        p["row"].as_u64().expect("row"),
    )
}

/// Per partition key, positions in stream order; checks every expected position is there and
/// returns (duplicates, keys whose order was violated).
fn verify(records: &[StreamRecord], expected: usize, strict: bool) -> (usize, Vec<String>) {
    let mut by_key: HashMap<&str, Vec<Pos>> = HashMap::new();
    for r in records {
        by_key
            .entry(&r.partition_key)
            .or_default()
            .push(position(r));
    }
    let mut distinct = std::collections::HashSet::new();
    for r in records {
        distinct.insert(position(r));
    }
    assert_eq!(
        distinct.len(),
        expected,
        "every row change is on the stream"
    );
    let mut violated = Vec::new();
    for (key, positions) in &by_key {
        let seq: Vec<&Pos> = if strict {
            positions.iter().collect()
        } else {
            // Keep the last copy of each change.
            let mut last: HashMap<&Pos, usize> = HashMap::new();
            for (i, p) in positions.iter().enumerate() {
                last.insert(p, i);
            }
            positions
                .iter()
                .enumerate()
                .filter(|(i, p)| last[p] == *i)
                .map(|(_, p)| p)
                .collect()
        };
        if seq.windows(2).any(|w| w[0] > w[1]) {
            violated.push(key.to_string());
        }
    }
    (records.len() - distinct.len(), violated)
}

async fn workload_100k(db: &MariaDb) {
    // 90,000 inserts in 18 transactions, then 5,000 rows updated twice: 100,000 row changes,
    // 10,000 of them on keys that already have records.
    db.exec("CREATE DATABASE w; CREATE TABLE w.t (id INT PRIMARY KEY, v VARCHAR(40), n INT)")
        .await;
    for chunk in 0..18 {
        let lo = chunk * 5000 + 1;
        let hi = lo + 4999;
        db.exec(&format!(
            "SET SESSION max_recursive_iterations = 100000;
             INSERT INTO w.t WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i < {hi})
             SELECT i, CONCAT('value-', i), 0 FROM s"
        ))
        .await;
    }
    db.exec("UPDATE w.t SET n = 1 WHERE id <= 5000").await;
    db.exec("UPDATE w.t SET n = 2 WHERE id <= 5000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_100k_arrives_in_key_order_under_faults() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    kinesalite.create_stream("rows", 4).await;
    workload_100k(&db).await;
    let proxy = FaultProxy::start(kinesalite.port, 7).await;
    proxy.set(Faults {
        throttle_request: 0.05,
        fail_record: 0.03,
        error_500: 0.02,
        reset: 0.02,
        lose_response: 0.02,
        ..Faults::default()
    });
    let metrics = Arc::new(Metrics::new());
    let summary = publish(
        &db,
        &proxy.endpoint(),
        fast_retries("rows"),
        metrics.clone(),
    )
    .await
    .expect("publish");
    assert_eq!(summary.rows, 100_000);
    let injected = proxy.injected();
    assert!(
        injected.throttled > 0 && injected.failed_records > 0 && injected.errors_500 > 0,
        "{injected:?}"
    );
    assert!(
        injected.resets > 0 && injected.lost_responses > 0,
        "{injected:?}"
    );

    let records = kinesalite.read_all("rows").await;
    let shards: std::collections::HashSet<&str> =
        records.iter().map(|r| r.shard.as_str()).collect();
    assert_eq!(shards.len(), 4, "records spread over every shard");
    let (duplicates, violated) = verify(&records, 100_000, true);
    println!(
        "100,000 row changes under faults {injected:?}: {} records read back, {duplicates} duplicates (from lost responses)",
        records.len()
    );
    assert!(
        violated.is_empty(),
        "per-key order violated for {} keys, e.g. {:?}",
        violated.len(),
        &violated[..violated.len().min(3)]
    );
    let text = metrics.render();
    // Every reason's series exists from the start (at 0): the count must have moved.
    let throttled = text
        .lines()
        .find_map(|l| l.strip_prefix("binlogstream_retries_total{reason=\"throttled\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(throttled > 0.0, "no throttled retry counted:\n{text}");
    assert!(
        text.contains("binlogstream_rows_read_total 100000"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_keys_keep_the_last_copy_in_order_under_partial_failures() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    kinesalite.create_stream("tables", 2).await;
    db.exec(
        "CREATE DATABASE w; CREATE TABLE w.a (id INT PRIMARY KEY); CREATE TABLE w.b (id INT PRIMARY KEY);
         SET SESSION max_recursive_iterations = 100000;
         INSERT INTO w.a WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000) SELECT i FROM s;
         INSERT INTO w.b WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000) SELECT i FROM s;",
    )
    .await;
    let proxy = FaultProxy::start(kinesalite.port, 11).await;
    proxy.set(Faults {
        fail_record: 0.01,
        ..Faults::default()
    });
    let mut k = fast_retries("tables");
    k.partition_key = PartitionKey::Table;
    publish(&db, &proxy.endpoint(), k, Arc::new(Metrics::new()))
        .await
        .expect("publish");
    let records = kinesalite.read_all("tables").await;
    let keys: std::collections::HashSet<&str> =
        records.iter().map(|r| r.partition_key.as_str()).collect();
    assert_eq!(keys, ["w.a", "w.b"].into_iter().collect());
    let (duplicates, violated) = verify(&records, 4_000, false);
    println!("table keys: {duplicates} re-sent records after partial failures");
    assert!(
        duplicates > 0,
        "partial failures re-send later records of the key"
    );
    assert!(violated.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_rows_fail_skip_or_become_key_only_markers() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    kinesalite.create_stream("big", 1).await;
    db.exec(
        "CREATE DATABASE o; CREATE TABLE o.docs (id INT PRIMARY KEY, body LONGTEXT);
         INSERT INTO o.docs VALUES (1, 'small');
         INSERT INTO o.docs VALUES (2, REPEAT('x', 3 * 1024 * 1024));
         INSERT INTO o.docs VALUES (3, 'after');",
    )
    .await;

    let err = publish(
        &db,
        &kinesalite.endpoint(),
        fast_retries("big"),
        Arc::new(Metrics::new()),
    )
    .await
    .expect_err("3 MiB row stops the publisher");
    let text = err.to_string();
    assert!(
        text.contains("o.docs") && text.contains("o.docs:[2]") && text.contains("3145"),
        "{text}"
    );
    assert!(text.contains("--oversize skip"), "{text}");
    // The row before it was delivered before the stop.
    assert_eq!(kinesalite.read_all("big").await.len(), 1);

    kinesalite.create_stream("skip", 1).await;
    let mut k = fast_retries("skip");
    k.oversize = Oversize::Skip;
    let metrics = Arc::new(Metrics::new());
    publish(&db, &kinesalite.endpoint(), k, metrics.clone())
        .await
        .expect("skip goes on");
    // Different keys travel in different lanes: their relative order on the stream is free.
    let mut ids: Vec<i64> = kinesalite
        .read_all("skip")
        .await
        .iter()
        .map(|r| r.json()["row"]["values"]["id"].as_i64().expect("id"))
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 3]);
    assert!(metrics
        .render()
        .contains("binlogstream_oversize_records_total{action=\"skip\"} 1"));

    kinesalite.create_stream("marker", 1).await;
    let mut k = fast_retries("marker");
    k.oversize = Oversize::KeyOnly;
    publish(&db, &kinesalite.endpoint(), k, Arc::new(Metrics::new()))
        .await
        .expect("key-only goes on");
    let records = kinesalite.read_all("marker").await;
    assert_eq!(records.len(), 3);
    let marker = records
        .iter()
        .map(|r| String::from_utf8(r.data.clone()).expect("utf8"))
        .find(|t| t.contains("\"oversize\""))
        .expect("a marker record");
    assert!(
        marker.starts_with(r#"{"table": "docs", "row": {"key": {"id": 2}}, "type": "WriteRowsEvent", "schema": "o", "oversize": true, "size": 314"#),
        "{marker}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_a_clear_error_before_reading() {
    let kinesalite = Kinesalite::start().await;
    let client = kinesalite.client().await;
    let err = publisher::sink::kinesis::preflight(&client, &KinesisConfig::new("nope"))
        .await
        .expect_err("missing");
    assert!(
        err.to_string()
            .contains("Kinesis stream nope does not exist"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_aggregates_deaggregate_to_exactly_our_records() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    kinesalite.create_stream("agg", 4).await;
    db.exec(
        "CREATE DATABASE a; CREATE TABLE a.t (id INT PRIMARY KEY, v VARCHAR(40), n INT);
         SET SESSION max_recursive_iterations = 100000;
         INSERT INTO a.t WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20000)
           SELECT i, CONCAT('value-', i), 0 FROM s;
         UPDATE a.t SET n = 1 WHERE id <= 2000;
         UPDATE a.t SET n = 2 WHERE id <= 1000;
         DELETE FROM a.t WHERE id <= 500;",
    )
    .await;

    // What the publisher produces, in binlog order, with the key each record is sent under.
    let mut cfg = config(&db, StartFrom::Earliest);
    cfg.encode.position = true;
    let ours = read_all(cfg, None).await.expect("read");
    let mode = PartitionKey::PrimaryKey;
    let expected: Vec<(String, Vec<u8>)> = ours
        .rows
        .iter()
        .map(|r| {
            (
                publisher::sink::kinesis::key::partition_key(&mode, r),
                r.body.clone(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 23_500);

    let mut k = fast_retries("agg");
    k.aggregate = true;
    let client = client_for(&kinesalite.endpoint()).await;
    let ranges = publisher::sink::kinesis::shard_ranges(&client, "agg")
        .await
        .expect("shards");
    assert_eq!(ranges.len(), 4);
    let metrics = Arc::new(Metrics::new());
    publish(&db, &kinesalite.endpoint(), k, metrics.clone())
        .await
        .expect("publish");

    let raw = kinesalite.read_all("agg").await;
    assert!(!raw.is_empty(), "records on the stream");
    assert!(
        raw.len() * 50 < expected.len(),
        "{} Kinesis records for {} rows: aggregated",
        raw.len(),
        expected.len()
    );
    // Aggregates close at the configured size (256 KiB by default), not at the 1 MiB record
    // limit: the bound that keeps the sink's memory to a few MiB.
    let largest = raw
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .max()
        .unwrap_or(0);
    let max = publisher::sink::kinesis::DEFAULT_AGGREGATE_BYTES;
    assert!(
        largest <= max && largest > max * 3 / 4,
        "largest aggregate {largest} bytes: closed at the {max}-byte bound"
    );
    let shard_ids: Vec<String> = {
        let mut ids: Vec<String> = raw.iter().map(|r| r.shard.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let mut want: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for (key, body) in expected.iter().cloned() {
        want.entry(key).or_default().push(body);
    }
    // Both public de-aggregators, Python (PyPI) and Node.js (npm), each with its own
    // protobuf and MD5 checks.
    for (name, users) in [
        (
            "PyPI aws-kinesis-agg",
            binlogstream_tests::python::deaggregate(&raw),
        ),
        (
            "npm aws-kinesis-agg",
            binlogstream_tests::node_agg::deaggregate(&raw),
        ),
    ] {
        assert_eq!(users.len(), expected.len(), "{name} returns every row");
        let mut got: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for (shard, key, data) in &users {
            let want = &shard_ids[publisher::sink::kinesis::kpl::shard_of(ranges.ranges(), key)];
            assert_eq!(
                shard, want,
                "{name}: row with key {key} is in the shard its key hashes to"
            );
            got.entry(key.clone()).or_default().push(data.clone());
        }
        assert_eq!(got.len(), want.len(), "{name}: keys");
        for (key, bodies) in &want {
            assert_eq!(
                got.get(key),
                Some(bodies),
                "{name}: records of {key}, exactly and in order"
            );
        }
    }
    println!(
        "KPL: {} rows in {} Kinesis records over 4 shards",
        expected.len(),
        raw.len()
    );
    assert!(metrics
        .render()
        .contains("binlogstream_records_published_total 23500"));
}
