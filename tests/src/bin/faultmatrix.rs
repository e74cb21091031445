//! The fault matrix (issue 11): every scenario against real servers and the publisher binary,
//! one table row each. Exits 1 when any scenario lost a row, violated per-key order, or
//! failed a required behaviour (an exit code, a deadline, a message).
//!
//!     cargo build -p publisher -p binlogstream-tests --bins
//!     target/debug/faultmatrix            # CI size: every scenario once, about 8 minutes
//!     target/debug/faultmatrix --full     # the counts (20 SIGKILLs, 60 s outages, 30 min soak)
//!
//! Flags (each overrides the size's default): --publisher PATH, --only 1,2a,..., --seed N,
//! --kill-trials N, --term-trials N, --steps N, --rate ROWS_PER_S, --big-rows N,
//! --outage-secs N, --fault-secs N, --drain-timeout-secs N, --soak-secs N, --soak-rate N,
//! --soak-fault-every-secs N, --catch-up-secs N.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use binlogstream_tests::matrix::{
    env::Settings,
    scenarios::{self, Outcome},
};

struct Args(Vec<String>);

impl Args {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    fn num(&self, name: &str, default: u64) -> u64 {
        self.value(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: `{v}` is not a number"))
            })
            .unwrap_or(default)
    }
}

fn default_publisher() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| binlogstream_tests::workspace_root().join("target"));
    target.join("debug/publisher")
}

fn settings(a: &Args) -> Settings {
    let full = a.has("--full");
    // (full, CI)
    let pick = |f: u64, c: u64| if full { f } else { c };
    Settings {
        bin: a
            .value("--publisher")
            .map(PathBuf::from)
            .unwrap_or_else(default_publisher),
        seed: a.num("--seed", rand::random::<u32>() as u64),
        require_inside_big: full,
        kill_trials: a.num("--kill-trials", pick(20, 3)),
        term_trials: a.num("--term-trials", pick(10, 2)),
        steps: a.num("--steps", pick(3000, 300)),
        rate: a.num("--rate", pick(400, 250)) as f64,
        big_rows: a.num("--big-rows", pick(100_000, 10_000)),
        outage: Duration::from_secs(a.num("--outage-secs", pick(60, 8))),
        fault: Duration::from_secs(a.num("--fault-secs", pick(30, 4))),
        drain_timeout_secs: a.num("--drain-timeout-secs", pick(20, 5)),
        soak: Duration::from_secs(a.num("--soak-secs", pick(1800, 75))),
        soak_rate: a.num("--soak-rate", pick(2000, 300)) as f64,
        soak_fault_every: Duration::from_secs(a.num("--soak-fault-every-secs", pick(180, 20))),
        heartbeat_secs: 1,
        shards: 4,
        catch_up: Duration::from_secs(a.num("--catch-up-secs", pick(600, 120))),
    }
}

fn cell(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn print_table(rows: &[Outcome]) {
    println!();
    println!(
        "| scenario | trials | committed | consumed | lost | duplicates | order violations | result | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in rows {
        let c = o.counts.as_ref();
        let result = if o.not_run.is_some() {
            "not run"
        } else if o.ok() {
            "ok"
        } else {
            "FAIL"
        };
        let mut notes: Vec<String> = o.failures.iter().map(|f| format!("FAIL: {f}")).collect();
        if let Some(c) = c {
            if c.phantom > 0 {
                notes.push(format!("FAIL: {} phantom changes", c.phantom));
            }
            if c.malformed > 0 {
                notes.push(format!("FAIL: {} malformed records", c.malformed));
            }
            if let Some(m) = c.state_mismatches.filter(|m| *m > 0) {
                notes.push(format!(
                    "FAIL: rebuilt state differs from SELECT in {m} keys"
                ));
            }
            if c.kcl_dropped > 0 {
                notes.push(format!(
                    "{} dropped by KCL hash-range filter",
                    c.kcl_dropped
                ));
            }
            if c.rename_unordered > 0 {
                notes.push(format!(
                    "{} keys split by a RENAME TABLE over unrelated shards (not counted)",
                    c.rename_unordered
                ));
            }
            notes.extend(c.examples.iter().take(2).map(|e| format!("e.g. {e}")));
        }
        notes.extend(o.notes.iter().cloned());
        if let Some(why) = &o.not_run {
            notes.push(why.clone());
        }
        notes.push(format!("{:.0}s", o.secs));
        println!(
            "| {} {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.id,
            o.name,
            o.trials,
            cell(c.map(|c| c.committed)),
            cell(c.map(|c| c.consumed)),
            cell(c.map(|c| c.lost)),
            cell(c.map(|c| c.duplicates)),
            cell(c.map(|c| c.order_violations)),
            result,
            notes.join("; ").replace('|', "/")
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args(std::env::args().collect());
    let s = Arc::new(settings(&a));
    anyhow::ensure!(
        s.bin.exists(),
        "publisher binary {} not found: build it (cargo build -p publisher) or pass --publisher PATH",
        s.bin.display()
    );
    let only: Option<Vec<String>> = a
        .value("--only")
        .map(|v| v.split(',').map(str::to_string).collect());
    println!(
        "fault matrix: publisher {}, seed {}, size {}",
        s.bin.display(),
        s.seed,
        if a.has("--full") { "full" } else { "ci" }
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    // Every scenario gets a hard time limit on top of its own bounded loops.
    let limit = s.catch_up * 2 + s.soak + s.outage * 4 + Duration::from_secs(600);
    for id in scenarios::ALL {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == id)) {
            continue;
        }
        let t0 = Instant::now();
        eprintln!("== scenario {id}");
        let task = tokio::spawn(scenarios::run(id, s.clone()));
        let abort = task.abort_handle();
        // Ctrl-C or SIGTERM: abort the scenario (dropping it stops its servers and publisher
        // by PID and removes its temp dirs), print what ran, exit 130.
        let interrupted = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, task) => r,
            _ = interrupted => {
                abort.abort();
                // Let the aborted task's destructors run before exiting.
                tokio::time::sleep(Duration::from_secs(2)).await;
                print_table(&rows);
                eprintln!("interrupted during scenario {id}");
                std::process::exit(130);
            }
        };
        let mut o = match outcome {
            Ok(Ok(Ok(o))) => o,
            Ok(Ok(Err(e))) => {
                let mut o = Outcome::new(id, "", 0);
                o.fail(format!("error: {e:#}"));
                o
            }
            Ok(Err(e)) => {
                let mut o = Outcome::new(id, "", 0);
                o.fail(format!("panicked: {e}"));
                o
            }
            Err(_) => {
                // Dropping the scenario's future stops its servers and publisher.
                abort.abort();
                let mut o = Outcome::new(id, "", 0);
                o.fail(format!("timed out after {}s", limit.as_secs()));
                o
            }
        };
        o.secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "== scenario {id}: {} in {:.0}s",
            if o.ok() { "ok" } else { "FAIL" },
            o.secs
        );
        rows.push(o);
    }
    print_table(&rows);
    println!(
        "\n{} scenarios in {:.0}s (seed {})",
        rows.len(),
        started.elapsed().as_secs_f64(),
        s.seed
    );
    if rows.iter().all(Outcome::ok) {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
