//! Runs the publisher library against a test server and collects what it publishes.

use std::time::Duration;

use publisher::{
    decode::{EncodeOptions, RowChange},
    filter::TableFilter,
    position::{Checkpoint, StartFrom},
    sink::{Sink, SinkError},
    source::{Reader, SourceAddr, SourceConfig, SourceError},
};

use crate::mariadb::MariaDb;

/// Keeps every row and the last boundary, like a sink that delivers instantly.
#[derive(Default)]
pub struct MemorySink {
    pub rows: Vec<RowChange>,
    pub boundaries: Vec<Checkpoint>,
    pending: Option<Checkpoint>,
}

impl Sink for MemorySink {
    async fn write_row(&mut self, row: RowChange) -> Result<(), SinkError> {
        self.rows.push(row);
        Ok(())
    }

    async fn boundary(&mut self, cp: Checkpoint) -> Result<(), SinkError> {
        self.boundaries.push(cp.clone());
        self.pending = Some(cp);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        Ok(self.pending.take())
    }
}

impl MemorySink {
    pub fn lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| String::from_utf8(r.body.clone()).expect("records are UTF-8"))
            .collect()
    }

    pub fn json(&self) -> Vec<serde_json::Value> {
        self.rows
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("records are JSON"))
            .collect()
    }
}

pub fn config(db: &MariaDb, start: StartFrom) -> SourceConfig {
    SourceConfig {
        addr: SourceAddr::new(&db.repl_url(), Some(&db.repl_password)).expect("addr"),
        server_id: {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            1000 + u32::from(db.port % 1000) * 100
                + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100
        },
        start,
        filter: TableFilter::default(),
        encode: EncodeOptions::default(),
        heartbeat: Duration::from_secs(1),
        stop_at_end: true,
    }
}

/// Reads from `start` (or `checkpoint`) to the current end of the binlog.
pub async fn read_all(
    cfg: SourceConfig,
    checkpoint: Option<Checkpoint>,
) -> Result<MemorySink, SourceError> {
    let reader = Reader::open(cfg, checkpoint).await?;
    let mut sink = MemorySink::default();
    let mut store = publisher::checkpoint::NoCheckpoint;
    let opts = publisher::pipeline::PipelineOptions::default();
    match publisher::pipeline::run(reader, &mut sink, &mut store, &opts, std::future::pending())
        .await
    {
        Ok(_) => Ok(sink),
        Err(publisher::pipeline::PipelineError::Source(e)) => Err(e),
        Err(e) => panic!("pipeline failed: {e}"),
    }
}

/// Reads everything from the oldest binlog.
pub async fn read_from_start(db: &MariaDb) -> MemorySink {
    read_all(config(db, StartFrom::Earliest), None)
        .await
        .expect("read binlog")
}

/// Hands rows to the test as they arrive.
pub struct ChannelSink {
    tx: tokio::sync::mpsc::UnboundedSender<RowChange>,
    pending: Option<Checkpoint>,
}

impl ChannelSink {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<RowChange>) -> ChannelSink {
        ChannelSink { tx, pending: None }
    }
}

impl Sink for ChannelSink {
    async fn write_row(&mut self, row: RowChange) -> Result<(), SinkError> {
        self.tx
            .send(row)
            .map_err(|_| SinkError::Fatal("test receiver dropped".into()))
    }

    async fn boundary(&mut self, cp: Checkpoint) -> Result<(), SinkError> {
        self.pending = Some(cp);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        Ok(self.pending.take())
    }
}

type RunResult = Result<publisher::pipeline::Summary, publisher::pipeline::PipelineError>;

/// A publisher following the binlog live, in a task of its own.
pub struct Live {
    rx: tokio::sync::mpsc::UnboundedReceiver<RowChange>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<RunResult>>,
}

impl Live {
    pub async fn start(mut cfg: SourceConfig) -> Result<Live, SourceError> {
        cfg.stop_at_end = false;
        let reader = Reader::open(cfg, None).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut sink = ChannelSink { tx, pending: None };
            let mut store = publisher::checkpoint::NoCheckpoint;
            let opts = publisher::pipeline::PipelineOptions::default();
            publisher::pipeline::run(reader, &mut sink, &mut store, &opts, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Live {
            rx,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The next row as a JSON value; fails the test (with the publisher's error, if it
    /// stopped) when none comes within 20 s.
    pub async fn next(&mut self) -> serde_json::Value {
        match tokio::time::timeout(Duration::from_secs(20), self.rx.recv()).await {
            Ok(Some(row)) => serde_json::from_slice(&row.body).expect("json"),
            _ => {
                let outcome = match self.task.take() {
                    Some(t) if t.is_finished() => format!("{:?}", t.await),
                    _ => "still running".into(),
                };
                panic!("no row arrived within 20 s; publisher: {outcome}");
            }
        }
    }

    /// Waits for the publisher to stop on its own (after an error) and returns its outcome.
    pub async fn outcome(mut self) -> RunResult {
        let task = self.task.take().expect("task");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("publisher did not stop")
            .expect("publisher task panicked")
    }

    pub async fn stop(mut self) -> RunResult {
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

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A source config for an explicit URL and password (benchmarks, external servers).
pub fn config_for_url(url: &str, password: &str, start: StartFrom) -> SourceConfig {
    SourceConfig {
        addr: SourceAddr::new(url, Some(password)).expect("addr"),
        server_id: 7100,
        start,
        filter: TableFilter::default(),
        encode: EncodeOptions::default(),
        heartbeat: Duration::from_secs(1),
        stop_at_end: true,
    }
}

/// Runs the publisher from `cfg` into the Kinesis endpoint until the end of the binlog (KPL
/// aggregation when `k.aggregate`, over the stream's shards).
pub async fn publish_to_kinesis(
    cfg: SourceConfig,
    endpoint: &str,
    k: publisher::sink::kinesis::KinesisConfig,
    metrics: std::sync::Arc<publisher::metrics::Metrics>,
) -> Result<publisher::pipeline::Summary, publisher::pipeline::PipelineError> {
    use publisher::sink::kinesis::{self, KinesisSink};
    let client = crate::kinesis::client_for(endpoint).await;
    kinesis::preflight(&client, &k).await?;
    let shards = if k.aggregate {
        Some(kinesis::shard_ranges(&client, &k.stream).await?)
    } else {
        None
    };
    let mut sink = KinesisSink::new(client, k, metrics.clone());
    if let Some(ranges) = shards {
        sink.set_shards(ranges);
    }
    let reader = Reader::open(cfg, None).await?;
    let opts = publisher::pipeline::PipelineOptions {
        metrics,
        ..publisher::pipeline::PipelineOptions::default()
    };
    let mut store = publisher::checkpoint::NoCheckpoint;
    publisher::pipeline::run(reader, &mut sink, &mut store, &opts, std::future::pending()).await
}
