//! Benchmark program (not a test): writes workloads into a real MariaDB binlog first, then
//! drains them, printing rows/s, CPU seconds per million rows and peak RSS for
//!  - a bare mysql_async loop that only reads and decodes rows (the ceiling for our decoder),
//!  - the publisher's read + decode + encode into a null sink,
//!  - end to end into kinesalite: the original script (one put_record per row) on a sample,
//!    the publisher, the publisher with KPL aggregation, and a bare sequential PutRecords
//!    loop (what the emulator accepts).
//!
//! Each measured run is a child process of its own, so its peak RSS is its own.
//!
//!     cargo run --release -p binlogstream-tests --bin bench -- --rows 1000000 --kinesis-rows 100000

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
    create: &'static str,
    select: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "narrow",
        create: "CREATE TABLE bench.narrow (idUsers INT PRIMARY KEY, Name VARCHAR(100))",
        select: "INSERT INTO bench.narrow SELECT seq, CONCAT('User number ', seq) FROM seq_{lo}_to_{hi}",
    },
    Workload {
        name: "wide10",
        create: "CREATE TABLE bench.wide10 (id INT PRIMARY KEY, a BIGINT, b VARCHAR(40), c DECIMAL(12,2), \
                 d DATETIME(6), e DOUBLE, f TINYINT UNSIGNED, g TEXT, h DATE, i VARCHAR(20))",
        select: "INSERT INTO bench.wide10 SELECT seq, seq * 1000, CONCAT('name-', seq), seq / 7, \
                 TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, seq / 3, seq % 256, REPEAT('x', 40), \
                 DATE('2024-01-01') + INTERVAL (seq % 365) DAY, 'constant' FROM seq_{lo}_to_{hi}",
    },
];

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
    // utime + stime of this process from /proc/self/stat, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
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

/// Child mode: one measured run; prints `rows seconds cpu_seconds peak_rss_kib`.
async fn child(mode: &str, port: u16, table: &str, endpoint: Option<&str>) {
    let url = format!("mysql://repl@127.0.0.1:{port}");
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let rows = match mode {
        "bare" => {
            let opts = Opts::from_url(&url).expect("url");
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
        "kinesis" | "kinesis-agg" => {
            let stream = if mode == "kinesis" {
                "publisher"
            } else {
                "aggregated"
            };
            let mut cfg =
                binlogstream_tests::capture::config_for_url(&url, "repl-pw", StartFrom::Earliest);
            cfg.filter.include = vec![format!("bench.{table}").parse().expect("pattern")];
            let mut k = KinesisConfig::new(stream);
            k.aggregate = mode == "kinesis-agg";
            let metrics = std::sync::Arc::new(publisher::metrics::Metrics::new());
            binlogstream_tests::capture::publish_to_kinesis(
                cfg,
                endpoint.expect("endpoint"),
                k,
                metrics,
            )
            .await
            .expect("run")
            .rows
        }
        _ => {
            let mut cfg =
                binlogstream_tests::capture::config_for_url(&url, "repl-pw", StartFrom::Earliest);
            cfg.filter.include = vec![format!("bench.{table}").parse().expect("pattern")];
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

struct Measured {
    rows: u64,
    secs: f64,
    cpu: f64,
    rss_kib: u64,
}

fn measure(mode: &str, port: u16, table: &str) -> Measured {
    measure_with(mode, port, table, "")
}

fn measure_with(mode: &str, port: u16, table: &str, endpoint: &str) -> Measured {
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(exe)
        .args(["--child", mode, &port.to_string(), table, endpoint])
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{}",
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let endpoint = args.get(5).filter(|e| !e.is_empty()).map(String::as_str);
        child(&args[2], args[3].parse().expect("port"), &args[4], endpoint).await;
        return;
    }
    let rows: u64 = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let kinesis_rows: u64 = args
        .iter()
        .position(|a| a == "--kinesis-rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let original_rows: u64 = args
        .iter()
        .position(|a| a == "--original-rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
        .min(kinesis_rows);

    // FULL metadata so the original's decoder (python-mysql-replication 1.x) names columns.
    let db = MariaDb::start_with(Metadata::Full, &["--binlog-annotate-row-events=OFF"]).await;
    db.exec("CREATE DATABASE bench").await;
    let mut conn = db.root().await;
    conn.query_drop("USE bench").await.expect("use");
    for w in WORKLOADS {
        write_workload(&mut conn, w, rows).await;
    }

    println!(
        "\nbinlogstream bench: {rows} rows per workload, MariaDB {} on loopback, {} cores",
        db_version(&mut conn).await,
        num_cpus()
    );
    println!(
        "{:<8} {:<28} {:>12} {:>12} {:>10} {:>14}",
        "workload", "run", "rows/s", "seconds", "cpu s/Mrow", "peak RSS MiB"
    );
    for w in WORKLOADS {
        let bare = measure("bare", db.port, w.name);
        let ours = measure("publisher", db.port, w.name);
        for (label, m) in [
            ("bare mysql_async decode", &bare),
            ("publisher -> null sink", &ours),
        ] {
            assert_eq!(m.rows, rows, "{label} saw every row");
            println!(
                "{:<8} {:<28} {:>12.0} {:>12.3} {:>10.3} {:>14.1}",
                w.name,
                label,
                m.rows as f64 / m.secs,
                m.secs,
                m.cpu / (m.rows as f64 / 1e6),
                m.rss_kib as f64 / 1024.0
            );
        }
        println!(
            "{:<8} {:<28} {:>12.2}",
            w.name,
            "ratio publisher/bare",
            (ours.rows as f64 / ours.secs) / (bare.rows as f64 / bare.secs)
        );
    }
    kinesis_section(&db, &mut conn, kinesis_rows, original_rows).await;

    let latency_secs: u64 = args
        .iter()
        .position(|a| a == "--latency-seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let kinesalite = Kinesalite::start().await;
    println!(
        "\ncommit -> consumer sees it, steady writes for {latency_secs}s, default linger (5 ms)"
    );
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10}",
        "rate (rows/s)", "p50 ms", "p99 ms", "max ms", "rows"
    );
    for rate in [1_000u64, 10_000] {
        let (p50, p99, max, n) = latency_run(&db, &kinesalite, rate, latency_secs).await;
        println!(
            "{:<20} {:>10.1} {:>10.1} {:>10.1} {:>10}",
            rate, p50, p99, max, n
        );
    }
}

async fn bare_put_records(endpoint: &str, stream: &str, records: usize) -> f64 {
    use aws_sdk_kinesis::{primitives::Blob, types::PutRecordsRequestEntry};
    let client = client_for(endpoint).await;
    let payload = br#"{"table": "e2e", "row": {"values": {"idUsers": 1, "Name": "User number 1"}}, "type": "WriteRowsEvent", "schema": "bench"}"#;
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
    records as f64 / t.elapsed().as_secs_f64()
}

async fn kinesis_section(db: &MariaDb, conn: &mut Conn, rows: u64, original_rows: u64) {
    let e2e = Workload {
        name: "e2e",
        create: "CREATE TABLE bench.e2e (idUsers INT PRIMARY KEY, Name VARCHAR(100))",
        select:
            "INSERT INTO bench.e2e SELECT seq, CONCAT('User number ', seq) FROM seq_{lo}_to_{hi}",
    };
    write_workload(conn, &e2e, rows).await;
    let kinesalite = Kinesalite::start().await;
    kinesalite.create_stream("original", 1).await;
    kinesalite.create_stream("publisher", 4).await;
    kinesalite.create_stream("bare", 4).await;
    kinesalite.create_stream("aggregated", 4).await;

    let (orig_rows, orig_secs) =
        python::run_original(db, &kinesalite.endpoint(), "original", original_rows);
    let ours = measure_with("kinesis", db.port, "e2e", &kinesalite.endpoint());
    assert_eq!(ours.rows, rows, "publisher delivered every row");
    let agg = measure_with("kinesis-agg", db.port, "e2e", &kinesalite.endpoint());
    assert_eq!(agg.rows, rows, "aggregated publisher delivered every row");
    let bare = bare_put_records(&kinesalite.endpoint(), "bare", rows as usize).await;
    let orig_rate = orig_rows as f64 / orig_secs;
    let our_rate = ours.rows as f64 / ours.secs;
    println!(
        "\nend to end into kinesalite {} (narrow table, {rows} rows; original on its first {orig_rows})",
        binlogstream_tests::kinesis::KINESALITE_VERSION
    );
    println!(
        "{:<44} {:>12} {:>12} {:>14}",
        "run", "rows/s", "seconds", "peak RSS MiB"
    );
    println!(
        "{:<44} {:>12.0} {:>12.3} {:>14}",
        "original script (put_record per row)", orig_rate, orig_secs, "-"
    );
    println!(
        "{:<44} {:>12.0} {:>12.3} {:>14.1}",
        "publisher -> kinesalite (PutRecords, 4 shards)",
        our_rate,
        ours.secs,
        ours.rss_kib as f64 / 1024.0
    );
    let agg_rate = agg.rows as f64 / agg.secs;
    println!(
        "{:<44} {:>12.0} {:>12.3} {:>14.1}",
        "publisher -> kinesalite, KPL aggregation",
        agg_rate,
        agg.secs,
        agg.rss_kib as f64 / 1024.0
    );
    println!(
        "{:<44} {:>12.0}",
        "bare sequential PutRecords loop (records/s)", bare
    );
    println!(
        "{:<44} {:>12.1}",
        "ratio aggregated publisher/original",
        agg_rate / orig_rate
    );
    println!(
        "{:<44} {:>12.1}",
        "ratio publisher/original",
        our_rate / orig_rate
    );
    println!(
        "{:<44} {:>12.2}",
        "ratio publisher/bare PutRecords",
        our_rate / bare
    );
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Latency from commit to a consumer seeing the record, at a steady write rate: rows carry
/// their client-side commit time; a consumer polls every shard with GetRecords. This bounds
/// commit → Kinesis acknowledgement from above (it adds the consumer's polling delay).
async fn latency_run(
    db: &MariaDb,
    kinesalite: &Kinesalite,
    rate: u64,
    seconds: u64,
) -> (f64, f64, f64, usize) {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let table = format!("lat{rate}");
    let stream = format!("latency-{rate}");
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
                    let v: serde_json::Value =
                        serde_json::from_slice(r.data().as_ref()).expect("json");
                    if let Some(t) = v["row"]["values"]["t"].as_i64() {
                        latencies.push((now - t) as f64 / 1000.0);
                    }
                }
                *it = page.next_shard_iterator().map(str::to_string);
            }
        }
        latencies
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
    let endpoint = kinesalite.endpoint();
    let stream_name = stream.clone();
    let publisher_task = tokio::spawn(async move {
        let client = client_for(&endpoint).await;
        let metrics = std::sync::Arc::new(publisher::metrics::Metrics::new());
        let mut sink = publisher::sink::kinesis::KinesisSink::new(
            client,
            KinesisConfig::new(stream_name),
            metrics.clone(),
        );
        let opts = PipelineOptions {
            metrics,
            ..PipelineOptions::default()
        };
        pipeline::run(reader, &mut sink, &mut NoCheckpoint, &opts, async {
            let _ = stopped.await;
        })
        .await
    });

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
    let mut latencies = consumer.await.expect("consumer");
    let _ = stop.send(());
    let _ = publisher_task.await;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len(),
    )
}

async fn write_workload(conn: &mut Conn, w: &Workload, rows: u64) {
    conn.query_drop(w.create).await.expect("create");
    let t = Instant::now();
    let batch = 10_000u64;
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + batch - 1).min(rows);
        let sql = w
            .select
            .replace("{lo}", &lo.to_string())
            .replace("{hi}", &hi.to_string());
        conn.query_drop(sql).await.expect("insert");
        lo = hi + 1;
    }
    eprintln!(
        "wrote {rows} rows of {} in {:.1}s",
        w.name,
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
