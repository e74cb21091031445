//! The publisher binary killed at random points while a workload runs, then restarted from
//! its checkpoint file: every row ends up on the stream. SIGKILL may repeat what was sent
//! after the last stored checkpoint (counted and printed); SIGTERM drains and repeats nothing.

use std::{
    collections::HashSet,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use binlogstream_tests::{
    fault_proxy::{FaultProxy, Faults},
    kinesis::Kinesalite,
    mariadb::{MariaDb, Metadata},
};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_publisher");
const TXS: u64 = 150;
const ROWS_PER_TX: u64 = 100;

fn publisher(db: &MariaDb, k: &Kinesalite, stream: &str, cp: &Path, extra: &[&str]) -> Command {
    publisher_via(db, &k.endpoint(), stream, cp, "earliest", extra)
}

/// The publisher with another Kinesis endpoint (the fault proxy) and start position.
fn publisher_via(
    db: &MariaDb,
    endpoint: &str,
    stream: &str,
    cp: &Path,
    start: &str,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "run",
        "--source",
        &db.repl_url(),
        "--server-id",
        "5151",
        "--start",
        start,
    ])
    .args([
        "--sink",
        "kinesis",
        "--stream",
        stream,
        "--endpoint",
        endpoint,
        "--region",
        "us-east-1",
    ])
    .args([
        "--position",
        "--checkpoint-interval-ms",
        "50",
        "--checkpoint-file",
    ])
    .arg(cp)
    .args(extra)
    .env("BINLOGSTREAM_PASSWORD", &db.repl_password)
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_SECRET_ACCESS_KEY", "test")
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

async fn workload(db: &MariaDb) {
    db.exec("CREATE DATABASE c; CREATE TABLE c.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
}

fn spawn_writer(port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let opts =
            mysql_async::Opts::from_url(&format!("mysql://root@127.0.0.1:{port}")).expect("url");
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .expect("writer connection");
        use mysql_async::prelude::Queryable;
        for tx in 0..TXS {
            let values: Vec<String> = (0..ROWS_PER_TX)
                .map(|i| {
                    let id = tx * ROWS_PER_TX + i + 1;
                    format!("({id}, 'v{id}')")
                })
                .collect();
            conn.query_drop(format!("INSERT INTO c.t VALUES {}", values.join(",")))
                .await
                .expect("insert");
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Runs the publisher to the end of the binlog and reads the stream back: (records, distinct).
async fn finish_and_count(db: &MariaDb, k: &Kinesalite, stream: &str, cp: &Path) -> (usize, usize) {
    finish_via(db, &k.endpoint(), k, stream, cp).await
}

async fn finish_via(
    db: &MariaDb,
    endpoint: &str,
    k: &Kinesalite,
    stream: &str,
    cp: &Path,
) -> (usize, usize) {
    let status = publisher_via(db, endpoint, stream, cp, "earliest", &["--stop-at-end"])
        .status()
        .expect("final run");
    assert!(status.success(), "final run exits 0");
    let records = k.read_all(stream).await;
    let mut ids = HashSet::new();
    let mut positions = HashSet::new();
    for r in &records {
        let v = r.json();
        ids.insert(v["row"]["values"]["id"].as_u64().expect("id"));
        let p = &v["position"];
        positions.insert((p["file"].to_string(), p["pos"].as_u64(), p["row"].as_u64()));
    }
    let expected: HashSet<u64> = (1..=TXS * ROWS_PER_TX).collect();
    let missing: Vec<&u64> = expected.difference(&ids).take(5).collect();
    assert!(
        missing.is_empty(),
        "rows missing from the stream, e.g. {missing:?}"
    );
    assert_eq!(positions.len() as u64, TXS * ROWS_PER_TX);
    (records.len(), positions.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing() {
    let (db, k) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    k.create_stream("crash", 2).await;
    workload(&db).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cp = dir.path().join("cp.json");
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let writer = spawn_writer(db.port);
    for _ in 0..10 {
        let child = publisher(&db, &k, "crash", &cp, &[])
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..600))).await;
        signal(&child, "-KILL");
        let mut child = child;
        let _ = child.wait();
    }
    writer.await.expect("writer");
    let (records, distinct) = finish_and_count(&db, &k, "crash", &cp).await;
    println!(
        "SIGKILL x10 (seed {seed}): {distinct} row changes, {records} records on the stream, {} duplicates",
        records - distinct
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_repeats_nothing() {
    let (db, k) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    k.create_stream("term", 2).await;
    workload(&db).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cp = dir.path().join("cp.json");
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let writer = spawn_writer(db.port);
    let log = dir.path().join("publisher.log");
    for _ in 0..10 {
        let child = publisher(&db, &k, "term", &cp, &[])
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..600))).await;
        signal(&child, "-TERM");
        let mut child = child;
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "SIGTERM exits 0 (seed {seed}), got {status:?}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    writer.await.expect("writer");
    let (records, distinct) = finish_and_count(&db, &k, "term", &cp).await;
    println!(
        "SIGTERM x10 (seed {seed}): {distinct} row changes, {records} records, {} duplicates",
        records - distinct
    );
    assert_eq!(records, distinct, "no duplicate after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() {
    let (db, k) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    k.create_stream("m", 1).await;
    db.exec(
        "CREATE DATABASE c; CREATE TABLE c.t (id INT PRIMARY KEY); INSERT INTO c.t VALUES (1), (2)",
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = publisher(
        &db,
        &k,
        "m",
        &dir.path().join("cp"),
        &["--metrics-addr", &addr],
    )
    .spawn()
    .expect("spawn");
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let mut metrics = String::new();
    for _ in 0..200 {
        if let Some(m) = get("/metrics") {
            if m.contains("binlogstream_records_published_total 2") {
                metrics = m;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.contains("binlogstream_records_published_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("binlogstream_replication_lag_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains("binlogstream_checkpoint_position"),
        "{metrics}"
    );
    assert!(get("/healthz")
        .expect("healthz")
        .starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").expect("readyz").starts_with("HTTP/1.1 200"));
    signal(&child, "-TERM");
    let mut child = child;
    assert!(child.wait().expect("wait").success());
}

/// Waits for `child` to exit, at most `limit`; kills it (and fails) if it does not.
async fn exit_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_kinesis_is_down_stops_at_the_drain_deadline() {
    let (db, k) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    k.create_stream("stuck", 2).await;
    workload(&db).await;
    let proxy = FaultProxy::start(k.port, 11).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cp = dir.path().join("cp.json");
    let writer = spawn_writer(db.port);
    let mut child = publisher_via(&db, &proxy.endpoint(), "stuck", &cp, "earliest", &[])
        .env("BINLOGSTREAM_DRAIN_TIMEOUT_SECS", "3")
        .spawn()
        .expect("spawn");
    wait_for_file(&cp).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Faults {
        down: true,
        ..Faults::default()
    });
    // Rows keep arriving and are handed to the sink, which cannot deliver them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal(&child, "-TERM");
    let asked = Instant::now();
    let status = exit_within(
        &mut child,
        Duration::from_secs(8),
        "SIGTERM with Kinesis down",
    )
    .await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(2500),
        "exit {took:?} after SIGTERM, drain deadline 3 s"
    );
    assert_eq!(
        status.code(),
        Some(3),
        "rows left undelivered at the deadline: exit 3, {status:?}"
    );
    // Rows go out in id order; the first id missing from the stream ends what was
    // acknowledged without a gap, which is exactly what the checkpoint may cover.
    let before = id_counts(&k, "stuck").await;
    let first_gap = (1..).find(|id| !before.contains_key(id)).expect("a gap");
    assert!(first_gap > 1, "rows were delivered before the outage");
    // With Kinesis back, a restart delivers the rest (finish_via checks that nothing is
    // missing) and repeats nothing of that prefix.
    proxy.set(Faults::default());
    writer.await.expect("writer");
    finish_via(&db, &proxy.endpoint(), &k, "stuck", &cp).await;
    let after = id_counts(&k, "stuck").await;
    let repeated: Vec<u64> = (1..first_gap).filter(|id| after[id] > 1).take(5).collect();
    assert!(
        repeated.is_empty(),
        "rows acknowledged before the first gap (id {first_gap}) were sent again, e.g. {repeated:?}: the checkpoint was behind"
    );
}

async fn id_counts(k: &Kinesalite, stream: &str) -> std::collections::HashMap<u64, usize> {
    let mut counts = std::collections::HashMap::new();
    for r in k.read_all(stream).await {
        *counts
            .entry(r.json()["row"]["values"]["id"].as_u64().expect("id"))
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_sink_error_while_draining_stores_what_was_acknowledged() {
    let (db, k) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    k.create_stream("fatal", 2).await;
    workload(&db).await;
    let proxy = FaultProxy::start(k.port, 12).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cp = dir.path().join("cp.json");
    let writer = spawn_writer(db.port);
    // One request in flight: the one that succeeds during the drain is the only one out.
    let mut child = publisher_via(
        &db,
        &proxy.endpoint(),
        "fatal",
        &cp,
        "earliest",
        &["--max-in-flight", "1"],
    )
    .spawn()
    .expect("spawn");
    wait_for_file(&cp).await;
    let slow = Faults {
        delay: Duration::from_millis(1500),
        ..Faults::default()
    };
    proxy.set(slow.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The request now held in the proxy goes through; every later one is refused for good.
    proxy.set(Faults {
        refuse: Some("AccessDeniedException"),
        ..slow
    });
    signal(&child, "-TERM");
    let status = exit_within(
        &mut child,
        Duration::from_secs(20),
        "fatal error while draining",
    )
    .await;
    assert!(
        !status.success(),
        "a refused record is a failure: {status:?}"
    );
    let on_stream = k.read_all("fatal").await.len();
    assert!(
        on_stream > 0,
        "something was acknowledged before the failure"
    );
    proxy.set(Faults::default());
    writer.await.expect("writer");
    let (records, distinct) = finish_via(&db, &proxy.endpoint(), &k, "fatal", &cp).await;
    assert_eq!(
        records, distinct,
        "what was acknowledged during the drain ({on_stream} records on the stream at the failure) is covered by the checkpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_stores_its_resume_point_before_any_delivery() {
    let (db, k) = tokio::join!(MariaDb::start(Metadata::NoLog), Kinesalite::start());
    k.create_stream("first", 1).await;
    workload(&db).await;
    db.exec("INSERT INTO c.t VALUES (1, 'before'), (2, 'before')")
        .await;
    let proxy = FaultProxy::start(k.port, 13).await;
    proxy.set(Faults {
        refuse: Some("AccessDeniedException"),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let cp = dir.path().join("cp.json");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = publisher_via(
        &db,
        &proxy.endpoint(),
        "first",
        &cp,
        "latest",
        &["--metrics-addr", &addr],
    )
    .spawn()
    .expect("spawn");
    // Streaming (the start is resolved) once /readyz answers 200.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        use std::io::{Read, Write};
        let ready = std::net::TcpStream::connect(&addr).ok().and_then(|mut s| {
            write!(
                s,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out.starts_with("HTTP/1.1 200"))
        });
        if ready == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "publisher never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.exec("INSERT INTO c.t VALUES (3, 'first run'), (4, 'first run')")
        .await;
    let status = exit_within(&mut child, Duration::from_secs(20), "AccessDenied at once").await;
    assert!(
        !status.success(),
        "AccessDenied stops the publisher: {status:?}"
    );
    db.exec("INSERT INTO c.t VALUES (5, 'between'), (6, 'between')")
        .await;
    proxy.set(Faults::default());
    let status = publisher_via(
        &db,
        &proxy.endpoint(),
        "first",
        &cp,
        "latest",
        &["--stop-at-end"],
    )
    .status()
    .expect("second run");
    assert!(status.success(), "second run exits 0");
    let mut ids: Vec<u64> = k
        .read_all("first")
        .await
        .iter()
        .map(|r| r.json()["row"]["values"]["id"].as_u64().expect("id"))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![3, 4, 5, 6],
        "everything after the first start's `latest` is published, nothing before it"
    );
}
