//! Benchmark program (not a test). It starts its own MariaDB and kinesalite, writes every
//! workload into the binlog first, then drains it with each run and prints one table:
//!  - the original script (python-mysql-replication + boto3, one put_record per row) on a
//!    sample, and its decoding alone (no Kinesis) on a larger sample,
//!  - the publisher into kinesalite, one record per row,
//!  - the publisher into kinesalite with KPL aggregation,
//!  - the publisher into a null sink (read + decode + encode),
//!  - a bare mysql_async loop that only reads and decodes rows (the ceiling for our decoder),
//!  - a bare sequential PutRecords loop with the workload's own records (what the emulator
//!    accepts),
//!
//! then latency from commit to a consumer seeing the row at steady write rates.
//! Each measured run is a child process of its own, so its CPU time and peak RSS are its own.
//!
//!     cargo run --release -p binlogstream-tests --bin bench -- --rows 1000000

use std::{
    process::Command,
    time::{Duration, Instant},
};

use binlogstream_tests::{
    kinesis::{client_for, Kinesalite},
    mariadb::{MariaDb, Metadata},
    python,
};
use futures::StreamExt;
use mysql_async::{prelude::Queryable, BinlogStreamRequest, Conn, Opts};
use mysql_common::binlog::events::EventData;
use publisher::{
    checkpoint::NoCheckpoint,
    pipeline::{self, PipelineOptions},
    position::StartFrom,
    sink::kinesis::KinesisConfig,
    sink::null::NullSink,
    source::Reader,
};

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    /// `{t}` is the table name.
    create: &'static str,
    /// `{t}` is the table, `{lo}`..`{hi}` the ids of one statement.
    insert: &'static str,
    /// All rows in one statement (one transaction) instead of 10,000-row statements.
    one_transaction: bool,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "narrow",
        create: "CREATE TABLE bench.{t} (idUsers INT PRIMARY KEY, Name VARCHAR(100))",
        insert: "INSERT INTO bench.{t} SELECT seq, CONCAT('User number ', seq) FROM seq_{lo}_to_{hi}",
        one_transaction: false,
    },
    Workload {
        name: "wide",
        create: "CREATE TABLE bench.{t} (id INT PRIMARY KEY, a BIGINT, b VARCHAR(40), \
                 c DECIMAL(12,2), d DATETIME(6), e DOUBLE, f TINYINT UNSIGNED, g TEXT, h DATE, \
                 i VARCHAR(20), j JSON, k TIMESTAMP(3) NULL, l SMALLINT, m FLOAT, n CHAR(10), \
                 o VARBINARY(16), p ENUM('red','green','blue'), q TIME(3), r DECIMAL(20,6), \
                 s TINYINT(1), u YEAR)",
        insert: "INSERT INTO bench.{t} SELECT seq, seq * 1000, CONCAT('name-', seq), seq / 7, \
                 TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, seq / 3, seq % 256, REPEAT('x', 40), \
                 DATE('2024-01-01') + INTERVAL (seq % 365) DAY, 'constant', \
                 JSON_OBJECT('id', seq, 'tags', JSON_ARRAY('a', 'b'), 'ok', true), \
                 TIMESTAMP('2024-01-01 00:00:00.123') + INTERVAL seq SECOND, seq % 30000, seq / 11, \
                 'fixed', UNHEX(MD5(seq)), ELT(1 + seq % 3, 'red', 'green', 'blue'), \
                 SEC_TO_TIME(seq % 86400), seq / 13, seq % 2, 2000 + seq % 100 FROM seq_{lo}_to_{hi}",
        one_transaction: false,
    },
    Workload {
        name: "txn",
        create: "CREATE TABLE bench.{t} (idUsers INT PRIMARY KEY, Name VARCHAR(100))",
        insert: "INSERT INTO bench.{t} SELECT seq, CONCAT('User number ', seq) FROM seq_{lo}_to_{hi}",
        one_transaction: true,
    },
];

struct Args {
    rows: u64,
    txn_rows: u64,
    kinesis_rows: u64,
    original_rows: u64,
    original_decode_rows: u64,
    latency_seconds: u64,
    /// Instruction counts under callgrind instead of timings.
    profile: bool,
    /// `--workloads narrow,wide`: run only these (default all).
    only: Option<Vec<String>>,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let get = |name: &str, default: u64| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}: `{v}` is not a row count"))
                })
                .unwrap_or(default)
        };
        let rows = get("--rows", 1_000_000);
        let kinesis_rows = get("--kinesis-rows", 100_000);
        Args {
            rows,
            txn_rows: get("--txn-rows", 1_000_000),
            kinesis_rows,
            original_rows: get("--original-rows", 5_000).min(kinesis_rows),
            original_decode_rows: get("--original-decode-rows", 100_000).min(rows),
            latency_seconds: get("--latency-seconds", 5),
            profile: args.iter().any(|a| a == "--profile"),
            only: args
                .iter()
                .position(|a| a == "--workloads")
                .and_then(|i| args.get(i + 1))
                .map(|v| v.split(',').map(str::to_string).collect()),
        }
    }

    fn workloads(&self) -> Vec<&'static Workload> {
        WORKLOADS
            .iter()
            .filter(|w| {
                self.only
                    .as_ref()
                    .is_none_or(|o| o.iter().any(|n| n == w.name))
            })
            .collect()
    }

    /// (table for decode runs, its rows, table for Kinesis runs, its rows). The 1M-row
    /// transaction is one workload: every run reads the same transaction.
    fn tables(&self, w: &Workload) -> (String, u64, String, u64) {
        if w.one_transaction {
            (w.name.into(), self.txn_rows, w.name.into(), self.txn_rows)
        } else {
            (
                w.name.into(),
                self.rows,
                format!("{}_k", w.name),
                self.kinesis_rows,
            )
        }
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

/// utime + stime of a process from /proc/PID/stat, in clock ticks (100 Hz on Linux).
fn process_cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Share of one core the emulator used while `run` ran: near 1.0, kinesalite (single-threaded
/// Node.js) is the limit, not the publisher.
fn emulator_busy<T>(kinesalite: &Kinesalite, run: impl FnOnce() -> T) -> (T, f64) {
    let pid = kinesalite.pid().map(|p| p.to_string()).unwrap_or_default();
    let (c0, t0) = (process_cpu_seconds(&pid), Instant::now());
    let out = run();
    (
        out,
        (process_cpu_seconds(&pid) - c0) / t0.elapsed().as_secs_f64(),
    )
}

/// Child mode: one measured run; prints `rows seconds cpu_seconds peak_rss_kib`.
async fn child(mode: &str, port: u16, table: &str, endpoint: &str, stream: &str) {
    let url = format!("mysql://repl@127.0.0.1:{port}");
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut cfg = binlogstream_tests::capture::config_for_url(&url, "repl-pw", StartFrom::Earliest);
    cfg.filter.include = vec![format!("bench.{table}").parse().expect("pattern")];
    let rows = match mode {
        "bare" => bare_decode(&url, table).await,
        "kinesis" | "kinesis-agg" => {
            let mut k = KinesisConfig::new(stream);
            k.aggregate = mode == "kinesis-agg";
            let metrics = std::sync::Arc::new(publisher::metrics::Metrics::new());
            binlogstream_tests::capture::publish_to_kinesis(cfg, endpoint, k, metrics)
                .await
                .expect("run")
                .rows
        }
        _ => {
            let reader = Reader::open(cfg, None).await.expect("open");
            let mut sink = NullSink::default();
            pipeline::run(
                reader,
                &mut sink,
                &mut NoCheckpoint,
                &PipelineOptions::default(),
                std::future::pending(),
            )
            .await
            .expect("run");
            sink.rows
        }
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{rows} {secs:.4} {:.3} {}",
        cpu_seconds() - cpu0,
        peak_rss_kib()
    );
}

/// The ceiling: mysql_async's own binlog stream and mysql_common's row parser, nothing else.
async fn bare_decode(url: &str, table: &str) -> u64 {
    let opts = Opts::from_url(url).expect("url");
    let opts: Opts = mysql_async::OptsBuilder::from_opts(opts)
        .pass(Some("repl-pw"))
        .into();
    let mut conn = Conn::new(opts).await.expect("connect");
    conn.query_drop("SET @mariadb_slave_capability=4")
        .await
        .expect("cap");
    let mut stream = conn
        .get_binlog_stream(
            BinlogStreamRequest::new(7777)
                .with_filename(b"")
                .with_pos(4u64)
                .with_non_blocking(),
        )
        .await
        .expect("dump");
    let mut rows = 0u64;
    while let Some(ev) = stream.next().await {
        let ev = ev.expect("event");
        if let Ok(Some(EventData::RowsEvent(r))) = ev.read_data() {
            let tme = stream.get_tme(r.table_id()).expect("tme");
            if tme.table_name() != table {
                continue;
            }
            for row in r.rows(tme) {
                let _ = std::hint::black_box(row.expect("row"));
                rows += 1;
            }
        }
    }
    rows
}

struct Measured {
    rows: u64,
    secs: f64,
    cpu: f64,
    rss_kib: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

fn measure(mode: &str, port: u16, table: &str, endpoint: &str, stream: &str) -> Measured {
    let exe = std::env::current_exe().expect("exe");
    // BENCH_WRAP="valgrind --tool=massif" (say) runs each measured child under a tool.
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(tool) => {
            let mut c = Command::new(tool);
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = cmd
        .args(["--child", mode, &port.to_string(), table, endpoint, stream])
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{mode} run on {table}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    Measured {
        rows: f[0].parse().expect("rows"),
        secs: f[1].parse().expect("secs"),
        cpu: f[2].parse().expect("cpu"),
        rss_kib: f[3].parse().expect("rss"),
    }
}

fn row(workload: &str, run: &str, m: &Measured) {
    let rss = if m.rss_kib == 0 {
        "-".to_string()
    } else {
        format!("{:.1}", m.rss_kib as f64 / 1024.0)
    };
    let cpu = if m.cpu.is_nan() {
        "-".to_string()
    } else {
        format!("{:.2}", m.cpu / (m.rows as f64 / 1e6))
    };
    println!(
        "{workload:<7} {run:<42} {:>9} {:>11.0} {:>9.2} {cpu:>11} {rss:>9}",
        m.rows,
        m.rate(),
        m.secs,
    );
}

fn ratio(workload: &str, what: &str, value: f64, target: &str) {
    println!("{workload:<7} {what:<42} {value:>9.2}  (target {target})");
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--child") {
        child(
            &argv[2],
            argv[3].parse().expect("port"),
            &argv[4],
            &argv[5],
            &argv[6],
        )
        .await;
        return;
    }
    let args = Args::parse();

    // FULL metadata so the original's decoder (python-mysql-replication 1.x) names columns.
    let db = MariaDb::start_with(Metadata::Full, &["--binlog-annotate-row-events=OFF"]).await;
    db.exec("CREATE DATABASE bench").await;
    let mut conn = db.root().await;
    // The sequence engine's seq_1_to_N tables resolve in the current database.
    conn.query_drop("USE bench").await.expect("use");
    for w in args.workloads() {
        let (table, rows, ktable, krows) = args.tables(w);
        write_workload(&mut conn, w, &table, rows).await;
        if ktable != table {
            write_workload(&mut conn, w, &ktable, krows).await;
        }
    }
    if args.profile {
        for w in args.workloads() {
            let (table, rows, _, _) = args.tables(w);
            profile(db.port, &table, rows);
        }
        return;
    }

    println!(
        "\nbinlogstream bench: MariaDB {} and kinesalite {} on loopback, {} cores, {}",
        db_version(&mut conn).await,
        binlogstream_tests::kinesis::KINESALITE_VERSION,
        num_cpus(),
        cpu_model()
    );
    println!(
        "{:<7} {:<42} {:>9} {:>11} {:>9} {:>11} {:>9}",
        "load", "run", "rows", "rows/s", "seconds", "cpu s/Mrow", "RSS MiB"
    );
    let mut ratios = Vec::new();
    let mut busy_rows = Vec::new();
    for w in args.workloads() {
        let (table, rows, ktable, krows) = args.tables(w);
        let (orig, pubs, agg, bare_put) = (
            format!("orig-{}", w.name),
            format!("pub-{}", w.name),
            format!("agg-{}", w.name),
            format!("bare-{}", w.name),
        );
        // Every Kinesis run gets an empty emulator of its own: kinesalite keeps every
        // record in its heap and slows down as it fills, which would favour earlier runs.
        let original_decode = original(&db, None, "-", &table, args.original_decode_rows.min(rows));
        row(
            w.name,
            "original, decode + json.dumps only",
            &original_decode,
        );
        let emulator = fresh_stream(&orig, 1).await;
        let original_put = original(
            &db,
            Some(&emulator.endpoint()),
            &orig,
            &ktable,
            args.original_rows.min(krows),
        );
        drop(emulator);
        row(
            w.name,
            "original -> kinesalite (put_record/row)",
            &original_put,
        );
        let emulator = fresh_stream(&pubs, 4).await;
        let (ours, busy) = emulator_busy(&emulator, || {
            measure("kinesis", db.port, &ktable, &emulator.endpoint(), &pubs)
        });
        let sample = first_record(&emulator.endpoint(), &pubs).await;
        drop(emulator);
        row(w.name, "publisher -> kinesalite (4 shards)", &ours);
        busy_rows.push((w.name, "one record per row", busy));
        let emulator = fresh_stream(&agg, 4).await;
        let (aggregated, busy) = emulator_busy(&emulator, || {
            measure("kinesis-agg", db.port, &ktable, &emulator.endpoint(), &agg)
        });
        drop(emulator);
        row(
            w.name,
            "publisher -> kinesalite, KPL aggregation",
            &aggregated,
        );
        busy_rows.push((w.name, "KPL aggregation", busy));
        let null = measure("publisher", db.port, &table, "", "");
        row(w.name, "publisher -> null sink", &null);
        let bare = measure("bare", db.port, &table, "", "");
        row(w.name, "bare mysql_async read + decode", &bare);
        let emulator = fresh_stream(&bare_put, 4).await;
        let put =
            bare_put_records(&emulator.endpoint(), &bare_put, &sample, ours.rows as usize).await;
        drop(emulator);
        row(
            w.name,
            &format!("bare PutRecords loop ({} B records)", sample.len()),
            &put,
        );
        for (m, n) in [(&ours, krows), (&aggregated, krows)] {
            assert_eq!(m.rows, n, "{}: the publisher delivered every row", w.name);
        }
        assert_eq!(null.rows, rows, "{}: null sink saw every row", w.name);
        assert_eq!(bare.rows, null.rows, "{}: bare loop saw every row", w.name);
        ratios.push((
            w.name,
            original_decode,
            original_put,
            ours,
            aggregated,
            null,
            bare,
            put,
        ));
    }
    println!();
    for (name, odec, oput, ours, agg, null, bare, put) in &ratios {
        ratio(
            name,
            "publisher/original (one record per row)",
            ours.rate() / oput.rate(),
            "~15x ceiling",
        );
        ratio(
            name,
            "aggregated publisher/original",
            agg.rate() / oput.rate(),
            ">= 100",
        );
        ratio(
            name,
            "publisher/bare PutRecords",
            ours.rate() / put.rate(),
            ">= 0.90",
        );
        ratio(
            name,
            "null-sink publisher/bare decode",
            null.rate() / bare.rate(),
            ">= 0.80",
        );
        ratio(
            name,
            "null-sink publisher/original decode",
            null.rate() / odec.rate(),
            ">= 10",
        );
    }

    println!("\nkinesalite's own CPU during the publisher's runs (1.00 = one core, its ceiling)");
    for (name, what, busy) in &busy_rows {
        println!("{name:<7} {what:<42} {busy:>9.2}");
    }

    println!(
        "\ncommit -> consumer sees it, steady writes for {}s, default linger (5 ms), 2 shards",
        args.latency_seconds
    );
    println!(
        "{:<14} {:<12} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "rate (rows/s)", "records", "p50 ms", "p99 ms", "max ms", "rows", "Kinesis recs"
    );
    // An empty emulator, as for every run above (its GC pauses over a full heap would show
    // up as latency).
    let kinesalite = Kinesalite::start().await;
    for rate in [1_000u64, 10_000] {
        for aggregate in [false, true] {
            let r = latency_run(&db, &kinesalite, rate, aggregate, args.latency_seconds).await;
            println!(
                "{:<14} {:<12} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>14}",
                rate,
                if aggregate {
                    "aggregated"
                } else {
                    "one per row"
                },
                r.p50,
                r.p99,
                r.max,
                r.rows,
                r.records
            );
        }
    }
}

/// Instructions per row under `valgrind --tool=callgrind` (repeatable whatever else the
/// machine does), for the null-sink publisher and the bare decode loop, and where the
/// publisher's instructions go (self cost per function).
fn profile(port: u16, table: &str, rows: u64) {
    let exe = std::env::current_exe().expect("exe");
    let dir = tempfile::tempdir().expect("tempdir");
    // BENCH_PROFILE_DIR keeps the callgrind files (for callgrind_annotate --tree=caller).
    let keep = std::env::var_os("BENCH_PROFILE_DIR").map(std::path::PathBuf::from);
    let mut per_row = Vec::new();
    for mode in ["publisher", "bare"] {
        let out_file = keep
            .as_deref()
            .unwrap_or(dir.path())
            .join(format!("{table}-{mode}.callgrind"));
        let out = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(&exe)
            .args(["--child", mode, &port.to_string(), table, "", ""])
            .output()
            .expect("valgrind (apt install valgrind)");
        assert!(
            out.status.success(),
            "callgrind {mode} {table}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (text, total) = binlogstream_tests::callgrind::annotate(&out_file);
        per_row.push(total / rows as f64);
        if mode == "publisher" {
            println!("\n{table}: where the null-sink publisher's instructions go (self cost)");
            for line in binlogstream_tests::callgrind::top_functions(&text, 14) {
                println!("{line}");
            }
        }
    }
    println!(
        "{table}: {:.0} instructions/row publisher -> null sink, {:.0} bare decode ({rows} rows)",
        per_row[0], per_row[1]
    );
}

fn original(
    db: &MariaDb,
    endpoint: Option<&str>,
    stream: &str,
    table: &str,
    rows: u64,
) -> Measured {
    let r = python::run_original(db, endpoint, stream, table, rows);
    assert_eq!(r.rows, rows, "the original read its sample of {table}");
    Measured {
        rows: r.rows,
        secs: r.secs,
        cpu: r.cpu_secs,
        rss_kib: r.peak_rss_kib,
    }
}

/// The publisher's first record on `stream`: the bare PutRecords loop sends records of the
/// same size, so the comparison is with what kinesalite accepts for this workload.
async fn fresh_stream(name: &str, shards: i32) -> Kinesalite {
    let k = Kinesalite::start().await;
    k.create_stream(name, shards).await;
    k
}

async fn first_record(endpoint: &str, stream: &str) -> Vec<u8> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let client = client_for(endpoint).await;
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("shards");
    for sh in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(sh.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator");
        let page = client
            .get_records()
            .set_shard_iterator(it.shard_iterator().map(str::to_string))
            .limit(1)
            .send()
            .await
            .expect("get");
        if let Some(r) = page.records().first() {
            return r.data().as_ref().to_vec();
        }
    }
    panic!("no record on {stream}");
}

async fn bare_put_records(
    endpoint: &str,
    stream: &str,
    payload: &[u8],
    records: usize,
) -> Measured {
    use aws_sdk_kinesis::{primitives::Blob, types::PutRecordsRequestEntry};
    let client = client_for(endpoint).await;
    let t = Instant::now();
    let mut sent = 0;
    while sent < records {
        let n = (records - sent).min(500);
        let entries: Vec<PutRecordsRequestEntry> = (0..n)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(payload.to_vec()))
                    .partition_key(format!("bench.e2e:[{}]", sent + i))
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        assert_eq!(out.failed_record_count(), Some(0));
        sent += n;
    }
    Measured {
        rows: records as u64,
        secs: t.elapsed().as_secs_f64(),
        cpu: f64::NAN,
        rss_kib: 0,
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    rows: usize,
    records: usize,
}

/// User records in one Kinesis record: itself, or the inner records of a KPL aggregate.
fn user_records(data: &[u8]) -> Vec<Vec<u8>> {
    use prost::Message;
    use publisher::sink::kinesis::kpl::{AggregatedRecord, MAGIC};
    if data.len() > 20 && data[..4] == MAGIC {
        let agg = AggregatedRecord::decode(&data[4..data.len() - 16]).expect("aggregate");
        agg.records.into_iter().map(|r| r.data).collect()
    } else {
        vec![data.to_vec()]
    }
}

/// Latency from commit to a consumer seeing the record, at a steady write rate: rows carry
/// their client-side commit time; a consumer polls every shard with GetRecords. This bounds
/// commit → Kinesis acknowledgement from above (it adds the consumer's polling delay).
async fn latency_run(
    db: &MariaDb,
    kinesalite: &Kinesalite,
    rate: u64,
    aggregate: bool,
    seconds: u64,
) -> Latency {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let table = format!("lat{rate}{}", if aggregate { "agg" } else { "" });
    let stream = format!("latency-{table}");
    kinesalite.create_stream(&stream, 2).await;
    let mut conn = db.root().await;
    conn.query_drop(format!(
        "CREATE TABLE bench.{table} (id INT PRIMARY KEY, t BIGINT)"
    ))
    .await
    .expect("create");

    // Consumer first, from LATEST, so it sees only what follows.
    let client = client_for(&kinesalite.endpoint()).await;
    let shards = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("shards");
    let mut iters = Vec::new();
    for sh in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(sh.shard_id())
            .shard_iterator_type(ShardIteratorType::Latest)
            .send()
            .await
            .expect("iterator");
        iters.push(it.shard_iterator().map(str::to_string));
    }
    let total = (rate * seconds) as usize;
    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        let mut records = 0;
        let deadline = Instant::now() + Duration::from_secs(seconds + 60);
        while latencies.len() < total && Instant::now() < deadline {
            for it in iters.iter_mut() {
                let Some(cur) = it.clone() else { continue };
                let page = client
                    .get_records()
                    .shard_iterator(cur)
                    .limit(10_000)
                    .send()
                    .await
                    .expect("get");
                let now = now_micros();
                for r in page.records() {
                    records += 1;
                    for data in user_records(r.data().as_ref()) {
                        let v: serde_json::Value = serde_json::from_slice(&data).expect("json");
                        if let Some(t) = v["row"]["values"]["t"].as_i64() {
                            latencies.push((now - t) as f64 / 1000.0);
                        }
                    }
                }
                *it = page.next_shard_iterator().map(str::to_string);
            }
        }
        (latencies, records)
    });

    // The publisher, live, from the current end of the binlog.
    let mut cfg = binlogstream_tests::capture::config_for_url(
        &db.repl_url(),
        &db.repl_password,
        StartFrom::Latest,
    );
    cfg.stop_at_end = false;
    cfg.filter.include = vec![format!("bench.{table}").parse().expect("pattern")];
    let reader = Reader::open(cfg, None).await.expect("open");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The sink is ready (client, shard map) before the first write, as in a running
    // publisher; otherwise the first rows would measure start-up.
    let client = client_for(&kinesalite.endpoint()).await;
    let metrics = std::sync::Arc::new(publisher::metrics::Metrics::new());
    let mut k = KinesisConfig::new(stream.clone());
    k.aggregate = aggregate;
    let ranges = if aggregate {
        Some(
            publisher::sink::kinesis::shard_ranges(&client, &stream)
                .await
                .expect("shards"),
        )
    } else {
        None
    };
    let mut sink = publisher::sink::kinesis::KinesisSink::new(client, k, metrics.clone());
    if let Some(r) = ranges {
        sink.set_shards(r);
    }
    let publisher_task = tokio::spawn(async move {
        let opts = PipelineOptions {
            metrics,
            ..PipelineOptions::default()
        };
        pipeline::run(reader, &mut sink, &mut NoCheckpoint, &opts, async {
            let _ = stopped.await;
        })
        .await
    });
    // Let the pipeline reach its first wait on the binlog.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Steady writes: every 10 ms, rate/100 rows in one autocommit INSERT.
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut id = 0u64;
    while (id as usize) < total {
        tick.tick().await;
        let t = now_micros();
        let values: Vec<String> = (0..per_tick)
            .map(|_| {
                id += 1;
                format!("({id}, {t})")
            })
            .collect();
        conn.query_drop(format!(
            "INSERT INTO bench.{table} VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert");
    }
    let (mut latencies, records) = consumer.await.expect("consumer");
    let _ = stop.send(());
    let _ = publisher_task.await;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Latency {
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        rows: latencies.len(),
        records,
    }
}

async fn write_workload(conn: &mut Conn, w: &Workload, table: &str, rows: u64) {
    conn.query_drop(w.create.replace("{t}", table))
        .await
        .expect("create");
    let t = Instant::now();
    let batch = if w.one_transaction { rows } else { 10_000 };
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + batch - 1).min(rows);
        let sql = w
            .insert
            .replace("{t}", table)
            .replace("{lo}", &lo.to_string())
            .replace("{hi}", &hi.to_string());
        conn.query_drop(sql).await.expect("insert");
        lo = hi + 1;
    }
    eprintln!(
        "wrote {rows} rows of {table} in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

async fn db_version(conn: &mut Conn) -> String {
    conn.query_first::<String, _>("SELECT VERSION()")
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}
