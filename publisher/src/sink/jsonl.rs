//! One record per line on stdout or in a file: the publisher with no AWS at all.

use std::path::PathBuf;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::{Sink, SinkError};
use crate::{decode::RowChange, position::Checkpoint};

pub struct JsonLinesSink<W: AsyncWrite + Unpin + Send> {
    out: BufWriter<W>,
    target: String,
    pending: Option<Checkpoint>,
}

impl JsonLinesSink<tokio::io::Stdout> {
    pub fn stdout() -> Self {
        JsonLinesSink {
            out: BufWriter::with_capacity(256 * 1024, tokio::io::stdout()),
            target: "stdout".into(),
            pending: None,
        }
    }
}

impl JsonLinesSink<tokio::fs::File> {
    /// Appends to `path` (created when missing), so a resumed run continues the same file.
    pub async fn file(path: PathBuf) -> Result<Self, SinkError> {
        let target = path.display().to_string();
        let f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|source| SinkError::Io {
                target: target.clone(),
                source,
            })?;
        Ok(JsonLinesSink {
            out: BufWriter::with_capacity(256 * 1024, f),
            target,
            pending: None,
        })
    }
}

impl<W: AsyncWrite + Unpin + Send> JsonLinesSink<W> {
    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            target: self.target.clone(),
            source,
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> Sink for JsonLinesSink<W> {
    async fn write_row(&mut self, row: RowChange) -> Result<(), SinkError> {
        let r = async {
            self.out.write_all(&row.body).await?;
            self.out.write_all(b"\n").await
        }
        .await;
        r.map_err(|e| self.io(e))
    }

    async fn boundary(&mut self, cp: Checkpoint) -> Result<(), SinkError> {
        self.pending = Some(cp);
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        let r = self.out.flush().await;
        r.map_err(|e| self.io(e))?;
        Ok(self.pending.take())
    }
}
