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
    sink::kinesis::{self, retry::Backoff, KinesisConfig, KinesisSink},
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
