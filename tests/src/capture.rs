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
        server_id: 1000 + u32::from(db.port % 1000),
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
