//! Discards records, counting them: measures read + decode + encode alone.

use super::{Sink, SinkError};
use crate::{decode::RowChange, position::Checkpoint};

#[derive(Debug, Default)]
pub struct NullSink {
    pub rows: u64,
    pub bytes: u64,
    pending: Option<Checkpoint>,
}

impl Sink for NullSink {
    async fn write_row(&mut self, row: RowChange) -> Result<(), SinkError> {
        self.rows += 1;
        self.bytes += row.body.len() as u64;
        Ok(())
    }

    async fn boundary(&mut self, cp: Checkpoint) -> Result<(), SinkError> {
        self.pending = Some(cp);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        Ok(self.pending.take())
    }
}
