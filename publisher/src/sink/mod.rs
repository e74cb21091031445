//! Where records go. A sink receives rows and transaction boundaries in binlog order and says
//! which boundary everything before it is durably delivered up to.

pub mod jsonl;
pub mod null;

use std::future::Future;

use crate::{decode::RowChange, position::Checkpoint};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing records to {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Fatal(String),
}

pub trait Sink: Send {
    fn write_row(&mut self, row: RowChange) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// A transaction boundary: once every row written before it is delivered, `cp` may be
    /// stored as the resume point.
    fn boundary(&mut self, cp: Checkpoint) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Delivers everything written so far and returns the newest boundary now fully
    /// delivered, if it moved.
    fn flush(&mut self) -> impl Future<Output = Result<Option<Checkpoint>, SinkError>> + Send;
}
