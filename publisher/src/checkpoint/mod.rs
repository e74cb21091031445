//! Where the publisher remembers how far consumers have been served.

pub mod file;
pub mod kubernetes;

use std::future::Future;

use crate::position::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint file {path} is not a valid checkpoint: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("checkpoint store: {0}")]
    Other(String),
}

pub trait CheckpointStore: Send {
    fn load(&mut self) -> impl Future<Output = Result<Option<Checkpoint>, CheckpointError>> + Send;
    fn save(&mut self, cp: &Checkpoint)
        -> impl Future<Output = Result<(), CheckpointError>> + Send;
}

/// No persistence: every start uses the configured start position.
pub struct NoCheckpoint;

impl CheckpointStore for NoCheckpoint {
    async fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(None)
    }

    async fn save(&mut self, _cp: &Checkpoint) -> Result<(), CheckpointError> {
        Ok(())
    }
}
