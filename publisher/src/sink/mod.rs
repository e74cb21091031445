//! Where records go. A sink receives rows and transaction boundaries in binlog order, sends
//! them on without waiting for acknowledgements, and reports the newest boundary (or row
//! inside a transaction) before which everything is delivered.

pub mod ack;
pub mod jsonl;
pub mod kinesis;
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

    /// Sends whatever is buffered without waiting for acknowledgements; returns the newest
    /// checkpoint now fully delivered, if it moved.
    fn flush(&mut self) -> impl Future<Output = Result<Option<Checkpoint>, SinkError>> + Send;

    /// Waits until everything written is delivered (or fails); returns the final checkpoint
    /// if it moved. A sink that delivers on flush needs nothing more.
    fn drain(&mut self) -> impl Future<Output = Result<Option<Checkpoint>, SinkError>> + Send {
        self.flush()
    }

    /// The newest checkpoint delivered so far, if it moved, without sending anything or
    /// waiting: what may still be stored after a failed or abandoned drain.
    fn acknowledged(&mut self) -> Option<Checkpoint> {
        None
    }

    /// True while records are buffered or unacknowledged, so the caller keeps calling
    /// [`Sink::flush`] even when no new rows arrive.
    fn busy(&self) -> bool {
        false
    }
}
