//! Snapshot benchmark (not a test): a private MariaDB with a narrow and a wide table; per
//! table, the server's ceiling (`mariadb -e 'SELECT * FROM t' > /dev/null`), then the
//! publisher binary's `--start snapshot` into the null sink and into kinesalite with
//! `--aggregate`: rows/s and the publisher's peak RSS (VmHWM).
//!
//! Build the publisher in release first (`cargo build --release -p publisher`), then
//! `cargo run --release -p binlogstream-tests --bin snapshot_bench`.
//! Sizes: NARROW_ROWS (default 1000000), WIDE_ROWS (default 1000000).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use binlogstream_tests::{
    kinesis::Kinesalite,
    mariadb::{MariaDb, Metadata},
};

fn env_rows(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn publisher_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent().expect("dir").join("publisher")
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn ceiling(db: &MariaDb, table: &str) -> Duration {
    let t = Instant::now();
    let status = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", db.port),
            "-uroot",
            "--quick",
            "-e",
            &format!("SELECT * FROM bench.{table}"),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("mariadb client");
    assert!(status.success());
    t.elapsed()
}

/// Runs the publisher until its checkpoint records the snapshot done; returns the time and
/// the peak RSS in KiB.
fn snapshot(db: &MariaDb, table: &str, sink: &[&str]) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &db.repl_password).expect("pw");
    let cp = dir.path().join("cp.json");
    let t = Instant::now();
    let mut child = Command::new(publisher_bin())
        .args(["run", "--source", &db.repl_url(), "--password-file"])
        .arg(&pw)
        .args([
            "--start",
            "snapshot",
            "--include",
            &format!("bench.{table}"),
        ])
        .args(sink)
        .arg("--checkpoint-file")
        .arg(&cp)
        .args(["--checkpoint-interval-ms", "20"])
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("publisher (build it with cargo build --release -p publisher)");
    let pid = child.id();
    let mut peak = 0;
    loop {
        peak = peak.max(peak_rss_kib(pid));
        let done = std::fs::read(&cp)
            .ok()
            .and_then(|b| serde_json::from_slice::<publisher::position::Checkpoint>(&b).ok())
            .and_then(|c| c.snapshot)
            .is_some_and(|s| !s.running());
        if done {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "publisher exited"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed();
    peak = peak.max(peak_rss_kib(pid));
    let _ = child.kill();
    let _ = child.wait();
    (took, peak)
}

#[tokio::main]
async fn main() {
    let narrow = env_rows("NARROW_ROWS", 1_000_000);
    let wide = env_rows("WIDE_ROWS", 1_000_000);
    let db = MariaDb::start_with(Metadata::NoLog, &["--innodb-buffer-pool-size=512M"]).await;
    db.exec(&format!(
        "CREATE DATABASE bench;
         CREATE TABLE bench.narrow (id INT PRIMARY KEY, v INT);
         INSERT INTO bench.narrow SELECT seq, seq * 7 FROM bench.seq_1_to_{narrow};
         CREATE TABLE bench.wide (id INT PRIMARY KEY, b BIGINT, d DECIMAL(12,3), dt DATETIME(3),
             vc VARCHAR(64), tx VARCHAR(100), db DOUBLE, e ENUM('x','y','z'), dy DATE, ui INT UNSIGNED);
         INSERT INTO bench.wide SELECT seq, seq * 1000003, seq / 7, '2024-02-29 12:34:56.789' + INTERVAL seq SECOND,
             REPEAT('v', 20 + seq MOD 20), REPEAT('t', 40), seq * 1.5, ELT(1 + seq MOD 3, 'x', 'y', 'z'),
             '2020-01-01' + INTERVAL (seq MOD 3000) DAY, seq * 3 FROM bench.seq_1_to_{wide};"
    ))
    .await;
    let kinesalite = Kinesalite::start().await;
    println!(
        "\nsnapshot bench: MariaDB on loopback, {} cores; publisher {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        publisher_bin().display()
    );
    println!(
        "{:<8} {:>9} {:>16} {:>16} {:>8} {:>12} {:>22} {:>12}",
        "table",
        "rows",
        "ceiling rows/s",
        "null rows/s",
        "% ceil",
        "null RSS MiB",
        "kinesalite agg rows/s",
        "kin RSS MiB"
    );
    for (table, rows) in [("narrow", narrow), ("wide", wide)] {
        // Warm the buffer pool so every reader sees the same server.
        let _ = ceiling(&db, table);
        let c = ceiling(&db, table);
        let (null, null_rss) = snapshot(&db, table, &["--sink", "null"]);
        let stream = format!("snap-{table}");
        kinesalite.create_stream(&stream, 4).await;
        let endpoint = kinesalite.endpoint();
        let (kin, kin_rss) = snapshot(
            &db,
            table,
            &[
                "--sink",
                "kinesis",
                "--stream",
                &stream,
                "--endpoint",
                &endpoint,
                "--region",
                "us-east-1",
                "--aggregate",
            ],
        );
        let rate = |d: Duration| rows as f64 / d.as_secs_f64();
        println!(
            "{:<8} {:>9} {:>16.0} {:>16.0} {:>7.0}% {:>12.1} {:>22.0} {:>12.1}",
            table,
            rows,
            rate(c),
            rate(null),
            100.0 * rate(null) / rate(c),
            null_rss as f64 / 1024.0,
            rate(kin),
            kin_rss as f64 / 1024.0
        );
    }
}
