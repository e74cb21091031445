//! The Kinesis sink's guarantees under production events, against kinesalite (behind the
//! fault proxy where Kinesis misbehaves) and a publisher following a private MariaDB live:
//! memory stays bounded on a busy source and a stalled stream, a key-changing UPDATE keeps
//! every key value's changes in order, and aggregates survive a reshard for KCL readers.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use binlogstream_tests::{
    capture::config,
    fault_proxy::{FaultProxy, Faults},
    kinesis::{client_for, Kinesalite},
    mariadb::{MariaDb, Metadata},
};
use publisher::{
    filter::TableFilter,
    metrics::Metrics,
    pipeline::{PipelineError, PipelineOptions, Summary},
    position::StartFrom,
    sink::kinesis::{self, key::PartitionKey, retry::Backoff, KinesisConfig, KinesisSink},
    source::Reader,
};

fn fast_retries(stream: &str) -> KinesisConfig {
    let mut k = KinesisConfig::new(stream);
    k.backoff = Backoff {
        base: Duration::from_millis(2),
        max: Duration::from_millis(50),
    };
    k
}

/// A publisher following the binlog from its start into Kinesis, in a task of its own, until
/// stopped (which drains the sink and stores the final checkpoint).
struct LivePublisher {
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Summary, PipelineError>>,
}

impl LivePublisher {
    async fn start(
        db: &MariaDb,
        endpoint: &str,
        k: KinesisConfig,
        filter: TableFilter,
    ) -> LivePublisher {
        let mut cfg = config(db, StartFrom::Earliest);
        cfg.encode.position = true;
        cfg.filter = filter;
        cfg.stop_at_end = false;
        let metrics = Arc::new(Metrics::new());
        let client = client_for(endpoint).await;
        kinesis::preflight(&client, &k).await.expect("preflight");
        let shards = if k.aggregate {
            Some(
                kinesis::shard_ranges(&client, &k.stream)
                    .await
                    .expect("shards"),
            )
        } else {
            None
        };
        let mut sink = KinesisSink::new(client, k, metrics.clone());
        if let Some(map) = shards {
            sink.set_shards(map);
        }
        let reader = Reader::open(cfg, None).await.expect("open");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let opts = PipelineOptions {
            metrics: metrics.clone(),
            ..PipelineOptions::default()
        };
        let task = tokio::spawn(async move {
            let mut store = publisher::checkpoint::NoCheckpoint;
            publisher::pipeline::run(reader, &mut sink, &mut store, &opts, async {
                let _ = stopped.await;
            })
            .await
        });
        LivePublisher {
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// Waits until the publisher has read `rows` row changes (20 s at most).
    async fn wait_rows(&self, rows: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.metrics.rows_read.get() < rows {
            assert!(
                !self.task.is_finished(),
                "publisher stopped after {} of {rows} rows",
                self.metrics.rows_read.get()
            );
            assert!(
                Instant::now() < deadline,
                "publisher read {} of {rows} rows",
                self.metrics.rows_read.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) -> Summary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("publisher stops")
            .expect("publisher task")
            .expect("publisher ends cleanly")
    }
}

/// Samples the sink's gauges every few milliseconds and keeps their maxima.
struct GaugeMax {
    tasks: Arc<AtomicI64>,
    queue: Arc<AtomicI64>,
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl GaugeMax {
    fn start(m: Arc<Metrics>) -> GaugeMax {
        let tasks = Arc::new(AtomicI64::new(0));
        let queue = Arc::new(AtomicI64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (t, q, d) = (tasks.clone(), queue.clone(), done.clone());
        let task = tokio::spawn(async move {
            while !d.load(Ordering::Relaxed) {
                t.fetch_max(m.sink_tasks.get(), Ordering::Relaxed);
                q.fetch_max(m.ack_queue_len.get(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        GaugeMax {
            tasks,
            queue,
            done,
            task,
        }
    }

    /// (max tasks, max ack-queue length)
    async fn finish(self) -> (i64, i64) {
        self.done.store(true, Ordering::Relaxed);
        self.task.await.expect("sampler");
        (
            self.tasks.load(Ordering::Relaxed),
            self.queue.load(Ordering::Relaxed),
        )
    }
}

/// `n` one-row transactions, `per_exec` statements per round trip.
async fn one_row_transactions(db: &MariaDb, table: &str, from: usize, n: usize, per_exec: usize) {
    let mut i = from;
    while i < from + n {
        let end = (i + per_exec).min(from + n);
        let sql: String = (i..end)
            .map(|j| format!("INSERT INTO {table} VALUES ({j}, 'v{j}');"))
            .collect();
        db.exec(&sql).await;
        i = end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_requests_are_reaped_while_following_one_row_transactions() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    kinesalite.create_stream("busy", 4).await;
    db.exec("CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    let k = fast_retries("busy");
    let lanes = k.max_in_flight as i64;
    let publisher =
        LivePublisher::start(&db, &kinesalite.endpoint(), k, TableFilter::default()).await;
    let gauges = GaugeMax::start(publisher.metrics.clone());
    one_row_transactions(&db, "s.t", 1, 5_000, 25).await;
    publisher.wait_rows(5_000).await;
    let metrics = publisher.metrics.clone();
    let summary = publisher.stop().await;
    let (max_tasks, max_queue) = gauges.finish().await;
    let requests = metrics.batches.get();
    println!(
        "5,000 one-row transactions: {requests} PutRecords requests, at most {max_tasks} tasks, \
         ack queue at most {max_queue}"
    );
    assert_eq!(summary.rows, 5_000);
    assert!(requests > 200, "the test needs many requests ({requests})");
    assert!(
        max_tasks <= lanes,
        "{max_tasks} request tasks alive at once (lanes: {lanes}): finished ones are kept"
    );
    assert!(metrics.sink_tasks.get() <= lanes);
    assert_eq!(kinesalite.read_all("busy").await.len(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_queues_rows_not_commits_of_filtered_tables() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    kinesalite.create_stream("stalled", 2).await;
    db.exec(
        "CREATE DATABASE s; CREATE TABLE s.a (id INT PRIMARY KEY, v VARCHAR(20));
         CREATE TABLE s.b (id INT PRIMARY KEY, v VARCHAR(20))",
    )
    .await;
    let proxy = FaultProxy::start(kinesalite.port, 5).await;
    let filter = TableFilter {
        include: vec!["s.a".parse().expect("pattern")],
        exclude: Vec::new(),
    };
    let publisher =
        LivePublisher::start(&db, &proxy.endpoint(), fast_retries("stalled"), filter).await;
    let gauges = GaugeMax::start(publisher.metrics.clone());
    proxy.set(Faults {
        down: true,
        ..Faults::default()
    });
    db.exec("INSERT INTO s.a VALUES (1, 'first')").await;
    publisher.wait_rows(1).await;
    // Thousands of commits of a table the filter leaves out, while the stream is down.
    one_row_transactions(&db, "s.b", 1, 3_000, 100).await;
    db.exec("INSERT INTO s.a VALUES (2, 'second')").await;
    publisher.wait_rows(2).await;
    let queued_while_down = publisher.metrics.ack_queue_len.get();
    proxy.set(Faults::default());
    let summary = publisher.stop().await;
    let (_, max_queue) = gauges.finish().await;
    println!(
        "stalled stream, 3,000 filtered commits: ack queue at most {max_queue} ({queued_while_down} before the stream came back)"
    );
    assert!(
        max_queue <= 8,
        "ack queue reached {max_queue} entries for 2 rows in flight: one per filtered commit"
    );
    assert_eq!(kinesalite.read_all("stalled").await.len(), 2);
    let (file, end) = db.binlog_end().await;
    let cp = summary.checkpoint.expect("checkpoint");
    assert_eq!((cp.file.as_str(), cp.pos), (file.as_str(), end));
}

/// The binlog order of a record: `(file, pos, row)`, the delete half of a key change first.
type Order = (String, u64, u64, bool);

fn order_of(v: &serde_json::Value) -> Order {
    let p = &v["position"];
    (
        p["file"].as_str().expect("file").to_string(),
        p["pos"].as_u64().expect("pos"),
        p["row"].as_u64().expect("row"),
        !p["key_change"].as_bool().unwrap_or(false),
    )
}

/// Checks the stream of table `k.t` (primary key `(a, b)`) as a consumer that applies
/// "insert/update = upsert of the after image, delete = remove" sees it: every change of each
/// key value (old and new, removals included) is in one shard and in binlog order, and applying
/// the shards one after another (so in any interleaving across shards) rebuilds `expected`.
fn check_key_changes(
    records: &[(String, serde_json::Value)],
    expected: &std::collections::BTreeSet<(i64, String, i64)>,
) -> Vec<String> {
    use std::collections::{BTreeMap, HashMap};
    let key = |img: &serde_json::Value| {
        (
            img["a"].as_i64().expect("a"),
            img["b"].as_str().expect("b").to_string(),
        )
    };
    // Which updates have their old key's removal published as a delete at their position.
    let deleted_at: std::collections::HashSet<(String, u64, u64)> = records
        .iter()
        .filter(|(_, v)| v["position"]["key_change"] == serde_json::Value::Bool(true))
        .map(|(_, v)| {
            let (f, p, r, _) = order_of(v);
            (f, p, r)
        })
        .collect();
    // Per key value: the shard and binlog order of every record that changes it.
    let mut changes: HashMap<(i64, String), Vec<(String, Order)>> = HashMap::new();
    let mut table: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut by_shard: BTreeMap<&str, Vec<&serde_json::Value>> = BTreeMap::new();
    for (shard, v) in records {
        by_shard.entry(shard).or_default().push(v);
        let row = &v["row"];
        let order = order_of(v);
        let mut touch = |k: (i64, String)| {
            changes
                .entry(k)
                .or_default()
                .push((shard.clone(), order.clone()))
        };
        match v["type"].as_str().expect("type") {
            "WriteRowsEvent" | "DeleteRowsEvent" => touch(key(&row["values"])),
            "UpdateRowsEvent" => {
                let (old, new) = (key(&row["before_values"]), key(&row["after_values"]));
                let (f, p, r, _) = order.clone();
                if old != new && !deleted_at.contains(&(f, p, r)) {
                    // Nothing else says the old key value is gone: this record does.
                    touch(old);
                }
                touch(new);
            }
            other => panic!("type {other}"),
        }
    }
    for recs in by_shard.values() {
        for v in recs {
            let row = &v["row"];
            match v["type"].as_str().expect("type") {
                "WriteRowsEvent" => {
                    table.insert(key(&row["values"]), row["values"]["v"].as_i64().expect("v"));
                }
                "UpdateRowsEvent" => {
                    let after = &row["after_values"];
                    table.insert(key(after), after["v"].as_i64().expect("v"));
                }
                _ => {
                    table.remove(&key(&row["values"]));
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (k, list) in &changes {
        let shards: std::collections::HashSet<&str> =
            list.iter().map(|(s, _)| s.as_str()).collect();
        if shards.len() > 1 {
            problems.push(format!("key {k:?} changes in shards {shards:?}: {list:?}"));
        } else if list.windows(2).any(|w| w[0].1 >= w[1].1) {
            problems.push(format!("key {k:?} out of binlog order: {list:?}"));
        }
    }
    let rebuilt: std::collections::BTreeSet<(i64, String, i64)> =
        table.into_iter().map(|((a, b), v)| (a, b, v)).collect();
    if &rebuilt != expected {
        let extra: Vec<_> = rebuilt.difference(expected).take(5).collect();
        let missing: Vec<_> = expected.difference(&rebuilt).take(5).collect();
        problems.push(format!(
            "rebuilt table differs: {} extra rows (e.g. {extra:?}), {} missing (e.g. {missing:?})",
            rebuilt.difference(expected).count(),
            expected.difference(&rebuilt).count()
        ));
    }
    problems.sort();
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changing_updates_keep_every_key_value_in_order() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    db.exec("CREATE DATABASE k; CREATE TABLE k.t (a INT, b VARCHAR(4), v INT, PRIMARY KEY (a, b))")
        .await;
    let mut sql = String::new();
    for i in 1..=300 {
        sql.push_str(&format!(
            "INSERT INTO k.t VALUES ({i}, 'B', 0);
             UPDATE k.t SET b = 'C' WHERE a = {i} AND b = 'B';
             INSERT INTO k.t VALUES ({i}, 'B', 1);"
        ));
        if i % 3 == 0 {
            sql.push_str(&format!("UPDATE k.t SET v = 2 WHERE a = {i} AND b = 'B';"));
        }
        if i % 2 == 0 {
            // A key change nothing re-uses: the old key value must end up gone.
            sql.push_str(&format!(
                "UPDATE k.t SET b = 'D', v = 3 WHERE a = {i} AND b = 'C';"
            ));
        }
    }
    // Several key changes in one rows event, and deletes.
    sql.push_str(
        "UPDATE k.t SET a = a + 1000 WHERE a <= 20 AND b = 'B';
         DELETE FROM k.t WHERE a BETWEEN 290 AND 300;",
    );
    tokio::time::timeout(Duration::from_secs(120), db.exec(&sql))
        .await
        .expect("workload within 120 s");
    let expected: std::collections::BTreeSet<(i64, String, i64)> = {
        use mysql_async::prelude::Queryable;
        let mut conn = db.root().await;
        let rows: Vec<(i64, String, i64)> =
            conn.query("SELECT a, b, v FROM k.t").await.expect("select");
        let _ = conn.disconnect().await;
        rows.into_iter().collect()
    };

    for (stream, aggregate, mode) in [
        ("keychange", false, PartitionKey::PrimaryKey),
        ("keychange-agg", true, PartitionKey::PrimaryKey),
        ("keychange-table", false, PartitionKey::Table),
    ] {
        kinesalite.create_stream(stream, 4).await;
        let mut k = fast_retries(stream);
        k.aggregate = aggregate;
        k.partition_key = mode;
        let mut cfg = config(&db, StartFrom::Earliest);
        cfg.encode.position = true;
        let metrics = Arc::new(Metrics::new());
        tokio::time::timeout(
            Duration::from_secs(120),
            binlogstream_tests::capture::publish_to_kinesis(
                cfg,
                &kinesalite.endpoint(),
                k,
                metrics.clone(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("not published within 120 s: {}", metrics.render()))
        .expect("publish");
        let raw = kinesalite.read_all(stream).await;
        let records: Vec<(String, serde_json::Value)> = if aggregate {
            binlogstream_tests::node_agg::deaggregate(&raw)
                .into_iter()
                .map(|(shard, _, data)| (shard, serde_json::from_slice(&data).expect("json")))
                .collect()
        } else {
            raw.iter().map(|r| (r.shard.clone(), r.json())).collect()
        };
        let problems = check_key_changes(&records, &expected);
        println!(
            "{stream}: {} records, {} key-change deletes, {} problems",
            records.len(),
            records
                .iter()
                .filter(|(_, v)| v["position"]["key_change"] == serde_json::Value::Bool(true))
                .count(),
            problems.len()
        );
        assert!(
            problems.is_empty(),
            "{stream}: {} problems, e.g. {:#?}",
            problems.len(),
            &problems[..problems.len().min(4)]
        );
    }
}

/// Per shard of `stream`: (range, depth in the shard lineage: parents before children).
async fn shard_lineage(
    kinesalite: &Kinesalite,
    stream: &str,
) -> std::collections::HashMap<String, ((u128, u128), usize)> {
    let client = kinesalite.client().await;
    let out = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut parents: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut ranges = std::collections::HashMap::new();
    for s in out.shards() {
        let r = s.hash_key_range().expect("range");
        ranges.insert(
            s.shard_id().to_string(),
            (
                r.starting_hash_key().parse::<u128>().expect("start"),
                r.ending_hash_key().parse::<u128>().expect("end"),
            ),
        );
        parents.insert(
            s.shard_id().to_string(),
            [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect(),
        );
    }
    fn depth(id: &str, parents: &std::collections::HashMap<String, Vec<String>>) -> usize {
        parents
            .get(id)
            .map(|ps| ps.iter().map(|p| 1 + depth(p, parents)).max().unwrap_or(0))
            .unwrap_or(0)
    }
    ranges
        .into_iter()
        .map(|(id, r)| {
            let d = depth(&id, &parents);
            (id, (r, d))
        })
        .collect()
}

async fn open_shards(kinesalite: &Kinesalite, stream: &str) -> Vec<(String, u128, u128)> {
    let client = kinesalite.client().await;
    let out = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut open: Vec<(String, u128, u128)> = out
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .map(|s| {
            let r = s.hash_key_range().expect("range");
            (
                s.shard_id().to_string(),
                r.starting_hash_key().parse().expect("start"),
                r.ending_hash_key().parse().expect("end"),
            )
        })
        .collect();
    open.sort_by_key(|s| s.1);
    open
}

/// `count` inserts from `from` and an update of `updates` of them, in transactions of ten.
async fn rows_in_tens(db: &MariaDb, from: usize, count: usize, updates: usize, n: i64) {
    for chunk in (0..count).step_by(50) {
        let mut sql = String::new();
        for t in (chunk..(chunk + 50).min(count)).step_by(10) {
            sql.push_str("BEGIN;");
            for i in t..(t + 10).min(count) {
                let id = from + i;
                sql.push_str(&format!("INSERT INTO r.t VALUES ({id}, 0);"));
            }
            sql.push_str("COMMIT;");
        }
        db.exec(&sql).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for chunk in (1..=updates).step_by(100) {
        db.exec(&format!(
            "UPDATE r.t SET n = {n} WHERE id BETWEEN {chunk} AND {}",
            chunk + 99
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 500 rows in one statement, ids from `from`.
async fn big_insert(db: &MariaDb, from: usize) {
    db.exec(&format!(
        "INSERT INTO r.t WITH RECURSIVE s(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM s WHERE i < {})
         SELECT i, 0 FROM s",
        from + 499
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_survive_split_and_merge_for_kcl_readers() {
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    let stream = "resharded";
    kinesalite.create_stream(stream, 4).await;
    db.exec("CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY, n INT)")
        .await;
    let mut k = fast_retries(stream);
    k.aggregate = true;
    let publisher =
        LivePublisher::start(&db, &kinesalite.endpoint(), k, TableFilter::default()).await;
    let client = kinesalite.client().await;

    rows_in_tens(&db, 1, 1_500, 0, 0).await;
    // Split the first shard in the middle of its range while rows stream.
    let open = open_shards(&kinesalite, stream).await;
    let (first, lo, hi) = open[0].clone();
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&first)
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .expect("split");
    kinesalite.wait_active(stream).await;
    // One large rows event first: the aggregates it fills for the split shard hold keys of
    // both children.
    big_insert(&db, 10_001).await;
    rows_in_tens(&db, 1_501, 1_500, 1_000, 1).await;
    // Merge two adjacent shards that were never split.
    let open = open_shards(&kinesalite, stream).await;
    let (a, b) = (
        open[open.len() - 2].0.clone(),
        open[open.len() - 1].0.clone(),
    );
    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(&a)
        .adjacent_shard_to_merge(&b)
        .send()
        .await
        .expect("merge");
    kinesalite.wait_active(stream).await;
    big_insert(&db, 20_001).await;
    rows_in_tens(&db, 3_001, 1_500, 1_000, 2).await;
    let expected_rows = 4_500 + 2_000 + 1_000;
    publisher.wait_rows(expected_rows).await;
    let metrics = publisher.metrics.clone();
    publisher.stop().await;

    // Read every shard, parents and children, de-aggregate with the npm library, and drop
    // what the KCL drops: sub-records whose key hashes outside the shard they were read from.
    let lineage = shard_lineage(&kinesalite, stream).await;
    assert_eq!(lineage.len(), 4 + 2 + 1, "4 shards, a split and a merge");
    let raw = kinesalite.read_all(stream).await;
    let users = binlogstream_tests::node_agg::deaggregate(&raw);
    let mut index_in_shard: std::collections::HashMap<String, usize> = Default::default();
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    for (shard, key, data) in users {
        let ((lo, hi), depth) = lineage[&shard];
        let i = index_in_shard.entry(shard.clone()).or_default();
        *i += 1;
        if !(lo..=hi).contains(&publisher::sink::kinesis::kpl::hash_key(&key)) {
            dropped += 1;
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&data).expect("json");
        kept.push((key, (depth, shard, *i), order_of(&v)));
    }
    // A KCL reader finishes a parent shard before its children: per key, records in the
    // order (depth, position in shard).
    // Where a KCL reader meets a record: (lineage depth, shard, index in shard).
    type At = (usize, String, usize);
    let mut by_key: std::collections::HashMap<String, Vec<(At, Order)>> = Default::default();
    for (key, at, order) in &kept {
        by_key
            .entry(key.clone())
            .or_default()
            .push((at.clone(), order.clone()));
    }
    let distinct: std::collections::HashSet<&Order> = kept.iter().map(|(_, _, o)| o).collect();
    let mut violated = Vec::new();
    for (key, list) in &mut by_key {
        list.sort();
        if list.windows(2).any(|w| w[0].1 >= w[1].1) {
            violated.push(key.clone());
        }
    }
    let resent = metrics.reshard_resent.get();
    println!(
        "reshard: {} of {expected_rows} rows readable by a KCL reader, {} duplicates, {dropped} sub-records outside their shard's range (dropped), {resent} re-sent, {} keys out of order",
        distinct.len(),
        kept.len() - distinct.len(),
        violated.len()
    );
    assert_eq!(
        distinct.len(),
        expected_rows as usize,
        "every row reaches a KCL reader"
    );
    assert!(
        violated.is_empty(),
        "per-key order violated: {:?}",
        &violated[..violated.len().min(5)]
    );
    assert!(
        resent > 0,
        "the split made aggregates land on a child shard"
    );
}
