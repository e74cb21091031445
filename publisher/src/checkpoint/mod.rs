//! Where the publisher remembers how far consumers have been served.

pub mod fence;
pub mod file;
pub mod kubernetes;

use std::{future::Future, time::Instant};

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
    /// A call to the Kubernetes API; `code` is the HTTP status when the server answered.
    #[error("BinlogStream status: {message}")]
    Kube { code: Option<u16>, message: String },
    #[error("checkpoint store: {0}")]
    Other(String),
}

impl CheckpointError {
    /// True when trying again later may succeed (a full disk, a 500, a timeout, an API server
    /// restarting); false when a person must act (no permission, the object deleted, an
    /// invalid write).
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            CheckpointError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    K::StorageFull | K::QuotaExceeded | K::Interrupted | K::TimedOut
                ) || source.raw_os_error() == Some(5) // EIO
            }
            CheckpointError::Kube { code, .. } => {
                !matches!(code, Some(400 | 403 | 404 | 409 | 422))
            }
            CheckpointError::Corrupt { .. } | CheckpointError::Other(_) => false,
        }
    }
}

pub trait CheckpointStore: Send {
    fn load(&mut self) -> impl Future<Output = Result<Option<Checkpoint>, CheckpointError>> + Send;

    /// Stores `cp`, or hands it to a background writer (see [`CheckpointStore::queues`]).
    fn save(&mut self, cp: &Checkpoint)
        -> impl Future<Output = Result<(), CheckpointError>> + Send;

    /// True when `save` only queues the checkpoint for a writer that retries by itself and
    /// reports what it stored to the metrics; `finish` then waits for it.
    fn queues(&self) -> bool {
        false
    }

    /// At shutdown: waits until `deadline` for every checkpoint handed to `save` to be stored.
    fn finish(
        &mut self,
        _deadline: Instant,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        async { Ok(()) }
    }
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

#[cfg(test)]
mod tests {
    use super::CheckpointError;

    #[test]
    fn transient_and_definite_errors() {
        let io = |kind| CheckpointError::Io {
            path: "cp".into(),
            source: std::io::Error::from(kind),
        };
        assert!(io(std::io::ErrorKind::StorageFull).is_transient());
        assert!(!io(std::io::ErrorKind::PermissionDenied).is_transient());
        let kube = |code| CheckpointError::Kube {
            code,
            message: String::new(),
        };
        for transient in [None, Some(500), Some(503), Some(429), Some(401)] {
            assert!(kube(transient).is_transient(), "{transient:?}");
        }
        for definite in [403, 404, 409, 422] {
            assert!(!kube(Some(definite)).is_transient(), "{definite}");
        }
    }
}
