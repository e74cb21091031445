//! Snapshots against a real MariaDB: existing rows interleaved with live changes, checked by
//! rebuilding every table from the stream and comparing it with the source (as the binlog
//! path encodes it), under a writer that inserts, updates (keys too) and deletes meanwhile.
//!
//! Sizes: SNAPSHOT_ROWS (default 20000 over all tables; the issue's full size is 1000000).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use binlogstream_tests::{
    capture::{config, read_all},
    kinesis::Kinesalite,
    mariadb::{MariaDb, Metadata},
};
use mysql_async::prelude::Queryable;
use publisher::{
    checkpoint::NoCheckpoint,
    decode::RowChange,
    metrics::Metrics,
    pipeline::{run_with_snapshot, PipelineOptions},
    position::{Checkpoint, StartFrom},
    sink::{Sink, SinkError},
    snapshot::{binlog_cmp, Driver, Method, SnapshotOptions},
    source::{Reader, SourceConfig},
};
use serde_json::Value;

fn total_rows() -> usize {
    std::env::var("SNAPSHOT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Tables and the columns that identify a row (empty: none, compared as a multiset).
const TABLES: &[(&str, &[&str])] = &[
    ("ints", &["id"]),
    ("composite", &["a", "b"]),
    ("ci", &["k"]),
    ("nopk", &[]),
    ("uniq", &["u"]),
    ("wide", &["id"]),
];

fn key_cols(table: &str) -> &'static [&'static str] {
    TABLES
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, k)| *k)
        .unwrap_or(&[])
}

async fn create_tables(db: &MariaDb, n: usize) {
    let share = |pct: usize| (n * pct / 100).max(10);
    db.exec(&format!(
        "CREATE DATABASE snap CHARACTER SET utf8mb4;
         CREATE TABLE snap.ints (id INT PRIMARY KEY, v INT, s VARCHAR(20));
         CREATE TABLE snap.composite (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b));
         CREATE TABLE snap.ci (k VARCHAR(20) COLLATE utf8mb4_general_ci PRIMARY KEY, v INT);
         CREATE TABLE snap.nopk (x INT, y VARCHAR(10));
         CREATE TABLE snap.uniq (u INT NOT NULL, v INT, UNIQUE KEY uk (u));
         CREATE TABLE snap.wide (id INT PRIMARY KEY, b BIGINT, d DECIMAL(12,3), dt DATETIME(3),
             ts TIMESTAMP(6) NULL, vc VARCHAR(64), tx TEXT, db DOUBLE, e ENUM('x','y','z'),
             st SET('p','q','r'), dy DATE, j JSON, bn BINARY(4), bt BIT(5), yr YEAR, tm TIME(2),
             ui INT UNSIGNED, mi MEDIUMINT, fl FLOAT);
         INSERT INTO snap.ints SELECT seq, seq * 7, CONCAT('s', seq) FROM snap.seq_1_to_{ints};
         INSERT INTO snap.composite SELECT seq DIV 3, CONCAT('b', seq MOD 3), seq FROM snap.seq_1_to_{comp};
         INSERT INTO snap.ci SELECT IF(seq MOD 2 = 0, CONCAT('K', seq), CONCAT('k', seq)), seq FROM snap.seq_1_to_{ci};
         INSERT INTO snap.ci VALUES ('a', 1), ('B', 2), ('c', 3);
         INSERT INTO snap.nopk SELECT seq MOD 50, CONCAT('y', seq MOD 7) FROM snap.seq_1_to_{nopk};
         INSERT INTO snap.uniq SELECT seq * 2, seq FROM snap.seq_1_to_{uniq};
         INSERT INTO snap.wide SELECT seq, seq * 1000003, seq / 7, '2024-02-29 12:34:56.789' + INTERVAL seq SECOND,
             '2021-06-01 00:00:00.123456' + INTERVAL seq MINUTE, REPEAT('v', seq MOD 60), REPEAT('t', seq MOD 200),
             seq * 1.5, ELT(1 + seq MOD 3, 'x', 'y', 'z'), IF(seq MOD 2, 'p,r', ''), '2020-01-01' + INTERVAL seq DAY,
             JSON_OBJECT('n', seq, 'a', JSON_ARRAY(1, 'two')), UNHEX(LPAD(HEX(seq), 8, '0')), seq MOD 32,
             1901 + seq MOD 250, SEC_TO_TIME(seq MOD 86400) + INTERVAL 0.25 SECOND, seq * 3, -seq, seq / 4
             FROM snap.seq_1_to_{wide};",
        ints = share(40),
        comp = share(15),
        ci = share(15),
        nopk = share(10),
        uniq = share(10),
        wide = share(10),
    ))
    .await;
}

/// Random inserts, updates (primary and unique key changes included) and deletes on every
/// table until told to stop; returns each statement's latency.
async fn writer(
    db_url: mysql_async::Opts,
    stop: Arc<std::sync::atomic::AtomicBool>,
    n: usize,
    base: u64,
) -> Result<Vec<Duration>, String> {
    use rand::Rng;
    let mut conn = writer_connect(&db_url).await?;
    let mut lat = Vec::new();
    // Connections lost (and reopened) so far: the writer is load, not what is checked, so a
    // lost connection is reopened and the writer goes on (the statement's outcome is
    // unknown, which the checks do not depend on: they compare with the source's tables).
    let mut lost = Vec::new();
    let mut next_id = base;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (op, r) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(0..16u32), rng.gen_range(1..n.max(2) as u64))
        };
        next_id += 1;
        let sql = match op {
            0 => format!("INSERT INTO snap.ints VALUES ({next_id}, 1, 'new')"),
            1 => format!("UPDATE snap.ints SET v = v + 1, s = 'upd' WHERE id = {r}"),
            2 => format!("DELETE FROM snap.ints WHERE id = {r}"),
            3 => format!("UPDATE IGNORE snap.ints SET id = {next_id} WHERE id = {r}"),
            4 => format!("UPDATE IGNORE snap.composite SET b = CONCAT(b, 'x') WHERE a = {} LIMIT 1", r / 3),
            5 => format!("DELETE FROM snap.composite WHERE a = {} LIMIT 1", r / 3),
            6 => format!("INSERT IGNORE INTO snap.composite VALUES ({r}, 'n', 5)"),
            7 => format!("UPDATE snap.ci SET k = UPPER(k), v = v + 1 WHERE k = 'k{r}'"),
            8 => format!("DELETE FROM snap.ci WHERE k = 'K{r}'"),
            9 => format!("INSERT IGNORE INTO snap.ci VALUES ('n{next_id}', 9)"),
            10 => format!("UPDATE snap.nopk SET y = 'w' WHERE x = {} LIMIT 1", r % 50),
            11 => format!("DELETE FROM snap.nopk WHERE x = {} LIMIT 1", r % 50),
            12 => format!("UPDATE IGNORE snap.uniq SET u = {next_id} WHERE u = {}", r * 2),
            13 => format!("INSERT IGNORE INTO snap.uniq VALUES ({next_id}, 3)"),
            14 => format!(
                "UPDATE snap.wide SET vc = 'changed', j = JSON_OBJECT('w', {r}), st = 'q', ts = NULL WHERE id = {}",
                r / 10 + 1
            ),
            _ => format!("DELETE FROM snap.wide WHERE id = {}", r / 10 + 1),
        };
        let t = Instant::now();
        match conn.query_drop(&sql).await {
            Ok(()) => lat.push(t.elapsed()),
            Err(e) if connection_lost(&e) && lost.len() < 3 => {
                let what = format!("{sql}: {e} (after {:?})", t.elapsed());
                eprintln!("writer: connection lost, reconnecting: {what}");
                lost.push(what);
                conn = writer_connect(&db_url)
                    .await
                    .map_err(|e| format!("{e}; lost before: {lost:?}"))?;
            }
            Err(e) => {
                return Err(format!(
                    "{sql}: {e:?} (after {:?}; connections lost before: {lost:?})",
                    t.elapsed()
                ))
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = conn.disconnect().await;
    Ok(lat)
}

/// The writer's connection; a connection lost while it opens (a handshake reset on a
/// loaded machine) is tried again, twice.
async fn writer_connect(url: &mysql_async::Opts) -> Result<mysql_async::Conn, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match mysql_async::Conn::new(url.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if connection_lost(&e) && attempt < 3 => {
                eprintln!("writer: connecting failed, trying again: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("writer connection: {e:?}")),
        }
    }
}

/// The connection itself is gone (reset, closed, killed, server going away), as opposed to
/// the statement failing.
fn connection_lost(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(d) => {
            matches!(d, mysql_async::DriverError::ConnectionClosed)
        }
        mysql_async::Error::Server(s) => matches!(s.code, 1053 | 1927 | 2006 | 2013 | 4031),
        _ => false,
    }
}

/// The writer's latencies; when it failed, the panic carries the server's log (why the
/// server ended the connection, if it says).
async fn writer_result(
    db: &MariaDb,
    w: impl std::future::Future<Output = Result<Result<Vec<Duration>, String>, tokio::task::JoinError>>,
) -> Vec<Duration> {
    match w.await.expect("writer task") {
        Ok(lat) => lat,
        Err(e) => {
            let log = db.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "writer failed: {e}\nmariadbd log (last lines):\n{}",
                tail.join("\n")
            )
        }
    }
}

fn percentile(lat: &mut [Duration], p: f64) -> Duration {
    lat.sort();
    lat.get(((lat.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or_default()
}

#[derive(Default)]
struct Shared {
    rows: Vec<RowChange>,
    /// When each row reached the sink.
    arrived: Vec<Instant>,
    last: Option<Checkpoint>,
}

/// Delivers at once; keeps every row and the last boundary for the test.
struct SharedSink(Arc<Mutex<Shared>>, Option<Checkpoint>);

impl Sink for SharedSink {
    async fn write_row(&mut self, row: RowChange) -> Result<(), SinkError> {
        let mut shared = self.0.lock().expect("lock");
        shared.rows.push(row);
        shared.arrived.push(Instant::now());
        Ok(())
    }

    async fn boundary(&mut self, cp: Checkpoint) -> Result<(), SinkError> {
        self.0.lock().expect("lock").last = Some(cp.clone());
        self.1 = Some(cp);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        Ok(self.1.take())
    }
}

/// Runs a publisher in-process (live) with `opts` until the snapshot is done, `done` is set
/// and the stream has caught up with the binlog's end.
async fn publish_until_caught_up(
    db: &MariaDb,
    cfg: SourceConfig,
    checkpoint: Option<Checkpoint>,
    opts: SnapshotOptions,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<RowChange> {
    publish_until_caught_up_timed(db, cfg, checkpoint, opts, done)
        .await
        .0
}

/// [`publish_until_caught_up`], also returning when each row reached the sink.
async fn publish_until_caught_up_timed(
    db: &MariaDb,
    cfg: SourceConfig,
    checkpoint: Option<Checkpoint>,
    opts: SnapshotOptions,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<RowChange>, Vec<Instant>) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let progress = opts.progress.clone();
    let reader = Reader::open(cfg.clone(), checkpoint.clone())
        .await
        .expect("open");
    let driver = Driver::start(
        &cfg,
        &reader,
        checkpoint.as_ref(),
        opts,
        Arc::new(Metrics::new()),
    )
    .await
    .expect("snapshot start");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink_shared = shared.clone();
    let task = tokio::spawn(async move {
        let mut sink = SharedSink(sink_shared, None);
        let popts = PipelineOptions::default();
        run_with_snapshot(
            reader,
            driver,
            &mut sink,
            &mut NoCheckpoint,
            &popts,
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "snapshot did not finish in time");
        assert!(!task.is_finished(), "publisher stopped: {:?}", task.await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let view = progress.view();
        if !(view.state.is_empty() || view.state == "Done")
            || !done.load(std::sync::atomic::Ordering::Relaxed)
        {
            continue;
        }
        let end = db.binlog_end().await;
        let at = shared.lock().expect("lock").last.clone();
        if at.is_some_and(|cp| binlog_cmp(&(cp.file, cp.pos), &end).is_ge()) {
            break;
        }
    }
    let _ = stop.send(());
    task.await.expect("task").expect("publisher");
    let mut shared = shared.lock().expect("lock");
    (
        std::mem::take(&mut shared.rows),
        std::mem::take(&mut shared.arrived),
    )
}

/// A change's `(file, pos, row)`, which the two records of a key change share.
fn position_of(r: &Value) -> String {
    let p = &r["position"];
    format!("{}:{}:{}", p["file"], p["pos"], p["row"])
}

fn canonical(v: &Value) -> String {
    v.to_string()
}

fn key_of(table: &str, values: &Value) -> String {
    let k: Vec<Value> = key_cols(table)
        .iter()
        .map(|c| values.get(*c).cloned().unwrap_or(Value::Null))
        .collect();
    Value::Array(k).to_string()
}

/// The tables as a consumer rebuilds them from `records` in order: by key, or as multisets
/// for tables without one. Also checks per-key order: a snapshot row never differs from the
/// newer state the stream already delivered for its key, and never revives a key the stream
/// deleted. Returns (state, snapshot rows, snapshot rows for a key seen before (twice)).
#[allow(clippy::type_complexity)]
fn rebuild(
    records: &[Value],
    schema: &str,
) -> (
    BTreeMap<String, BTreeMap<String, Value>>,
    HashMap<String, Vec<String>>,
    usize,
    usize,
) {
    let mut keyed: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    let mut deleted: HashSet<(String, String)> = HashSet::new();
    let mut snapped: HashSet<(String, String)> = HashSet::new();
    let (mut snapshot_rows, mut twice) = (0, 0);
    // The (file, pos, row) of every update whose key change was published as a delete first.
    let split: HashSet<String> = records
        .iter()
        .filter(|r| r["position"]["key_change"] == Value::Bool(true))
        .map(position_of)
        .collect();
    for r in records {
        let table = r["table"].as_str().expect("table").to_string();
        if r["schema"] != schema {
            continue;
        }
        let is_snapshot = r["position"]["snapshot"] == Value::Bool(true);
        let ty = r["type"].as_str().expect("type");
        let row = &r["row"];
        if key_cols(&table).is_empty() {
            let m = multi.entry(table.clone()).or_default();
            let mut remove = |v: &Value| {
                let c = canonical(v);
                let i = m
                    .iter()
                    .position(|x| *x == c)
                    .unwrap_or_else(|| panic!("{table}: removing a row not there: {c}"));
                m.swap_remove(i);
            };
            match ty {
                "WriteRowsEvent" => m.push(canonical(&row["values"])),
                "DeleteRowsEvent" => remove(&row["values"]),
                _ => {
                    remove(&row["before_values"]);
                    m.push(canonical(&row["after_values"]));
                }
            }
            snapshot_rows += usize::from(is_snapshot);
            continue;
        }
        let t = keyed.entry(table.clone()).or_default();
        match ty {
            "WriteRowsEvent" => {
                let k = key_of(&table, &row["values"]);
                if is_snapshot {
                    snapshot_rows += 1;
                    if !snapped.insert((table.clone(), k.clone())) {
                        twice += 1;
                    }
                    assert!(
                        !deleted.contains(&(table.clone(), k.clone())),
                        "{table}: snapshot row revives key {k} the stream deleted"
                    );
                    if let Some(have) = t.get(&k) {
                        assert_eq!(have, &row["values"], "{table}: snapshot row for {k} differs from the newer state the stream delivered");
                    }
                }
                deleted.remove(&(table.clone(), k.clone()));
                t.insert(k, row["values"].clone());
            }
            "DeleteRowsEvent" => {
                let k = key_of(&table, &row["values"]);
                t.remove(&k);
                deleted.insert((table.clone(), k));
            }
            _ => {
                // An upsert of the after image, as docs/record-format.md tells consumers: a
                // primary-key change's removal of the old key is the delete published before
                // it under the old key (in another shard, on Kinesis). A table without a
                // primary key (here: keyed by a unique key) gets no such delete, so the old
                // key goes here, in the same record.
                let old = key_of(&table, &row["before_values"]);
                let new = key_of(&table, &row["after_values"]);
                if old != new && !split.contains(&position_of(r)) {
                    t.remove(&old);
                    deleted.insert((table.clone(), old));
                }
                deleted.remove(&(table.clone(), new.clone()));
                t.insert(new, row["after_values"].clone());
            }
        }
    }
    (keyed, multi, snapshot_rows, twice)
}

/// The source tables as the binlog path encodes them: each copied into `oracle` and the
/// copies' insert records read back.
async fn source_state(
    db: &MariaDb,
) -> (
    BTreeMap<String, BTreeMap<String, Value>>,
    HashMap<String, Vec<String>>,
) {
    let (file, pos) = db.binlog_end().await;
    let mut sql = String::from("CREATE DATABASE IF NOT EXISTS oracle CHARACTER SET utf8mb4;");
    for (t, _) in TABLES {
        sql.push_str(&format!(
            "DROP TABLE IF EXISTS oracle.{t}; CREATE TABLE oracle.{t} LIKE snap.{t}; INSERT INTO oracle.{t} SELECT * FROM snap.{t};"
        ));
    }
    db.exec(&sql).await;
    let mut cfg = config(db, StartFrom::FilePos { file, pos });
    cfg.filter = publisher::filter::TableFilter {
        include: vec!["oracle.*".parse().expect("pattern")],
        exclude: vec![],
    };
    let sink = read_all(cfg, None).await.expect("read oracle");
    let mut keyed: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    for r in sink.json() {
        let table = r["table"].as_str().expect("table").to_string();
        let values = r["row"]["values"].clone();
        if key_cols(&table).is_empty() {
            multi.entry(table).or_default().push(canonical(&values));
        } else {
            keyed
                .entry(table.clone())
                .or_default()
                .insert(key_of(&table, &values), values);
        }
    }
    (keyed, multi)
}

type State = (
    BTreeMap<String, BTreeMap<String, Value>>,
    HashMap<String, Vec<String>>,
);

fn assert_same(got: State, want: State) {
    assert_same_tables(
        got,
        want,
        &TABLES.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
    );
}

fn assert_same_tables(got: State, want: State, tables: &[&str]) {
    for t in tables {
        let empty = BTreeMap::new();
        let (g, w) = (
            got.0.get(*t).unwrap_or(&empty),
            want.0.get(*t).unwrap_or(&empty),
        );
        if key_cols(t).is_empty() {
            let mut g = got.1.get(*t).cloned().unwrap_or_default();
            let mut w = want.1.get(*t).cloned().unwrap_or_default();
            g.sort();
            w.sort();
            assert_eq!(g.len(), w.len(), "{t}: row count");
            assert!(g == w, "{t}: rows differ");
            continue;
        }
        for (k, v) in w {
            assert_eq!(g.get(k), Some(v), "{t}: key {k}");
        }
        assert_eq!(
            g.len(),
            w.len(),
            "{t}: row count (extra keys: {:?})",
            g.keys()
                .filter(|k| !w.contains_key(*k))
                .take(5)
                .collect::<Vec<_>>()
        );
    }
}

fn snap_cfg(db: &MariaDb) -> SourceConfig {
    let mut cfg = config(db, StartFrom::Snapshot);
    cfg.stop_at_end = false;
    cfg.encode.position = true;
    cfg.filter = publisher::filter::TableFilter {
        include: vec!["snap.*".parse().expect("pattern")],
        exclude: vec![],
    };
    cfg
}

async fn snapshot_under_writes(method: Method) {
    let db = MariaDb::start(Metadata::NoLog).await;
    let n = total_rows();
    create_tables(&db, n).await;

    // The writer's latency without a snapshot, for comparison.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = tokio::spawn(writer(db.root_opts(), stop.clone(), n, 10_000_000));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut quiet = writer_result(&db, w).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = tokio::spawn(writer(db.root_opts(), stop.clone(), n, 20_000_000));
    let opts = SnapshotOptions {
        chunk_rows: 500,
        method: Some(method),
        ..SnapshotOptions::default()
    };
    let progress = opts.progress.clone();
    let writer_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = writer_done.clone();
    let stopper = tokio::spawn(async move {
        // Keep writing for the whole snapshot (and a little after).
        while progress.view().state != "Done" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let lat = w.await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        lat
    });
    let t = Instant::now();
    let rows = publish_until_caught_up(&db, snap_cfg(&db), None, opts, writer_done).await;
    let busy = stopper.await.expect("stopper");
    let mut busy = writer_result(&db, async { busy }).await;
    let records: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let (keyed, multi, snapshot_rows, twice) = rebuild(&records, "snap");
    println!(
        "{method}: {snapshot_rows} snapshot rows, {} records, {twice} keys snapshotted twice, {:.1}s; writer p99/max without snapshot {:?}/{:?} ({} statements), during {:?}/{:?} ({} statements)",
        records.len(),
        t.elapsed().as_secs_f64(),
        percentile(&mut quiet, 0.99),
        quiet.iter().max().copied().unwrap_or_default(),
        quiet.len(),
        percentile(&mut busy, 0.99),
        busy.iter().max().copied().unwrap_or_default(),
        busy.len(),
    );
    assert!(snapshot_rows > n / 2, "snapshot rows: {snapshot_rows}");
    assert_eq!(twice, 0, "one run snapshots every key once");
    assert_same((keyed, multi), source_state(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_snapshot_under_writes_rebuilds_every_table() {
    snapshot_under_writes(Method::ConsistentSnapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_snapshot_under_writes_rebuilds_every_table() {
    snapshot_under_writes(Method::Watermark).await;
}

/// Keyless tables are read in one pass, each in a read view tied to a binlog position. Under
/// the watermark method that tie must be exact too: with two writers committing to the
/// tables as fast as they can, a change committed while the read view opens is in the rows
/// or in the stream, exactly once. Each round is a fresh `--start snapshot` run (so a fresh
/// read view per table), checked by rebuilding each table as a multiset; SNAPSHOT_ROUNDS
/// rounds (default 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_snapshot_of_keyless_tables_under_hot_writes_loses_and_repeats_nothing() {
    let rounds: usize = std::env::var("SNAPSHOT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE hot;
         CREATE TABLE hot.k0 (a INT, b INT); INSERT INTO hot.k0 SELECT seq MOD 40, seq FROM hot.seq_1_to_300;
         CREATE TABLE hot.k1 (a INT, b INT); INSERT INTO hot.k1 SELECT seq MOD 40, seq FROM hot.seq_1_to_300;",
    )
    .await;
    for round in 0..rounds {
        keyless_round(&db, round as u64).await;
    }
}

async fn keyless_round(db: &MariaDb, round: u64) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hot_writer = |seed: u64| {
        let (url, stop) = (db.root_opts(), stop.clone());
        tokio::spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut conn = writer_connect(&url).await?;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (t, a) = (rng.gen_range(0..2), rng.gen_range(0..40));
                let sql = match rng.gen_range(0..3) {
                    0 => format!(
                        "INSERT INTO hot.k{t} VALUES ({a}, {})",
                        seed * 1_000_000 + n
                    ),
                    1 => format!("DELETE FROM hot.k{t} WHERE a = {a} LIMIT 1"),
                    _ => format!("UPDATE hot.k{t} SET b = b + 1 WHERE a = {a} LIMIT 1"),
                };
                conn.query_drop(&sql)
                    .await
                    .map_err(|e| format!("{sql}: {e}"))?;
                n += 1;
            }
            let _ = conn.disconnect().await;
            Ok::<u64, String>(n)
        })
    };
    let writers = [hot_writer(round * 2 + 1), hot_writer(round * 2 + 2)];
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut cfg = snap_cfg(db);
    cfg.filter.include = vec!["hot.*".parse().expect("pattern")];
    let opts = SnapshotOptions {
        method: Some(Method::Watermark),
        ..SnapshotOptions::default()
    };
    let progress = opts.progress.clone();
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, stop2) = (writers_done.clone(), stop.clone());
    let stopper = tokio::spawn(async move {
        while progress.view().state != "Done" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop2.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut statements = 0;
        for w in writers {
            statements += w.await.expect("writer task").expect("writer");
        }
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        statements
    });
    let rows = publish_until_caught_up(db, cfg, None, opts, writers_done).await;
    let statements = stopper.await.expect("stopper");

    // Each table as a consumer rebuilds it: a multiset (neither table is in TABLES).
    let records: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let (_, mut got, snapshot_rows, _) = rebuild(&records, "hot");
    println!(
        "keyless round {round}: {statements} statements, {snapshot_rows} snapshot rows, {} records",
        rows.len()
    );
    let mut conn = mysql_async::Conn::new(db.root_opts())
        .await
        .expect("connect");
    for t in ["k0", "k1"] {
        let mut want: Vec<String> = conn
            .query_map(format!("SELECT a, b FROM hot.{t}"), |(a, b): (i64, i64)| {
                canonical(&serde_json::json!({"a": a, "b": b}))
            })
            .await
            .expect("select");
        let mut have = got.remove(t).unwrap_or_default();
        want.sort();
        have.sort();
        assert_eq!(have.len(), want.len(), "round {round}, hot.{t}: row count");
        assert!(have == want, "round {round}, hot.{t}: rows differ");
    }
    let _ = conn.disconnect().await;
}

/// A transaction left open on a keyless table holds off the watermark method's brief lock:
/// the snapshot tries again later, the stream goes on meanwhile (a change of another table
/// is delivered before the keyless table's rows), and once the transaction commits, the
/// table is read with its change exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_snapshot_waits_out_an_open_transaction_on_a_keyless_table_while_the_stream_goes_on(
) {
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE hot;
         CREATE TABLE hot.a_keyless (a INT, b INT); INSERT INTO hot.a_keyless SELECT seq, seq FROM hot.seq_1_to_50;
         CREATE TABLE hot.b_log (id INT PRIMARY KEY);",
    )
    .await;
    let mut holder = mysql_async::Conn::new(db.root_opts())
        .await
        .expect("connect");
    holder
        .query_drop("BEGIN; INSERT INTO hot.a_keyless VALUES (99, 99)")
        .await
        .expect("open transaction");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, url) = (done.clone(), db.root_opts());
    let meanwhile = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut c = mysql_async::Conn::new(url).await.expect("connect");
        c.query_drop("INSERT INTO hot.b_log VALUES (1000)")
            .await
            .expect("insert");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let committed = Instant::now();
        holder.query_drop("COMMIT").await.expect("commit");
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = (c.disconnect().await, holder.disconnect().await);
        committed
    });
    let mut cfg = snap_cfg(&db);
    cfg.filter.include = vec!["hot.*".parse().expect("pattern")];
    let opts = SnapshotOptions {
        method: Some(Method::Watermark),
        ..SnapshotOptions::default()
    };
    let (rows, arrived) = publish_until_caught_up_timed(&db, cfg, None, opts, done).await;
    let committed = meanwhile.await.expect("meanwhile");
    let records: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let live = records
        .iter()
        .position(|r| r["table"] == "b_log" && r["position"]["snapshot"] != Value::Bool(true))
        .expect("the live insert into b_log");
    let first_keyless = records
        .iter()
        .position(|r| r["table"] == "a_keyless")
        .expect("a_keyless rows");
    assert!(
        live < first_keyless && arrived[live] < committed,
        "the stream waited for the lock: the live change (record {live}) arrived {:?} after the \
         holding transaction committed; keyless rows from record {first_keyless}",
        arrived[live].saturating_duration_since(committed)
    );
    let mut keyless: Vec<(i64, i64)> = records
        .iter()
        .filter(|r| r["table"] == "a_keyless")
        .map(|r| {
            assert_eq!(r["position"]["snapshot"], Value::Bool(true), "{r}");
            let v = &r["row"]["values"];
            (v["a"].as_i64().expect("a"), v["b"].as_i64().expect("b"))
        })
        .collect();
    keyless.sort();
    let want: Vec<(i64, i64)> = (1..=50).chain([99]).map(|i| (i, i)).collect();
    assert_eq!(
        keyless, want,
        "a_keyless: every row once, the held change included"
    );
}

/// The publisher binary into kinesalite (4 shards) under the writer, with `method` and with or
/// without KPL aggregation: the tables rebuilt from the shards (each read in order, the
/// aggregates opened by the npm de-aggregator) equal the source, per-key order checks included.
async fn snapshot_into_kinesis(method: &str, aggregate: bool) {
    let bin = publisher_bin();
    let (db, kinesalite) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    let n = total_rows();
    create_tables(&db, n).await;
    kinesalite.create_stream("snap", 4).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &db.repl_password).expect("pw");
    let cp = dir.path().join("cp.json");
    let log = dir.path().join("publisher.log");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = tokio::spawn(writer(db.root_opts(), stop.clone(), n, 40_000_000));
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["run", "--source", &db.repl_url(), "--password-file"])
        .arg(&pw)
        .args(["--start", "snapshot", "--include", "snap.*", "--position"])
        .args(["--snapshot-method", method, "--snapshot-chunk-rows", "500"])
        .args(["--heartbeat-secs", "1", "--server-id", "4343"])
        .args(["--sink", "kinesis", "--stream", "snap"])
        .args([
            "--endpoint",
            &kinesalite.endpoint(),
            "--region",
            "us-east-1",
        ])
        .arg("--checkpoint-file")
        .arg(&cp)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    if aggregate {
        cmd.arg("--aggregate");
    }
    let mut child = cmd.spawn().expect("spawn publisher");
    // Writes go on a little past the snapshot's end, then the stream catches up.
    let run = Run {
        child: &mut child,
        checkpoint: &cp,
        log: Some(&log),
    };
    finish_and_catch_up(&db, run, Duration::from_millis(300), stop, w).await;
    // Everything up to the checkpoint is acknowledged by Kinesis.
    child.kill().expect("kill");
    let _ = child.wait();

    let raw = kinesalite.read_all("snap").await;
    let bodies: Vec<Vec<u8>> = if aggregate {
        let rows = binlogstream_tests::node_agg::deaggregate(&raw);
        // Live changes trickle in between chunks and close small aggregates at the linger,
        // so only a loose bound: many rows per record.
        assert!(
            raw.len() * 2 < rows.len(),
            "{} records for {} rows: aggregated",
            raw.len(),
            rows.len()
        );
        rows.into_iter().map(|(_, _, data)| data).collect()
    } else {
        raw.into_iter().map(|r| r.data).collect()
    };
    let records: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_slice(b).expect("json record"))
        .collect();
    let (keyed, multi, snapshot_rows, twice) = rebuild(&records, "snap");
    println!(
        "{method} into kinesalite (aggregate {aggregate}): {snapshot_rows} snapshot rows, {} records, {twice} keys snapshotted twice",
        records.len()
    );
    assert!(snapshot_rows > n / 2, "snapshot rows: {snapshot_rows}");
    assert_eq!(twice, 0, "one run snapshots every key once");
    assert_same((keyed, multi), source_state(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_snapshot_into_aggregated_kinesis_rebuilds_every_table_from_the_shards() {
    snapshot_into_kinesis("consistent-snapshot", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_snapshot_into_kinesis_rebuilds_every_table_from_the_shards() {
    snapshot_into_kinesis("watermark", false).await;
}

/// The publisher binary next to this test's (built first when missing).
fn publisher_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("publisher");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "publisher", "--bin", "publisher"])
        .env("CARGO_TARGET_DIR", dir.parent().expect("target root"))
        .status()
        .expect("cargo build publisher");
    assert!(status.success(), "building the publisher failed");
    assert!(bin.exists(), "no publisher binary at {}", bin.display());
    bin
}

/// A publisher binary running with a file checkpoint; `log`, its stderr if kept.
struct Run<'a> {
    child: &'a mut std::process::Child,
    checkpoint: &'a std::path::Path,
    log: Option<&'a std::path::Path>,
}

/// Waits (5 minutes at most, the publisher running throughout) until the checkpoint records
/// the snapshot finished; `linger` later stops the writer, then waits until the checkpoint
/// reaches the binlog's end.
async fn finish_and_catch_up(
    db: &MariaDb,
    run: Run<'_>,
    linger: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    writer: tokio::task::JoinHandle<Result<Vec<Duration>, String>>,
) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut running = |what: &str| {
        assert!(Instant::now() < deadline, "{what}");
        let log = run
            .log
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default();
        assert!(
            run.child.try_wait().expect("wait").is_none(),
            "publisher exited: {log}"
        );
    };
    while !snapshot_done(run.checkpoint) {
        running("snapshot did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(linger).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer_result(db, writer).await;
    let end = db.binlog_end().await;
    while !read_checkpoint(run.checkpoint)
        .is_some_and(|c| binlog_cmp(&(c.file, c.pos), &end).is_ge())
    {
        running("publisher did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True once the checkpoint at `path` records the snapshot finished.
fn snapshot_done(path: &std::path::Path) -> bool {
    read_checkpoint(path)
        .and_then(|c| c.snapshot)
        .is_some_and(|s| !s.running())
}

fn read_checkpoint(path: &std::path::Path) -> Option<Checkpoint> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publisher_resumes_the_snapshot_after_the_last_delivered_chunk() {
    use rand::Rng;
    let bin = publisher_bin();
    let db = MariaDb::start(Metadata::NoLog).await;
    let n = total_rows();
    create_tables(&db, n).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &db.repl_password).expect("pw");
    let out = dir.path().join("out.jsonl");
    let cp = dir.path().join("cp.json");
    // Tables without a key are read in one pass and read again after a restart inside them;
    // this test is about the chunked ones.
    let keyed = ["ints", "composite", "ci", "uniq", "wide"];
    let include = keyed
        .iter()
        .map(|t| format!("snap.{t}"))
        .collect::<Vec<_>>()
        .join(",");
    let spawn = || {
        std::process::Command::new(&bin)
            .args(["run", "--source", &db.repl_url(), "--password-file"])
            .arg(&pw)
            .args([
                "--start",
                "snapshot",
                "--include",
                &include,
                "--position",
                "--snapshot-chunk-rows",
                "100",
            ])
            .args([
                "--checkpoint-interval-ms",
                "50",
                "--heartbeat-secs",
                "1",
                "--server-id",
                "4242",
            ])
            .arg(format!("--sink=file:{}", out.display()))
            .arg("--checkpoint-file")
            .arg(&cp)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn publisher")
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = tokio::spawn(writer(db.root_opts(), stop.clone(), n, 30_000_000));
    let mut kills = 0;
    for _ in 0..5 {
        let before = read_checkpoint(&cp).and_then(|c| c.snapshot);
        let mut child = spawn();
        // A random moment once this run has acknowledged a chunk of its own (the publisher's
        // speed decides how long that takes, so a fixed wait could miss the snapshot).
        let t = Instant::now();
        while !snapshot_done(&cp)
            && read_checkpoint(&cp).and_then(|c| c.snapshot) == before
            && t.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wait = rand::thread_rng().gen_range(0..150);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let done = snapshot_done(&cp);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        if done {
            break;
        }
        kills += 1;
        let at = read_checkpoint(&cp).and_then(|c| c.snapshot);
        println!(
            "killed {wait} ms after a chunk was acknowledged ({:?} after the start); checkpoint snapshot progress: {at:?}",
            t.elapsed()
        );
    }
    // The last run finishes the snapshot and catches up.
    let mut child = spawn();
    let run = Run {
        child: &mut child,
        checkpoint: &cp,
        log: None,
    };
    finish_and_catch_up(&db, run, Duration::ZERO, stop, w).await;
    child.kill().expect("kill");
    let _ = child.wait();
    let records: Vec<Value> = std::fs::read_to_string(&out)
        .expect("records")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let (k, m, snapshot_rows, twice) = rebuild(&records, "snap");
    println!(
        "{kills} kills: {snapshot_rows} snapshot rows, {twice} of them published twice, {} records",
        records.len()
    );
    assert!(
        kills >= 1,
        "the snapshot finished before the first kill; use more rows"
    );
    assert_same_tables((k, m), source_state(&db).await, &keyed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_snapshot_of_one_table_runs_once_per_request_id() {
    let db = MariaDb::start(Metadata::NoLog).await;
    create_tables(&db, 2_000).await;
    let mut cfg = snap_cfg(&db);
    cfg.start = StartFrom::Latest;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(true));

    // A stream without a snapshot: only new changes.
    let reader_cp = {
        let rows = publish_until_caught_up(
            &db,
            cfg.clone(),
            None,
            SnapshotOptions::default(),
            done.clone(),
        )
        .await;
        assert!(rows.is_empty(), "no snapshot was asked for");
        let end = db.binlog_end().await;
        Checkpoint {
            server: None,
            file: end.0,
            pos: end.1,
            rows_done: 0,
            tx_gtid: None,
            gtid_state: None,
            mysql_gtid_set: None,
            event_mark: None,
            event_ts: 0,
            snapshot: None,
        }
    };
    db.exec("UPDATE snap.ci SET v = -1 WHERE k = 'a'").await;

    // Resumed with a request for one table: every row of it, once, then the live change.
    let request = SnapshotOptions {
        tables: vec!["snap.ci".parse().expect("table")],
        request_id: Some("reseed-1".into()),
        chunk_rows: 100,
        ..SnapshotOptions::default()
    };
    let shared_cp = Arc::new(Mutex::new(None::<Checkpoint>));
    let rows = {
        let progress = request.progress.clone();
        let rows = publish_until_caught_up(
            &db,
            cfg.clone(),
            Some(reader_cp.clone()),
            request.clone(),
            done.clone(),
        )
        .await;
        assert_eq!(progress.view().state, "Done");
        rows
    };
    let records: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let snap: Vec<&Value> = records
        .iter()
        .filter(|r| r["position"]["snapshot"] == true)
        .collect();
    let count: u64 = {
        let mut c = db.root().await;
        c.query_first("SELECT COUNT(*) FROM snap.ci")
            .await
            .expect("count")
            .expect("row")
    };
    assert_eq!(snap.len() as u64, count, "every row of snap.ci once");
    assert!(
        snap.iter().all(|r| r["table"] == "ci"),
        "only the requested table"
    );
    // The live update came first (it was made before the snapshot read), and the snapshot row
    // of 'a' carries it.
    assert_eq!(records[0]["type"], "UpdateRowsEvent");
    let a = snap
        .iter()
        .find(|r| r["row"]["values"]["k"] == "a")
        .expect("row a");
    assert_eq!(a["row"]["values"]["v"], -1);
    drop(shared_cp);

    // A restart from a checkpoint that records the request as done does not repeat it.
    let mut done_cp = reader_cp.clone();
    done_cp.snapshot = Some(Box::new(publisher::position::SnapshotState {
        request_id: "reseed-1".into(),
        pending: vec![],
        last_key: None,
        table_rows: 0,
        tables_done: 0,
        completed: vec!["reseed-1".into()],
    }));
    let (file, pos) = db.binlog_end().await;
    done_cp.file = file;
    done_cp.pos = pos;
    let again = publish_until_caught_up(&db, cfg.clone(), Some(done_cp), request, done).await;
    assert!(
        again.is_empty(),
        "the same request id runs once: {} rows",
        again.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_records_are_byte_identical_to_the_binlog_inserts_of_the_same_rows() {
    let db = MariaDb::start(Metadata::NoLog).await;
    create_tables(&db, 300).await;
    let mut binlog_cfg = config(&db, StartFrom::Earliest);
    binlog_cfg.filter = publisher::filter::TableFilter {
        include: vec!["snap.*".parse().expect("pattern")],
        exclude: vec![],
    };
    let mut from_binlog: Vec<Vec<u8>> = read_all(binlog_cfg, None)
        .await
        .expect("binlog")
        .rows
        .into_iter()
        .map(|r| r.body)
        .collect();
    let mut cfg = snap_cfg(&db);
    cfg.encode.position = false;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rows = publish_until_caught_up(&db, cfg, None, SnapshotOptions::default(), done).await;
    let mut from_snapshot: Vec<Vec<u8>> = rows.into_iter().map(|r| r.body).collect();
    assert_eq!(from_snapshot.len(), from_binlog.len());
    from_binlog.sort();
    from_snapshot.sort();
    for (s, b) in from_snapshot.iter().zip(&from_binlog) {
        assert_eq!(
            String::from_utf8_lossy(s),
            String::from_utf8_lossy(b),
            "snapshot record differs from the binlog's"
        );
    }
}

/// Runs an on-demand request on a fresh stream and returns how the publisher ended.
async fn on_demand_outcome(
    db: &MariaDb,
    cfg: SourceConfig,
    tables: &[&str],
    method: Option<Method>,
    metrics: Arc<Metrics>,
) -> Result<(), String> {
    let end = db.binlog_end().await;
    let cp = Checkpoint {
        server: None,
        file: end.0,
        pos: end.1,
        rows_done: 0,
        tx_gtid: None,
        gtid_state: None,
        mysql_gtid_set: None,
        event_mark: None,
        event_ts: 0,
        snapshot: None,
    };
    let opts = SnapshotOptions {
        tables: tables.iter().map(|t| t.parse().expect("table")).collect(),
        request_id: Some("r".into()),
        method,
        ..SnapshotOptions::default()
    };
    let progress = opts.progress.clone();
    let reader = Reader::open(cfg.clone(), Some(cp.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let driver = Driver::start(&cfg, &reader, Some(&cp), opts, metrics)
        .await
        .map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut sink = SharedSink(Arc::new(Mutex::new(Shared::default())), None);
        run_with_snapshot(
            reader,
            driver,
            &mut sink,
            &mut NoCheckpoint,
            &PipelineOptions::default(),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.view().state != "Done" && !task.is_finished() {
        assert!(
            Instant::now() < deadline,
            "request neither finished nor failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    task.await
        .expect("task")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_get_a_clear_error_or_are_skipped_and_counted() {
    let db = MariaDb::start(Metadata::NoLog).await;
    create_tables(&db, 200).await;
    db.exec(
        "CREATE TABLE snap.blobkey (b BLOB, PRIMARY KEY (b(10)));
         INSERT INTO snap.blobkey VALUES ('x');
         CREATE USER 'narrow'@'%' IDENTIFIED BY 'npw';
         GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'narrow'@'%';
         GRANT SELECT ON snap.ints TO 'narrow'@'%';
         GRANT SELECT ON snap.nopk TO 'narrow'@'%';",
    )
    .await;
    let mut cfg = snap_cfg(&db);
    cfg.start = StartFrom::Latest;

    // A key that cannot be paged by: refused, naming table and column.
    let e = on_demand_outcome(
        &db,
        cfg.clone(),
        &["snap.blobkey"],
        None,
        Arc::new(Metrics::new()),
    )
    .await
    .expect_err("blob key");
    println!("blob key: {e}");
    assert!(
        e.contains("snap.blobkey") && e.contains("`b`") && e.contains("cannot be paged"),
        "{e}"
    );

    // A table that does not exist (dropped): skipped, counted, the request completes.
    let metrics = Arc::new(Metrics::new());
    on_demand_outcome(
        &db,
        cfg.clone(),
        &["snap.gone", "snap.ci"],
        None,
        metrics.clone(),
    )
    .await
    .expect("dropped table skipped");
    assert_eq!(metrics.snapshot_tables_skipped.get(), 1);
    assert!(metrics.snapshot_rows.get() > 0, "snap.ci was read");

    // No SELECT on the table: refused, naming it.
    cfg.addr = publisher::source::SourceAddr::new(
        &format!("mysql://narrow@127.0.0.1:{}", db.port),
        Some("npw"),
    )
    .expect("addr");
    let e = on_demand_outcome(
        &db,
        cfg.clone(),
        &["snap.ci"],
        None,
        Arc::new(Metrics::new()),
    )
    .await
    .expect_err("no select");
    println!("no SELECT: {e}");
    assert!(e.contains("snap.ci") && e.contains("SELECT"), "{e}");

    // A keyless table by the watermark method without LOCK TABLES: refused, naming the
    // table and the grant (the consistent-snapshot method needs no lock).
    let e = on_demand_outcome(
        &db,
        cfg.clone(),
        &["snap.nopk"],
        Some(Method::Watermark),
        Arc::new(Metrics::new()),
    )
    .await
    .expect_err("no LOCK TABLES");
    println!("no LOCK TABLES: {e}");
    assert!(
        e.contains("snap.nopk") && e.contains("GRANT LOCK TABLES ON snap.*"),
        "{e}"
    );
    on_demand_outcome(
        &db,
        cfg,
        &["snap.nopk"],
        Some(Method::ConsistentSnapshot),
        Arc::new(Metrics::new()),
    )
    .await
    .expect("the consistent-snapshot method reads a keyless table with SELECT alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_on_the_table_being_read_continues_from_the_last_key_under_the_new_columns() {
    let db = MariaDb::start(Metadata::NoLog).await;
    create_tables(&db, 20_000).await;
    let mut cfg = snap_cfg(&db);
    cfg.filter = publisher::filter::TableFilter {
        include: vec!["snap.ints".parse().expect("pattern")],
        exclude: vec![],
    };
    let opts = SnapshotOptions {
        chunk_rows: 50,
        ..SnapshotOptions::default()
    };
    let progress = opts.progress.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let alter_url = db.root_opts();
    let alter = tokio::spawn(async move {
        while progress.view().rows < 500 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at = progress.view().rows;
        let mut c = mysql_async::Conn::new(alter_url).await.expect("conn");
        let t = Instant::now();
        c.query_drop("ALTER TABLE snap.ints ADD COLUMN extra INT NOT NULL DEFAULT 5")
            .await
            .expect("alter");
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        (at, t.elapsed())
    });
    let rows = publish_until_caught_up(&db, cfg, None, opts, done).await;
    let (at, took) = alter.await.expect("alter task");
    let records: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let ids: HashSet<String> = records
        .iter()
        .map(|r| r["row"]["values"]["id"].to_string())
        .collect();
    let total: u64 = {
        let mut c = db.root().await;
        c.query_first("SELECT COUNT(*) FROM snap.ints")
            .await
            .expect("count")
            .expect("row")
    };
    println!("ALTER after {at} rows took {took:?} while the snapshot ran");
    assert_eq!(records.len() as u64, total, "every row once");
    assert_eq!(ids.len() as u64, total, "no key twice, none missing");
    let first = &records[0]["row"]["values"];
    let last = &records[records.len() - 1]["row"]["values"];
    assert!(
        first.get("extra").is_none(),
        "rows read before the ALTER lack the column"
    );
    assert_eq!(last["extra"], 5, "rows read after it have it: {last}");
}
