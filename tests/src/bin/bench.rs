//! Benchmark program (not a test): writes workloads into a real MariaDB binlog first, then
//! drains them, printing rows/s, CPU seconds per million rows and peak RSS for
//!  - a bare mysql_async loop that only reads and decodes rows (the ceiling for our decoder),
//!  - the publisher's read + decode + encode into a null sink.
//!
//! Each measured run is a child process of its own, so its peak RSS is its own.
//!
//!     cargo run --release -p binlogstream-tests --bin bench -- --rows 1000000

use std::{process::Command, time::Instant};

use binlogstream_tests::mariadb::{MariaDb, Metadata};
use futures::StreamExt;
use mysql_async::{prelude::Queryable, BinlogStreamRequest, Conn, Opts};
use mysql_common::binlog::events::EventData;
use publisher::{
    checkpoint::NoCheckpoint,
    pipeline::{self, PipelineOptions},
    position::StartFrom,
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
async fn child(mode: &str, port: u16, table: &str) {
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
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(exe)
        .args(["--child", mode, &port.to_string(), table])
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
        child(&args[2], args[3].parse().expect("port"), &args[4]).await;
        return;
    }
    let rows: u64 = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    let db = MariaDb::start_with(Metadata::NoLog, &["--binlog-annotate-row-events=OFF"]).await;
    db.exec("CREATE DATABASE bench").await;
    let mut conn = db.root().await;
    conn.query_drop("USE bench").await.expect("use");
    for w in WORKLOADS {
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
