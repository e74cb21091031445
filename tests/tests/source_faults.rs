//! The source goes away and comes back: a restarted server, a path that refuses connections,
//! one that silently drops every byte. The publisher keeps running, says it is degraded while
//! the source is away, and delivers every row once it is back.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use binlogstream_tests::{
    capture::{config, ChannelSink},
    mariadb::{MariaDb, Metadata},
    tcp_proxy::{ProxyMode, TcpProxy},
};
use publisher::{
    decode::RowChange,
    metrics::Metrics,
    pipeline::{PipelineError, PipelineOptions, Summary},
    position::StartFrom,
    source::{Reader, SourceAddr, SourceConfig},
};

type RunResult = Result<Summary, PipelineError>;

/// A live publisher (library pipeline) in a task the test owns.
struct Follower {
    rx: tokio::sync::mpsc::UnboundedReceiver<RowChange>,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<RunResult>>,
}

impl Follower {
    async fn start(mut cfg: SourceConfig) -> Follower {
        cfg.stop_at_end = false;
        let reader = Reader::open(cfg, None).await.expect("open the source");
        let metrics = Arc::new(Metrics::new());
        let opts = PipelineOptions {
            metrics: metrics.clone(),
            ..PipelineOptions::default()
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut sink = ChannelSink::new(tx);
            let mut store = publisher::checkpoint::NoCheckpoint;
            publisher::pipeline::run(reader, &mut sink, &mut store, &opts, async {
                let _ = stopped.await;
            })
            .await
        });
        Follower {
            rx,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Collects ids until `want` distinct ones arrived (duplicates are allowed and kept).
    async fn ids_until(&mut self, got: &mut Vec<i64>, want: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while got.iter().collect::<BTreeSet<_>>().len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(row)) => {
                    let v: serde_json::Value = serde_json::from_slice(&row.body).expect("json");
                    got.push(v["row"]["values"]["id"].as_i64().expect("id"));
                }
                _ => {
                    let outcome = match self.task.take() {
                        Some(t) if t.is_finished() => format!("stopped: {:?}", t.await),
                        Some(t) => {
                            self.task = Some(t);
                            "still running".into()
                        }
                        None => "gone".into(),
                    };
                    panic!(
                        "only {} of {want} rows within {within:?} (got {got:?}); publisher {outcome}; problem {:?}",
                        got.iter().collect::<BTreeSet<_>>().len(),
                        self.metrics.problem()
                    );
                }
            }
        }
    }

    /// Waits until the publisher reports the source as lost (readiness false, "source: ...").
    async fn wait_degraded(&self, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if let Some(p) = self.metrics.problem() {
                assert!(p.starts_with("source"), "unexpected problem: {p}");
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "the publisher did not notice the source was gone within {within:?} (running: {})",
                self.running()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&self, within: Duration) {
        let t0 = Instant::now();
        while self.metrics.problem().is_some() {
            assert!(
                t0.elapsed() < within,
                "not ready again within {within:?}: {:?}",
                self.metrics.problem()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
    }

    async fn stop(mut self) -> RunResult {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .take()
            .expect("task")
            .await
            .expect("publisher task panicked")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn insert(db: &MariaDb, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        db.exec(&format!("INSERT INTO f.t VALUES ({id})")).await;
    }
}

fn assert_all(got: &[i64], n: i64) {
    let set: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(set, (1..=n).collect::<BTreeSet<_>>(), "rows {got:?}");
}

async fn table(db: &MariaDb) {
    db.exec("CREATE DATABASE f; CREATE TABLE f.t (id INT PRIMARY KEY)")
        .await;
}

fn via_proxy(db: &MariaDb, proxy: &TcpProxy) -> SourceConfig {
    let mut cfg = config(db, StartFrom::Earliest);
    cfg.addr = SourceAddr::new(
        &format!("mysql://repl@127.0.0.1:{}", proxy.port),
        Some(&db.repl_password),
    )
    .expect("addr");
    cfg
}

#[tokio::test]
async fn a_database_restart_does_not_end_the_stream() {
    let mut db = MariaDb::start(Metadata::NoLog).await;
    table(&db).await;
    let mut f = Follower::start(config(&db, StartFrom::Earliest)).await;
    let mut got = Vec::new();
    insert(&db, 1..=5).await;
    f.ids_until(&mut got, 5, Duration::from_secs(20)).await;
    // Written just before the shutdown: possibly not read yet when the connection drops.
    insert(&db, 6..=8).await;
    db.shutdown();
    f.wait_degraded(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(f.running(), "the publisher must wait for the source");
    assert_eq!(f.metric("binlogstream_source_connected"), 0.0);
    db.start_again().await;
    insert(&db, 9..=12).await;
    f.ids_until(&mut got, 12, Duration::from_secs(60)).await;
    assert_all(&got, 12);
    assert_eq!(got.len(), 12, "a reconnect resumes exactly: {got:?}");
    f.wait_ready(Duration::from_secs(5)).await;
    assert_eq!(f.metric("binlogstream_source_connected"), 1.0);
    assert!(f.metric("binlogstream_source_reconnects_total") >= 1.0);
    f.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_source_down_for_25_seconds_is_waited_for() {
    let mut db = MariaDb::start(Metadata::NoLog).await;
    table(&db).await;
    let mut f = Follower::start(config(&db, StartFrom::Earliest)).await;
    let mut got = Vec::new();
    insert(&db, 1..=3).await;
    f.ids_until(&mut got, 3, Duration::from_secs(20)).await;
    db.shutdown();
    f.wait_degraded(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(f.running(), "still waiting after 25 s");
    assert!(f.metrics.problem().is_some_and(|p| p.starts_with("source")));
    db.start_again().await;
    insert(&db, 4..=6).await;
    // The backoff between attempts is capped at 30 s (plus jitter).
    f.ids_until(&mut got, 6, Duration::from_secs(60)).await;
    assert_all(&got, 6);
    f.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_black_holed_connection_is_noticed_and_replaced() {
    let db = MariaDb::start(Metadata::NoLog).await;
    table(&db).await;
    let proxy = TcpProxy::start(db.port).await;
    // config() asks for a heartbeat every second: silence for 3 s means the path is dead.
    let mut f = Follower::start(via_proxy(&db, &proxy)).await;
    let mut got = Vec::new();
    insert(&db, 1..=5).await;
    f.ids_until(&mut got, 5, Duration::from_secs(20)).await;
    // Idle but healthy: heartbeats keep the watchdog quiet.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(f.metrics.problem(), None);
    assert_eq!(f.metric("binlogstream_source_reconnects_total"), 0.0);
    proxy.set_mode(ProxyMode::BlackHole);
    insert(&db, 6..=10).await;
    let noticed = f.wait_degraded(Duration::from_secs(6)).await;
    assert!(
        noticed <= Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    assert!(f.running());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = Instant::now();
    proxy.set_mode(ProxyMode::Pass);
    f.ids_until(&mut got, 10, Duration::from_secs(30)).await;
    let took = back.elapsed();
    assert!(
        took <= Duration::from_secs(3),
        "rows flowed {took:?} after the path came back (3 heartbeat periods allowed)"
    );
    assert_all(&got, 10);
    f.wait_ready(Duration::from_secs(5)).await;
    assert!(f.metric("binlogstream_source_reconnects_total") >= 1.0);
    f.stop().await.expect("clean stop");
}

#[tokio::test]
async fn refused_connections_for_a_while_are_retried() {
    let db = MariaDb::start(Metadata::NoLog).await;
    table(&db).await;
    let proxy = TcpProxy::start(db.port).await;
    let mut f = Follower::start(via_proxy(&db, &proxy)).await;
    let mut got = Vec::new();
    insert(&db, 1..=3).await;
    f.ids_until(&mut got, 3, Duration::from_secs(20)).await;
    proxy.set_mode(ProxyMode::Refuse);
    proxy.cut_all();
    insert(&db, 4..=6).await;
    f.wait_degraded(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(f.running(), "still retrying");
    proxy.set_mode(ProxyMode::Pass);
    f.ids_until(&mut got, 6, Duration::from_secs(30)).await;
    assert_all(&got, 6);
    f.wait_ready(Duration::from_secs(5)).await;
    f.stop().await.expect("clean stop");
}
