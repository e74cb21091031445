//! A checkpoint in a local JSON file, replaced atomically (temp file, fsync, rename, fsync of
//! the directory) so a crash leaves either the old or the new checkpoint, never a torn one.

use std::path::{Path, PathBuf};

use super::{CheckpointError, CheckpointStore};
use crate::position::Checkpoint;

pub struct FileCheckpoint {
    path: PathBuf,
}

impl FileCheckpoint {
    pub fn new(path: impl Into<PathBuf>) -> FileCheckpoint {
        FileCheckpoint { path: path.into() }
    }

    fn io(&self, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl CheckpointStore for FileCheckpoint {
    async fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| CheckpointError::Corrupt {
                        path: self.path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    async fn save(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let mut bytes =
            serde_json::to_vec_pretty(cp).map_err(|e| CheckpointError::Other(e.to_string()))?;
        bytes.push(b'\n');
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| CheckpointError::Other(e.to_string()))?
            .map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp.json");
        let mut store = FileCheckpoint::new(&path);
        assert_eq!(store.load().await.expect("empty"), None);
        let cp = Checkpoint {
            server: None,
            file: "binlog.000001".into(),
            pos: 4,
            rows_done: 0,
            tx_gtid: None,
            gtid_state: None,
            mysql_gtid_set: None,
            event_mark: None,
            event_ts: 0,
            snapshot: None,
        };
        store.save(&cp).await.expect("save");
        assert_eq!(store.load().await.expect("load"), Some(cp));
        std::fs::write(&path, b"{not json").expect("write");
        let err = store.load().await.expect_err("must fail").to_string();
        assert!(err.contains("not a valid checkpoint"), "{err}");
    }
}
