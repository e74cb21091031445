//! The checkpoint in the status of the publisher's own BinlogStream, for publishers run by
//! the operator. The publisher owns `status.checkpoint`, `lagSeconds`, `recordsPublished`,
//! `publisher` and `sourceBinlogs`, applied with server-side apply under its own field
//! manager; the operator's conditions are never touched.
//!
//! One applier writes all of the publisher's fields every time: with server-side apply, a
//! manager that leaves out a field it owned removes it.
//!
//! Checkpoints are written by a background task so the stream never waits for the API
//! server: each call has a timeout, a transient failure (5xx, 429, a timeout, a refused
//! connection) is retried with backoff while only the newest checkpoint is kept, and only a
//! definite answer (403, 404, 409, 422, 400) stops the publisher, at its next checkpoint.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use binlogstream_api::crd::{
    BinlogStream, CheckpointSourceStatus, CheckpointStatus, EventMarkStatus, PublisherReport,
    SnapshotCheckpointStatus, SnapshotStatus, SnapshotTableStatus, SourceBinlogs,
    PUBLISHER_STATUS_MANAGER,
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    api::{Api, Patch, PatchParams},
    Client,
};
use serde_json::json;

use super::{CheckpointError, CheckpointStore};
use crate::{
    metrics::Metrics,
    position::{Checkpoint, EventMark, SnapshotState, SourceServer},
    snapshot::{Progress, ProgressView},
};

#[derive(Default)]
struct Reported {
    /// Nothing is written before the stored checkpoint was read: an apply without the
    /// checkpoint field would delete it.
    loaded: bool,
    checkpoint: Option<Checkpoint>,
    /// `checkpoint` changed since it was last written.
    dirty: bool,
    /// The checkpoint last written successfully (for the metrics).
    stored: Option<Checkpoint>,
    report: Option<PublisherReport>,
    binlogs: Option<SourceBinlogs>,
    /// Writes are failing (transiently); logged once per change.
    failing: bool,
    /// Since when status writes are answered 403 (see FORBIDDEN_GRACE).
    forbidden_since: Option<std::time::Instant>,
    /// A definite refusal: the HTTP status and message, returned by the next save.
    refused: Option<(Option<u16>, String)>,
    /// When the status was last written, and the report it carried (see
    /// [`StatusWriter::write_report_if_due`]).
    written_at: Option<std::time::Instant>,
    written_report: Option<PublisherReport>,
    /// `status.snapshot` as loaded: kept while this publisher runs no snapshot, so a restart
    /// does not erase the record of the last one.
    loaded_snapshot: Option<SnapshotStatus>,
}

/// Longest one call to the API server may take before it is abandoned (and retried).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A 403 is retried this long before it counts as a definite refusal: a kube-apiserver that
/// has just started can answer 403 until its RBAC caches are filled (the likely cause of a
/// publisher restart seen once in the cluster test that restarts it), and that must not stop a
/// streaming publisher. A 403 that lasts is a real permission problem and stops it.
const FORBIDDEN_GRACE: Duration = Duration::from_secs(30);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Shared by the checkpoint store (pipeline) and the periodic status reporter.
#[derive(Clone)]
pub struct StatusWriter {
    api: Api<BinlogStream>,
    name: String,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<Reported>>,
    /// Serialises the writes themselves.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    timeout: Duration,
    /// The UID of the BinlogStream this publisher belongs to: a precondition of every write,
    /// checked on load, so a pod of a deleted stream never writes into a recreated one.
    uid: Option<String>,
    /// The running snapshot's progress, written into `status.snapshot` with every write.
    progress: Option<Progress>,
}

/// The stored form of a checkpoint's snapshot progress (the key as JSON text: its values
/// may be of any JSON type, which a structural schema cannot leave open).
pub fn snapshot_to_status(s: &SnapshotState) -> SnapshotCheckpointStatus {
    SnapshotCheckpointStatus {
        request_id: s.request_id.clone(),
        pending: s.pending.clone(),
        last_key: s.last_key.as_ref().map(|k| k.to_string()),
        table_rows: i64::try_from(s.table_rows).unwrap_or(i64::MAX),
        tables_done: i64::try_from(s.tables_done).unwrap_or(i64::MAX),
        completed: s.completed.clone(),
    }
}

pub fn snapshot_from_status(s: SnapshotCheckpointStatus) -> Result<SnapshotState, String> {
    let last_key = match s.last_key.as_deref() {
        Some(k) if !k.is_empty() => Some(
            serde_json::from_str::<serde_json::Value>(k)
                .map_err(|e| format!("lastKey `{k}` is not JSON: {e}"))?,
        ),
        _ => None,
    };
    Ok(SnapshotState {
        request_id: s.request_id,
        pending: s.pending,
        last_key,
        table_rows: u64::try_from(s.table_rows).unwrap_or(0),
        tables_done: u64::try_from(s.tables_done).unwrap_or(0),
        completed: s.completed,
    })
}

/// `status.snapshot` from the progress view; `None` while no snapshot ran in this process.
pub fn snapshot_view_status(v: &ProgressView) -> Option<SnapshotStatus> {
    if v.state.is_empty() {
        return None;
    }
    let ts = |t: Option<i64>| t.and_then(rfc3339);
    let finished = v
        .tables
        .iter()
        .filter(|t| t.state == "done" || t.state == "skipped")
        .count();
    let summary = if v.state == "Running" {
        format!(
            "Running {finished}/{} tables {} rows",
            v.tables.len(),
            v.rows
        )
    } else {
        format!("{} {} tables {} rows", v.state, v.tables.len(), v.rows)
    };
    Some(SnapshotStatus {
        state: v.state.clone(),
        request_id: v.request_id.clone(),
        method: (!v.method.is_empty()).then(|| v.method.clone()),
        rows: i64::try_from(v.rows).unwrap_or(i64::MAX),
        rows_per_second: (v.state == "Running").then_some(v.rows_per_second as i64),
        eta_seconds: v.eta_seconds.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        started_at: ts(v.started_at),
        finished_at: ts(v.finished_at),
        summary: Some(summary),
        tables: v
            .tables
            .iter()
            .map(|t| SnapshotTableStatus {
                table: t.table.clone(),
                state: t.state.clone(),
                key: (!t.key.is_empty()).then(|| t.key.clone()),
                rows_done: i64::try_from(t.rows_done).unwrap_or(i64::MAX),
                rows_estimated: i64::try_from(t.rows_estimated).unwrap_or(i64::MAX),
                started_at: ts(t.started_at),
                finished_at: ts(t.finished_at),
            })
            .collect(),
    })
}

fn rfc3339(ts: i64) -> Option<String> {
    Timestamp::from_second(ts).ok().map(|t| t.to_string())
}

fn err(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Other(format!("BinlogStream status: {e}"))
}

/// True while a 403 is still within FORBIDDEN_GRACE of the first one in a row.
fn forbidden_for_now(since: &mut Option<std::time::Instant>, e: &CheckpointError) -> bool {
    if !matches!(
        e,
        CheckpointError::Kube {
            code: Some(403),
            ..
        }
    ) {
        return false;
    }
    since.get_or_insert_with(std::time::Instant::now).elapsed() < FORBIDDEN_GRACE
}

/// An API error with its HTTP status (when the server answered) and what to do about it.
fn api_err(what: &str, name: &str, e: kube::Error) -> CheckpointError {
    match e {
        kube::Error::Api(st) => {
            let hint = match st.code {
                403 => "; the publisher's ServiceAccount must be allowed to get and patch binlogstreams/status",
                404 => "; the BinlogStream was deleted",
                409 => "; another field manager holds the publisher's status fields, or the BinlogStream was deleted and recreated (its UID changed)",
                400 | 422 => "; the API server rejected the status: the BinlogStream was deleted and recreated (its UID is immutable), or a publisher bug (please report it)",
                _ => "",
            };
            CheckpointError::Kube {
                code: Some(st.code),
                message: format!(
                    "{what} {name}: HTTP {} {}: {}{hint}",
                    st.code, st.reason, st.message
                ),
            }
        }
        other => CheckpointError::Kube {
            code: None,
            message: format!("{what} {name}: {other}"),
        },
    }
}

impl StatusWriter {
    /// `resource` is `NAMESPACE/NAME`.
    pub async fn new(
        resource: &str,
        metrics: Arc<Metrics>,
    ) -> Result<StatusWriter, CheckpointError> {
        let (ns, name) = resource
            .split_once('/')
            .filter(|(n, m)| !n.is_empty() && !m.is_empty())
            .ok_or_else(|| err(format!("`{resource}` is not NAMESPACE/NAME")))?;
        let client = Client::try_default().await.map_err(err)?;
        Ok(StatusWriter::with_client(client, ns, name, metrics))
    }

    pub fn with_client(
        client: Client,
        namespace: &str,
        name: &str,
        metrics: Arc<Metrics>,
    ) -> StatusWriter {
        StatusWriter {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            metrics,
            state: Arc::new(Mutex::new(Reported::default())),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            timeout: CALL_TIMEOUT,
            uid: None,
            progress: None,
        }
    }

    /// Reports this snapshot progress in `status.snapshot` (rides on the writes the
    /// checkpoints and the report make anyway: no write of its own).
    pub fn with_progress(mut self, progress: Progress) -> StatusWriter {
        self.progress = Some(progress);
        self
    }

    /// Binds every write to the BinlogStream with this UID (`None`: by name only).
    pub fn bound_to_uid(mut self, uid: Option<String>) -> StatusWriter {
        self.uid = uid;
        self
    }

    /// Another per-call timeout than [`CALL_TIMEOUT`] (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> StatusWriter {
        self.timeout = timeout;
        self
    }

    fn checkpoint_pending(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.dirty)
    }

    pub fn set_report(&self, state: &str, reason: Option<&str>, message: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            let same = s.report.as_ref().is_some_and(|r| {
                r.state == state && r.reason.as_deref() == reason && r.message == message
            });
            if !same {
                s.report = Some(PublisherReport {
                    state: state.to_string(),
                    reason: reason.map(str::to_string),
                    message,
                    time: Some(Timestamp::now().to_string()),
                });
            }
        }
    }

    pub fn set_binlogs(&self, oldest: &str, newest: &str, count: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.binlogs = Some(SourceBinlogs {
                oldest: oldest.to_string(),
                newest: newest.to_string(),
                count: count as i64,
            });
        }
    }

    /// Writes everything the publisher owns in the status, within the per-call timeout, and
    /// records the outcome (metrics, /readyz, a definite refusal for the next save).
    pub async fn write(&self) -> Result<(), CheckpointError> {
        let _guard = self.write_lock.lock().await;
        let (written, report) = {
            let s = self.state.lock().map_err(err)?;
            (s.checkpoint.clone(), s.report.clone())
        };
        let result = self.write_locked().await;
        let mut s = self.state.lock().map_err(err)?;
        // Within the grace period a 403 is retried like a 5xx (no HTTP code: transient).
        let result = match result {
            Err(e) if forbidden_for_now(&mut s.forbidden_since, &e) => Err(CheckpointError::Kube {
                code: None,
                message: format!(
                    "{e} (retried for up to {} s: a starting API server answers 403 until its RBAC caches are filled)",
                    FORBIDDEN_GRACE.as_secs()
                ),
            }),
            r => r,
        };
        match &result {
            Ok(()) => {
                s.written_at = Some(std::time::Instant::now());
                s.written_report = report;
                if s.checkpoint == written {
                    s.dirty = false;
                }
                if let Some(cp) = written.filter(|cp| s.stored.as_ref() != Some(cp)) {
                    self.metrics.checkpoint_saved(&cp.file, cp.pos);
                    s.stored = Some(cp);
                }
                s.forbidden_since = None;
                if std::mem::take(&mut s.failing) {
                    tracing::info!(name = %self.name, "BinlogStream status writes work again");
                    self.metrics.set_store_problem(None);
                }
            }
            Err(e) if e.is_transient() => {
                self.metrics.checkpoint_store_failures.inc();
                if !std::mem::replace(&mut s.failing, true) {
                    tracing::warn!(error = %e, "cannot write the BinlogStream status; streaming on and retrying");
                }
                self.metrics
                    .set_store_problem(Some(format!("checkpoint store failing: {e}")));
            }
            Err(e) => {
                if let CheckpointError::Kube { code, message } = e {
                    s.refused = Some((*code, message.clone()));
                }
            }
        }
        result
    }

    /// Writes the status for the periodic report only when its report changed since the last
    /// write or nothing was written for `every`: checkpoint writes already refresh the status,
    /// and each write costs the API server a request (and the operator a reconcile).
    pub async fn write_report_if_due(&self, every: Duration) -> Result<bool, CheckpointError> {
        let due = {
            let s = self.state.lock().map_err(err)?;
            s.report != s.written_report || s.written_at.is_none_or(|t| t.elapsed() >= every)
        };
        if due {
            self.write().await?;
        }
        Ok(due)
    }

    async fn write_locked(&self) -> Result<(), CheckpointError> {
        let (checkpoint, report, binlogs, loaded_snapshot) = {
            let s = self.state.lock().map_err(err)?;
            if !s.loaded {
                return Ok(());
            }
            (
                s.checkpoint.clone(),
                s.report.clone(),
                s.binlogs.clone(),
                s.loaded_snapshot.clone(),
            )
        };
        let snapshot = self
            .progress
            .as_ref()
            .and_then(|p| snapshot_view_status(&p.view()))
            .or(loaded_snapshot);
        let checkpoint = checkpoint.map(|cp| CheckpointStatus {
            display: Some(format!("{}:{}", cp.file, cp.pos)),
            file: cp.file,
            position: cp.pos as i64,
            rows_in_transaction: cp.rows_done as i64,
            transaction_gtid: cp.tx_gtid,
            event_mark: cp.event_mark.map(|m| EventMarkStatus {
                event: i64::from(m.event),
                rows: i64::from(m.rows),
            }),
            // One status field for both flavors: the text tells them apart on load.
            gtid_set: cp
                .gtid_state
                .map(|g| g.to_string())
                .or_else(|| cp.mysql_gtid_set.map(|g| g.to_string())),
            event_time: (cp.event_ts > 0)
                .then(|| rfc3339(i64::from(cp.event_ts)))
                .flatten(),
            written_at: Some(Timestamp::now().to_string()),
            source: cp.server.map(|s| CheckpointSourceStatus {
                server_id: i64::from(s.server_id),
                server_uuid: s.server_uuid,
                host: (!s.host.is_empty()).then_some(s.host),
            }),
            snapshot: cp.snapshot.as_deref().map(snapshot_to_status),
        });
        let mut status = serde_json::Map::new();
        if let Some(cp) = checkpoint {
            status.insert("checkpoint".into(), serde_json::to_value(cp).map_err(err)?);
        }
        if let Some(lag) = self.metrics.lag_seconds() {
            status.insert("lagSeconds".into(), json!(lag));
        }
        status.insert(
            "recordsPublished".into(),
            json!(self.metrics.records_published.get()),
        );
        if let Some(r) = report {
            status.insert("publisher".into(), serde_json::to_value(r).map_err(err)?);
        }
        if let Some(b) = binlogs {
            status.insert(
                "sourceBinlogs".into(),
                serde_json::to_value(b).map_err(err)?,
            );
        }
        if let Some(sn) = snapshot {
            status.insert("snapshot".into(), serde_json::to_value(sn).map_err(err)?);
        }
        let mut patch = json!({
            "apiVersion": "cdc.binlogstream.io/v1alpha1",
            "kind": "BinlogStream",
            "status": status,
        });
        if let Some(uid) = &self.uid {
            // A UID in the patch is a precondition: the API server answers 409 Conflict when
            // the object of this name is another one (deleted and recreated).
            patch["metadata"] = json!({ "uid": uid });
        }
        let params = PatchParams::apply(PUBLISHER_STATUS_MANAGER).force();
        let patch = Patch::Apply(patch);
        let call = self.api.patch_status(&self.name, &params, &patch);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| api_err("writing the status of", &self.name, e)),
            Err(_) => Err(CheckpointError::Kube {
                code: None,
                message: format!(
                    "writing the status of {}: no answer within {} s",
                    self.name,
                    self.timeout.as_secs_f32()
                ),
            }),
        }
    }
}

/// The checkpoint store of operator-run publishers: `save` queues, a background task writes.
pub struct KubeCheckpoint {
    writer: StatusWriter,
    /// The background writer, started by the first save, and its wake-up call.
    flusher: Option<(Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>)>,
}

impl KubeCheckpoint {
    pub fn new(writer: StatusWriter) -> KubeCheckpoint {
        KubeCheckpoint {
            writer,
            flusher: None,
        }
    }

    async fn stop_flusher(&mut self) {
        if let Some((_, task)) = self.flusher.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for KubeCheckpoint {
    fn drop(&mut self) {
        if let Some((_, task)) = self.flusher.take() {
            task.abort();
        }
    }
}

/// Writes whenever a new checkpoint is queued; after a transient failure waits with backoff
/// (new checkpoints replace the queued one meanwhile); after a definite one stops.
async fn flush_loop(writer: StatusWriter, wake: Arc<tokio::sync::Notify>) {
    let mut backoff = RETRY_MIN;
    loop {
        if !writer.checkpoint_pending() {
            wake.notified().await;
            continue;
        }
        match writer.write().await {
            Ok(()) => backoff = RETRY_MIN,
            Err(e) if e.is_transient() => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            // Recorded by `write`; the next save returns it.
            Err(_) => return,
        }
    }
}

impl CheckpointStore for KubeCheckpoint {
    async fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        let name = &self.writer.name;
        let obj = match tokio::time::timeout(self.writer.timeout, self.writer.api.get_status(name))
            .await
        {
            Ok(r) => r.map_err(|e| api_err("reading the status of", name, e))?,
            Err(_) => {
                return Err(CheckpointError::Kube {
                    code: None,
                    message: format!(
                        "reading the status of {name}: no answer within {} s",
                        self.writer.timeout.as_secs_f32()
                    ),
                })
            }
        };
        if let (Some(want), Some(found)) = (&self.writer.uid, obj.metadata.uid.as_deref()) {
            if want != found {
                return Err(CheckpointError::Kube {
                    code: Some(409),
                    message: format!(
                        "BinlogStream {name} is not the one this publisher was started for (UID {found}, expected {want}): it was deleted and recreated; this pod stops and the operator starts a new one"
                    ),
                });
            }
        }
        let status = obj.status.unwrap_or_default();
        if let Ok(mut s) = self.writer.state.lock() {
            s.loaded_snapshot = status.snapshot.clone();
        }
        let Some(cp) = status.checkpoint else {
            if let Ok(mut s) = self.writer.state.lock() {
                s.loaded = true;
            }
            return Ok(None);
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: format!("{}.status.checkpoint.gtidSet", self.writer.name),
            reason,
        };
        let (gtid_state, mysql_gtid_set) = match cp.gtid_set.as_deref() {
            // A MariaDB GTID (D-S-N) never holds a `:`; a MySQL set always does.
            Some(g) if g.contains(':') => {
                (None, Some(g.parse().map_err(|e| corrupt(format!("{e}")))?))
            }
            Some(g) if !g.is_empty() => {
                (Some(g.parse().map_err(|e| corrupt(format!("{e}")))?), None)
            }
            _ => (None, None),
        };
        let event_ts = cp
            .event_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.as_second() as u32)
            .unwrap_or(0);
        let restored = Checkpoint {
            file: cp.file,
            pos: u64::try_from(cp.position).map_err(|_| CheckpointError::Corrupt {
                path: format!("{}.status.checkpoint.position", self.writer.name),
                reason: "negative".into(),
            })?,
            rows_done: u64::try_from(cp.rows_in_transaction).unwrap_or(0),
            tx_gtid: cp.transaction_gtid.filter(|g| !g.is_empty()),
            gtid_state,
            mysql_gtid_set,
            event_mark: cp.event_mark.and_then(|m| {
                Some(EventMark {
                    event: u32::try_from(m.event).ok()?,
                    rows: u32::try_from(m.rows).ok()?,
                })
            }),
            event_ts,
            snapshot: match cp.snapshot {
                Some(sn) => Some(Box::new(snapshot_from_status(sn).map_err(|reason| {
                    CheckpointError::Corrupt {
                        path: format!("{}.status.checkpoint.snapshot", self.writer.name),
                        reason,
                    }
                })?)),
                None => None,
            },
            server: cp.source.and_then(|s| {
                Some(SourceServer {
                    server_id: u32::try_from(s.server_id).ok()?,
                    server_uuid: s.server_uuid,
                    host: s.host.unwrap_or_default(),
                })
            }),
        };
        if let Ok(mut s) = self.writer.state.lock() {
            s.checkpoint = Some(restored.clone());
            s.loaded = true;
        }
        Ok(Some(restored))
    }

    async fn save(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        {
            let mut s = self.writer.state.lock().map_err(err)?;
            if let Some((code, message)) = &s.refused {
                return Err(CheckpointError::Kube {
                    code: *code,
                    message: message.clone(),
                });
            }
            s.checkpoint = Some(cp.clone());
            s.dirty = true;
        }
        let writer = &self.writer;
        let (wake, _) = self.flusher.get_or_insert_with(|| {
            let wake = Arc::new(tokio::sync::Notify::new());
            let task = tokio::spawn(flush_loop(writer.clone(), wake.clone()));
            (wake, task)
        });
        wake.notify_one();
        Ok(())
    }

    fn queues(&self) -> bool {
        true
    }

    /// Stops the background writer and writes the newest checkpoint itself, retrying
    /// transient failures until `deadline`.
    async fn finish(&mut self, deadline: Instant) -> Result<(), CheckpointError> {
        self.stop_flusher().await;
        let mut backoff = RETRY_MIN;
        let mut last = None;
        while self.writer.checkpoint_pending() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CheckpointError::Kube {
                    code: None,
                    message: format!(
                        "the final checkpoint was not written before the drain deadline ({})",
                        last.unwrap_or_else(|| "no attempt finished".to_string())
                    ),
                });
            }
            match tokio::time::timeout(left, self.writer.write()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_transient() => {
                    last = Some(e.to_string());
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => last = Some("the last call did not finish".into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{json, Value};

    use super::*;

    fn object(status: Value) -> Value {
        json!({
            "apiVersion": "cdc.binlogstream.io/v1alpha1", "kind": "BinlogStream",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"source": {"host": "db", "user": "repl", "passwordSecretRef": {"name": "pw", "key": "password"}},
                     "target": {"stream": "s"}},
            "status": status
        })
    }

    fn writer_for(uid: &str) -> (StatusWriter, Handle) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let writer = StatusWriter::with_client(
            Client::new(svc, "default"),
            "shop",
            "orders",
            Arc::new(Metrics::new()),
        )
        .bound_to_uid(Some(uid.into()));
        (writer, handle)
    }

    #[tokio::test]
    async fn a_pod_of_a_deleted_stream_refuses_the_recreated_one() {
        let (writer, mut handle) = writer_for("uid-old");
        let mut store = KubeCheckpoint::new(writer);
        let answer = async {
            let (_, send) = handle.next_request().await.expect("load");
            let mut obj = object(json!({}));
            obj["metadata"]["uid"] = json!("uid-new");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&obj).expect("json"),
            )));
        };
        let (loaded, ()) = tokio::join!(store.load(), answer);
        let e = loaded
            .expect_err("another object of the same name")
            .to_string();
        assert!(e.contains("uid-new") && e.contains("uid-old"), "{e}");
    }

    #[tokio::test]
    async fn every_status_write_carries_the_streams_uid_as_a_precondition() {
        let (writer, mut handle) = writer_for("uid-1");
        let mut store = KubeCheckpoint::new(writer.clone());
        let answer = async {
            let (_, send) = handle.next_request().await.expect("load");
            let mut obj = object(json!({}));
            obj["metadata"]["uid"] = json!("uid-1");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&obj).expect("json"),
            )));
        };
        let (loaded, ()) = tokio::join!(store.load(), answer);
        assert_eq!(loaded.expect("load"), None);
        writer.set_report("Running", None, None);
        let check = async {
            let (req, send) = handle.next_request().await.expect("write");
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            assert_eq!(body["metadata"]["uid"], "uid-1");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
        };
        let (written, ()) = tokio::join!(writer.write(), check);
        written.expect("write");
    }

    #[tokio::test]
    async fn loads_and_saves_only_the_publishers_fields() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let metrics = Arc::new(Metrics::new());
        let mut store =
            KubeCheckpoint::new(StatusWriter::with_client(client, "shop", "orders", metrics));
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("load");
            assert_eq!(req.method(), "GET");
            assert_eq!(
                req.uri().path(),
                "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status"
            );
            let status = json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "Streaming", "message": "",
                                "lastTransitionTime": "2026-11-24T00:00:00Z"}],
                "checkpoint": {"file": "binlog.000007", "position": 1234, "rowsInTransaction": 3,
                               "transactionGtid": "0-1-56",
                               "gtidSet": "0-1-55", "eventTime": "2026-11-24T10:00:00Z"}
            });
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(status)).expect("json"),
            )));

            let (req, send) = handle.next_request().await.expect("save");
            assert_eq!(req.method(), "PATCH");
            let uri = req.uri().to_string();
            assert!(
                uri.contains("fieldManager=binlogstream-publisher-status")
                    && uri.contains("force=true"),
                "{uri}"
            );
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            let st = &body["status"];
            assert_eq!(st["checkpoint"]["file"], "binlog.000008");
            assert_eq!(st["checkpoint"]["position"], 4);
            assert_eq!(st["checkpoint"]["rowsInTransaction"], 2);
            assert_eq!(st["checkpoint"]["display"], "binlog.000008:4");
            assert_eq!(st["checkpoint"]["transactionGtid"], "0-1-56");
            assert_eq!(st["recordsPublished"], 0);
            assert!(
                st.get("conditions").is_none(),
                "the operator's fields are never written"
            );
            assert!(st.get("observedGeneration").is_none());
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(st.clone())).expect("json"),
            )));
        });
        // Before the load nothing may be written: it would drop the stored checkpoint.
        store.writer.set_report("Starting", None, None);
        store.writer.write().await.expect("a no-op");
        let cp = store.load().await.expect("load").expect("a checkpoint");
        assert_eq!(
            (cp.file.as_str(), cp.pos, cp.rows_done),
            ("binlog.000007", 1234, 3)
        );
        assert_eq!(
            cp.gtid_state.map(|g| g.to_string()).as_deref(),
            Some("0-1-55")
        );
        assert_eq!(cp.event_ts, 1_795_514_400);
        assert_eq!(cp.tx_gtid.as_deref(), Some("0-1-56"));
        store
            .save(&Checkpoint {
                server: None,
                file: "binlog.000008".into(),
                pos: 4,
                rows_done: 2,
                tx_gtid: Some("0-1-56".into()),
                gtid_state: None,
                mysql_gtid_set: None,
                event_mark: None,
                event_ts: 0,
                snapshot: None,
            })
            .await
            .expect("save");
        store
            .finish(Instant::now() + Duration::from_secs(5))
            .await
            .expect("written");
        server.await.expect("fake API server");
    }

    /// A publisher run by the operator resumes a snapshot from its status exactly as from a
    /// file: the progress and the completed request ids ride in `status.checkpoint.snapshot`
    /// (without them a restarted pod would skip the rest of the snapshot and run a completed
    /// request again), and the progress view is reported in `status.snapshot`.
    #[tokio::test]
    async fn snapshot_progress_is_stored_in_the_status_and_restored() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = Arc::new(Metrics::new());
        let progress = Progress::default();
        let writer =
            StatusWriter::with_client(Client::new(svc, "default"), "shop", "orders", metrics)
                .with_progress(progress.clone());
        let mut store = KubeCheckpoint::new(writer);
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("load");
            let status = json!({
                "checkpoint": {"file": "binlog.000007", "position": 1234,
                               "snapshot": {"requestId": "reseed-1", "pending": ["shop.items", "shop.orders"],
                                            "lastKey": "[42,\"a\"]", "tableRows": 500, "tablesDone": 2,
                                            "completed": ["initial"]}},
                "snapshot": {"state": "Running", "requestId": "reseed-1", "rows": 9, "summary": "Running 2/4 tables 9 rows"}
            });
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(status)).expect("json"),
            )));
            let (req, send) = handle.next_request().await.expect("save");
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
            body
        });
        let cp = store.load().await.expect("load").expect("a checkpoint");
        let snap = cp
            .snapshot
            .clone()
            .expect("the snapshot progress is restored");
        assert_eq!(snap.request_id, "reseed-1");
        assert_eq!(snap.pending, vec!["shop.items", "shop.orders"]);
        assert_eq!(snap.last_key, Some(json!([42, "a"])));
        assert_eq!((snap.table_rows, snap.tables_done), (500, 2));
        assert_eq!(snap.completed, vec!["initial"]);
        // Running in this process now: the view replaces the loaded one.
        let mut reporter =
            crate::snapshot::progress::Reporter::new(Arc::new(Metrics::new()), progress);
        reporter.begin("reseed-1", "watermark", &snap.pending, 500);
        reporter.table_started("shop.items", "PRIMARY", 1000, 500);
        reporter.rows("shop.items", 100, 600);
        let mut next = cp.clone();
        next.pos = 2000;
        if let Some(s) = next.snapshot.as_mut() {
            s.table_rows = 600;
            s.last_key = Some(json!([99, "z"]));
        }
        store.save(&next).await.expect("save");
        store
            .finish(Instant::now() + Duration::from_secs(5))
            .await
            .expect("written");
        let body = server.await.expect("fake API server");
        let st = &body["status"];
        let stored = &st["checkpoint"]["snapshot"];
        assert_eq!(stored["requestId"], "reseed-1");
        assert_eq!(stored["lastKey"], "[99,\"z\"]");
        assert_eq!(stored["tableRows"], 600);
        assert_eq!(stored["completed"], json!(["initial"]));
        let view = &st["snapshot"];
        assert_eq!(view["state"], "Running");
        assert_eq!(view["rows"], 600);
        assert_eq!(view["summary"], "Running 0/2 tables 600 rows");
        assert_eq!(view["tables"][0]["table"], "shop.items");
        assert_eq!(view["tables"][0]["state"], "running");
        assert_eq!(view["tables"][0]["rowsDone"], 600);
        assert_eq!(view["tables"][0]["rowsEstimated"], 1000);
        assert!(view["tables"][0]["startedAt"].is_string());
        assert_eq!(view["tables"][1]["state"], "pending");
    }

    /// A publisher that runs no snapshot keeps the record of the last one (with server-side
    /// apply, leaving the field out would delete it).
    #[tokio::test]
    async fn the_last_snapshot_report_survives_a_restart_without_one() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let writer = StatusWriter::with_client(
            Client::new(svc, "default"),
            "shop",
            "orders",
            Arc::new(Metrics::new()),
        )
        .with_progress(Progress::default());
        let mut store = KubeCheckpoint::new(writer.clone());
        let done = json!({"state": "Done", "requestId": "initial", "rows": 7, "summary": "Done 1 tables 7 rows",
                          "tables": [{"table": "shop.orders", "state": "done", "rowsDone": 7, "rowsEstimated": 7}]});
        let answer = async {
            let (_, send) = handle.next_request().await.expect("load");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({"snapshot": done.clone()}))).expect("json"),
            )));
        };
        let (loaded, ()) = tokio::join!(store.load(), answer);
        assert_eq!(loaded.expect("load"), None);
        writer.set_report("Running", None, None);
        let check = async {
            let (req, send) = handle.next_request().await.expect("write");
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
            body
        };
        let (written, body) = tokio::join!(writer.write(), check);
        written.expect("write");
        assert_eq!(body["status"]["snapshot"], done);
    }

    #[tokio::test]
    async fn the_periodic_report_writes_only_when_it_changed_or_is_due() {
        let (store, mut handle, _metrics) = loaded_store(Duration::from_secs(5)).await;
        let writer = store.writer.clone();
        writer.set_report("Running", None, None);
        let first = async {
            let (_, send) = handle.next_request().await.expect("first write");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
        };
        let (wrote, ()) = tokio::join!(writer.write_report_if_due(Duration::from_secs(10)), first);
        assert!(wrote.expect("write"));
        // Unchanged and written just now: no request (the mock would wait for an answer).
        let again = tokio::time::timeout(
            Duration::from_secs(2),
            writer.write_report_if_due(Duration::from_secs(10)),
        )
        .await
        .expect("an unchanged report made a request");
        assert!(!again.expect("skip"));
        // A new state is written at once.
        writer.set_report(
            "Retrying",
            Some("KinesisFailing"),
            Some("Kinesis retrying".into()),
        );
        let changed = async {
            let (req, send) = handle.next_request().await.expect("changed report");
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            assert_eq!(body["status"]["publisher"]["state"], "Retrying");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
        };
        let (wrote, ()) =
            tokio::join!(writer.write_report_if_due(Duration::from_secs(10)), changed);
        assert!(wrote.expect("write"));
        // Due again once the refresh interval has passed, even unchanged.
        let due = async {
            let (_, send) = handle.next_request().await.expect("refresh");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
        };
        let (wrote, ()) = tokio::join!(writer.write_report_if_due(Duration::ZERO), due);
        assert!(wrote.expect("write"));
    }

    fn checkpoint(pos: u64) -> Checkpoint {
        Checkpoint {
            server: None,
            file: "binlog.000009".into(),
            pos,
            rows_done: 0,
            tx_gtid: None,
            gtid_state: None,
            mysql_gtid_set: None,
            event_ts: 0,
            event_mark: None,
            snapshot: None,
        }
    }

    fn api_status(code: u16, reason: &str) -> Response<Body> {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "injected", "reason": reason, "code": code});
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response")
    }

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// A store over a fake API server that has answered the load with an empty status.
    /// A fake API server that answers the first status write (checkpoint 100) with `code`,
    /// then accepts the retry; returns the position the retry carried.
    fn fail_once_then_accept(
        mut handle: Handle,
        code: u16,
        reason: &'static str,
    ) -> tokio::task::JoinHandle<u64> {
        tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("first write");
            assert_eq!(patched_position(req).await, 100);
            send.send_response(api_status(code, reason));
            // The retry carries the newest checkpoint, not the one that failed.
            let (req, send) = handle.next_request().await.expect("retry");
            let pos = patched_position(req).await;
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
            pos
        })
    }

    async fn loaded_store(timeout: Duration) -> (KubeCheckpoint, Handle, Arc<Metrics>) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = Arc::new(Metrics::new());
        // Streaming, as far as the source and the sink go.
        metrics.set_ready(true, None);
        let writer = StatusWriter::with_client(
            Client::new(svc, "default"),
            "shop",
            "orders",
            metrics.clone(),
        )
        .with_timeout(timeout);
        let mut store = KubeCheckpoint::new(writer);
        let answer = async {
            let (_, send) = handle.next_request().await.expect("load");
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
        };
        let (loaded, ()) = tokio::join!(store.load(), answer);
        assert_eq!(loaded.expect("load"), None);
        (store, handle, metrics)
    }

    async fn patched_position(req: Request<Body>) -> u64 {
        let body: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                .expect("json");
        body["status"]["checkpoint"]["position"]
            .as_u64()
            .expect("a checkpoint")
    }

    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn a_failed_status_write_is_retried_while_saves_go_on() {
        let (mut store, handle, metrics) = loaded_store(CALL_TIMEOUT).await;
        let server = fail_once_then_accept(handle, 500, "InternalError");
        store.save(&checkpoint(100)).await.expect("queued");
        eventually("the failure is counted", || {
            metrics.checkpoint_store_failures.get() == 1
        })
        .await;
        let problem = metrics.problem().unwrap_or_default();
        assert!(
            problem.contains("checkpoint store failing") && problem.contains("500"),
            "{problem}"
        );
        assert_eq!(metrics.checkpoint_store_failing.get(), 1);
        // The pipeline is not stopped: later checkpoints are taken while the store retries.
        store.save(&checkpoint(200)).await.expect("still saving");
        assert_eq!(server.await.expect("fake API server"), 200);
        eventually("the checkpoint caught up", || {
            metrics.checkpoint_position.get() == 200
        })
        .await;
        assert_eq!(metrics.problem(), None, "/readyz recovers");
        assert_eq!(metrics.checkpoint_store_failing.get(), 0);
        store
            .finish(Instant::now() + Duration::from_secs(2))
            .await
            .expect("nothing left to write");
    }

    #[tokio::test]
    async fn a_hung_status_call_times_out_and_is_retried() {
        let (mut store, mut handle, metrics) = loaded_store(Duration::from_millis(300)).await;
        let server = tokio::spawn(async move {
            // Never answered: the API server hangs.
            let (_req, hung) = handle.next_request().await.expect("first write");
            let (req, send) = handle.next_request().await.expect("retry");
            let pos = patched_position(req).await;
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(json!({}))).expect("json"),
            )));
            drop(hung);
            pos
        });
        let cp = checkpoint(300);
        let queued = tokio::time::timeout(Duration::from_millis(200), store.save(&cp));
        queued
            .await
            .expect("save never waits for the API server")
            .expect("queued");
        assert_eq!(server.await.expect("fake API server"), 300);
        eventually("the checkpoint is written by the retry", || {
            metrics.checkpoint_position.get() == 300
        })
        .await;
        assert_eq!(
            metrics.checkpoint_store_failures.get(),
            1,
            "the timeout counted"
        );
        store
            .finish(Instant::now() + Duration::from_secs(2))
            .await
            .expect("nothing left to write");
    }

    #[tokio::test]
    async fn a_definite_refusal_stops_with_its_reason() {
        let (mut store, mut handle, _metrics) = loaded_store(CALL_TIMEOUT).await;
        let server = tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.expect("write");
            send.send_response(api_status(404, "NotFound"));
            handle
        });
        store.save(&checkpoint(400)).await.expect("queued");
        let _handle = server.await.expect("fake API server");
        let mut refused = None;
        for _ in 0..200 {
            if let Err(e) = store.save(&checkpoint(500)).await {
                refused = Some(e);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let e = refused.expect("the refusal reaches the pipeline");
        assert!(!e.is_transient());
        let msg = e.to_string();
        assert!(msg.contains("404") && msg.contains("deleted"), "{msg}");
    }

    #[tokio::test]
    async fn a_403_from_a_starting_api_server_is_retried_not_taken_as_final() {
        let (mut store, handle, metrics) = loaded_store(CALL_TIMEOUT).await;
        let server = fail_once_then_accept(handle, 403, "Forbidden");
        store.save(&checkpoint(100)).await.expect("queued");
        eventually("the 403 is counted as a failure", || {
            metrics.checkpoint_store_failures.get() == 1
        })
        .await;
        store
            .save(&checkpoint(200))
            .await
            .expect("a 403 within the grace period does not stop the pipeline");
        assert_eq!(server.await.expect("fake API server"), 200);
        eventually("the checkpoint caught up", || {
            metrics.checkpoint_position.get() == 200
        })
        .await;
        assert_eq!(metrics.checkpoint_store_failing.get(), 0);
    }

    #[test]
    fn a_403_that_lasts_past_the_grace_period_is_final() {
        let e = CheckpointError::Kube {
            code: Some(403),
            message: "forbidden".into(),
        };
        let mut since = None;
        assert!(forbidden_for_now(&mut since, &e));
        since = std::time::Instant::now().checked_sub(FORBIDDEN_GRACE + Duration::from_secs(1));
        assert!(!forbidden_for_now(&mut since, &e));
        let other = CheckpointError::Kube {
            code: Some(409),
            message: "conflict".into(),
        };
        assert!(!forbidden_for_now(&mut None, &other));
    }
}
