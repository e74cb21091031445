//! Snapshot benchmark (not a test): a private MariaDB with a narrow and a wide table; per
//! table, the server's ceiling (`mariadb -e 'SELECT * FROM t' > /dev/null`), then the
//! publisher binary's `--start snapshot` into the null sink and into kinesalite with
//! `--aggregate`: rows/s and the publisher's peak RSS (VmHWM).
//!
//! Build the publisher in release first (`cargo build --release -p publisher`), then
//! `cargo run --release -p binlogstream-tests --bin snapshot_bench`.
//! BENCH_CHECKPOINT_MS and BENCH_PUBLISHER_ARGS change how the publisher runs (see below).
//! Sizes: NARROW_ROWS (default 1000000), WIDE_ROWS (default 1000000); BENCH_TABLES=wide (or
//! narrow) runs one table only. The publisher inherits the environment (MALLOC_ARENA_MAX,
//! MALLOC_TRIM_THRESHOLD_ and the like reach it).
//!
//! `snapshot_bench --profile` instead runs the null-sink snapshot of each table under
//! `valgrind --tool=callgrind` and prints instructions per row and where they go (self
//! cost): repeatable on a busy machine, where rows/s are not. `BENCH_PROFILE_DIR=DIR` keeps
//! the callgrind files (for `callgrind_annotate --tree=caller`). Sizes default to 200000.

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

/// BENCH_CHECKPOINT_MS (default 1000, the publisher's own): its checkpoint interval. Each
/// checkpoint is a file write with two fsyncs the pipeline waits for. The end is seen at
/// once whatever the interval: the checkpoint that finishes a snapshot is stored without
/// waiting for it.
fn checkpoint_ms() -> String {
    std::env::var("BENCH_CHECKPOINT_MS").unwrap_or_else(|_| "1000".into())
}

/// BENCH_PUBLISHER_ARGS: more publisher arguments (whitespace-separated), e.g.
/// `--snapshot-chunk-rows 50000`.
fn extra_args() -> Vec<String> {
    std::env::var("BENCH_PUBLISHER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// BENCH_WRAP: a command the null-sink publisher runs under (whitespace-separated), e.g.
/// `strace -f -c -o /tmp/strace.txt`; BENCH_WRAP_KINESIS the same for the kinesalite run
/// (e.g. `heaptrack -o /tmp/kin`). A wrapped publisher is stopped by SIGTERM so the tool
/// reports; its RSS column is then the wrapper's.
fn wrap(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
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

/// User + system CPU seconds of `pid` so far (/proc/PID/stat, clock ticks of 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Run {
    took: Duration,
    peak_kib: u64,
    cpu: f64,
}

/// Runs the publisher until its checkpoint records the snapshot done; returns the time, the
/// peak RSS and the CPU time. With `wrap` (valgrind), the publisher is stopped by SIGTERM so
/// the tool writes its output, and waited for.
fn snapshot(db: &MariaDb, table: &str, sink: &[&str], wrap: &[String]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &db.repl_password).expect("pw");
    let cp = dir.path().join("cp.json");
    let t = Instant::now();
    let mut cmd = match wrap.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(publisher_bin());
            c
        }
        None => Command::new(publisher_bin()),
    };
    let mut child = cmd
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
        .args(["--checkpoint-interval-ms", &checkpoint_ms()])
        .args(extra_args())
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
    let cpu = cpu_secs(pid);
    if wrap.is_empty() {
        let _ = child.kill();
    } else {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = child.wait();
    Run {
        took,
        peak_kib: peak,
        cpu,
    }
}

/// `--profile`: the null-sink snapshot of `table` under callgrind.
fn profile(db: &MariaDb, table: &str, rows: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = std::env::var_os("BENCH_PROFILE_DIR").map(PathBuf::from);
    let out_file = keep
        .as_deref()
        .unwrap_or(dir.path())
        .join(format!("snapshot-{table}.callgrind"));
    let wrap = vec![
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out_file.display()),
    ];
    let run = snapshot(db, table, &["--sink", "null"], &wrap);
    let (text, total) = binlogstream_tests::callgrind::annotate(&out_file);
    println!("\n{table}: where the null-sink snapshot's instructions go (self cost)");
    for line in binlogstream_tests::callgrind::top_functions(&text, 16) {
        println!("{line}");
    }
    println!(
        "{table}: {:.0} instructions/row, snapshot -> null sink ({rows} rows, whole process \
         run included; {:.1} s under callgrind)",
        total / rows as f64,
        run.took.as_secs_f64()
    );
}

/// The tables to run (BENCH_TABLES, default both) with their sizes.
fn tables(narrow: usize, wide: usize) -> Vec<(&'static str, usize)> {
    let only = std::env::var("BENCH_TABLES").unwrap_or_default();
    [("narrow", narrow), ("wide", wide)]
        .into_iter()
        .filter(|(t, _)| only.is_empty() || only.split(',').any(|o| o == *t))
        .collect()
}

#[tokio::main]
async fn main() {
    let profiling = std::env::args().any(|a| a == "--profile");
    let default_rows = if profiling { 200_000 } else { 1_000_000 };
    let run = tables(
        env_rows("NARROW_ROWS", default_rows),
        env_rows("WIDE_ROWS", default_rows),
    );
    // A table not run is created empty (its INSERT selects no rows).
    let rows_of = |t: &str| run.iter().find(|r| r.0 == t).map_or(0, |r| r.1);
    let (narrow, wide) = (rows_of("narrow"), rows_of("wide"));
    let db = MariaDb::start_with(Metadata::NoLog, &["--innodb-buffer-pool-size=512M"]).await;
    db.exec(&format!(
        "CREATE DATABASE bench;
         CREATE TABLE bench.narrow (id INT PRIMARY KEY, v INT);
         INSERT INTO bench.narrow SELECT seq, seq * 7 FROM bench.seq_0_to_{narrow} WHERE seq > 0;
         CREATE TABLE bench.wide (id INT PRIMARY KEY, b BIGINT, d DECIMAL(12,3), dt DATETIME(3),
             vc VARCHAR(64), tx VARCHAR(100), db DOUBLE, e ENUM('x','y','z'), dy DATE, ui INT UNSIGNED);
         INSERT INTO bench.wide SELECT seq, seq * 1000003, seq / 7, '2024-02-29 12:34:56.789' + INTERVAL seq SECOND,
             REPEAT('v', 20 + seq MOD 20), REPEAT('t', 40), seq * 1.5, ELT(1 + seq MOD 3, 'x', 'y', 'z'),
             '2020-01-01' + INTERVAL (seq MOD 3000) DAY, seq * 3 FROM bench.seq_0_to_{wide} WHERE seq > 0;"
    ))
    .await;
    if profiling {
        for &(table, rows) in &run {
            profile(&db, table, rows);
        }
        return;
    }
    let kinesalite = Kinesalite::start().await;
    println!(
        "\nsnapshot bench: MariaDB on loopback, {} cores; publisher {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        publisher_bin().display()
    );
    println!(
        "{:<8} {:>9} {:>16} {:>16} {:>8} {:>12} {:>14} {:>22} {:>12}",
        "table",
        "rows",
        "ceiling rows/s",
        "null rows/s",
        "% ceil",
        "null RSS MiB",
        "null CPU s/M",
        "kinesalite agg rows/s",
        "kin RSS MiB"
    );
    for &(table, rows) in &run {
        // Warm the buffer pool so every reader sees the same server.
        let _ = ceiling(&db, table);
        let c = ceiling(&db, table);
        let null = snapshot(&db, table, &["--sink", "null"], &wrap("BENCH_WRAP"));
        let stream = format!("snap-{table}");
        kinesalite.create_stream(&stream, 4).await;
        let endpoint = kinesalite.endpoint();
        let kin = snapshot(
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
            &wrap("BENCH_WRAP_KINESIS"),
        );
        let rate = |d: Duration| rows as f64 / d.as_secs_f64();
        println!(
            "{:<8} {:>9} {:>16.0} {:>16.0} {:>7.0}% {:>12.1} {:>14.2} {:>22.0} {:>12.1}",
            table,
            rows,
            rate(c),
            rate(null.took),
            100.0 * rate(null.took) / rate(c),
            null.peak_kib as f64 / 1024.0,
            null.cpu * 1e6 / rows as f64,
            rate(kin.took),
            kin.peak_kib as f64 / 1024.0
        );
    }
}
