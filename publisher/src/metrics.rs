//! Prometheus metrics and the health endpoints, served over HTTP.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Action {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// The reasons `sink::kinesis::retry` gives a retry. Each exists from the start (at 0), so
/// dashboards show the family and `rate()` counts the first retry.
pub const RETRY_REASONS: &[&str] = &[
    "throttled",
    "kms_throttled",
    "internal_failure",
    "timeout",
    "connection",
    "bad_response",
    "server_error",
];

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct Metrics {
    pub rows_read: Counter,
    pub records_published: Counter,
    pub bytes_published: Counter,
    pub batches: Counter,
    pub retries: Family<Reason, Counter>,
    pub oversize: Family<Action, Counter>,
    /// Partial JSON updates that could not be rebuilt into a full document (the stream stops
    /// on the first; the counter says why to dashboards and alerts).
    pub partial_json_unapplied: Counter,
    pub in_flight_records: Gauge,
    /// Snapshot: rows handed on, per table rows done and the estimate (TABLE_ROWS), tables
    /// skipped because they disappeared mid-snapshot.
    pub snapshot_rows: Counter,
    pub snapshot_table_rows: Family<TableLabel, Gauge>,
    pub snapshot_table_rows_estimated: Family<TableLabel, Gauge>,
    pub snapshot_tables_skipped: Counter,
    /// 1 while a snapshot runs (alerts tell a stalled snapshot from none).
    pub snapshot_running: Gauge,
    /// Source side: reconnect attempts, and 1 while a binlog dump is open (0 while the
    /// publisher is reconnecting).
    pub source_reconnects: Counter,
    pub source_connected: Gauge,
    /// Checkpoint writes that failed and will be retried (the stream goes on meanwhile).
    pub checkpoint_store_failures: Counter,
    /// 1 while checkpoints cannot be stored (set with the store problem), 0 otherwise.
    pub checkpoint_store_failing: Gauge,
    /// Kinesis sink: request tasks alive, ack-queue entries, aggregated rows re-sent after a
    /// reshard (see `sink::kinesis`).
    pub sink_tasks: Gauge,
    pub ack_queue_len: Gauge,
    pub reshard_resent: Counter,
    pub checkpoint_position: Gauge,
    pub checkpoint_file_number: Gauge,
    checkpoint_age: Gauge,
    lag: Gauge,
    /// Unix time the last checkpoint was stored; 0 before the first.
    checkpoint_saved_at: AtomicI64,
    /// Timestamp of the newest event whose rows are all acknowledged; 0 before the first.
    acked_event_ts: AtomicI64,
    ready: AtomicBool,
    /// Why the publisher is not ready (shown by /readyz).
    problem: Mutex<Option<String>>,
    /// Set while checkpoints cannot be stored; kept apart from `problem`, which the source
    /// and the sink set and clear.
    store_problem: Mutex<Option<String>>,
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            rows_read: Counter::default(),
            records_published: Counter::default(),
            bytes_published: Counter::default(),
            batches: Counter::default(),
            retries: Family::default(),
            oversize: Family::default(),
            partial_json_unapplied: Counter::default(),
            in_flight_records: Gauge::default(),
            snapshot_rows: Counter::default(),
            snapshot_table_rows: Family::default(),
            snapshot_table_rows_estimated: Family::default(),
            snapshot_tables_skipped: Counter::default(),
            snapshot_running: Gauge::default(),
            source_reconnects: Counter::default(),
            source_connected: Gauge::default(),
            checkpoint_store_failures: Counter::default(),
            checkpoint_store_failing: Gauge::default(),
            sink_tasks: Gauge::default(),
            ack_queue_len: Gauge::default(),
            reshard_resent: Counter::default(),
            checkpoint_position: Gauge::default(),
            checkpoint_file_number: Gauge::default(),
            checkpoint_age: Gauge::default(),
            lag: Gauge::default(),
            checkpoint_saved_at: AtomicI64::new(0),
            acked_event_ts: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            problem: Mutex::new(None),
            store_problem: Mutex::new(None),
            registry: Registry::with_prefix("binlogstream"),
        };
        let r = &mut m.registry;
        r.register(
            "rows_read",
            "Row changes read from the binlog",
            m.rows_read.clone(),
        );
        r.register(
            "records_published",
            "Records acknowledged by the sink",
            m.records_published.clone(),
        );
        r.register(
            "bytes_published",
            "Record bytes acknowledged by the sink",
            m.bytes_published.clone(),
        );
        r.register(
            "batches",
            "Requests sent to the sink (PutRecords calls)",
            m.batches.clone(),
        );
        r.register("retries", "Retried sends, by reason", m.retries.clone());
        r.register(
            "oversize_records",
            "Records over the sink's size limit, by action",
            m.oversize.clone(),
        );
        r.register(
            "partial_json_unapplied",
            "Partial JSON updates (binlog_row_value_options=PARTIAL_JSON) whose full document could not be rebuilt; the stream stops at the first",
            m.partial_json_unapplied.clone(),
        );
        r.register(
            "in_flight_records",
            "Records sent or buffered but not yet acknowledged",
            m.in_flight_records.clone(),
        );
        r.register(
            "snapshot_rows",
            "Existing rows read by a snapshot and handed to the sink",
            m.snapshot_rows.clone(),
        );
        r.register(
            "snapshot_table_rows",
            "Rows of a table handed on by the running snapshot",
            m.snapshot_table_rows.clone(),
        );
        r.register(
            "snapshot_table_rows_estimated",
            "Rows of a table by the server's statistics (information_schema.TABLES.TABLE_ROWS), when its snapshot started",
            m.snapshot_table_rows_estimated.clone(),
        );
        r.register(
            "snapshot_tables_skipped",
            "Tables a snapshot skipped because they were dropped before or while being read",
            m.snapshot_tables_skipped.clone(),
        );
        r.register(
            "snapshot_running",
            "1 while a snapshot runs, 0 otherwise",
            m.snapshot_running.clone(),
        );
        r.register(
            "source_reconnects",
            "Attempts to reconnect to the source after the connection was lost",
            m.source_reconnects.clone(),
        );
        r.register(
            "source_connected",
            "1 while a binlog dump from the source is open, 0 while reconnecting",
            m.source_connected.clone(),
        );
        r.register(
            "checkpoint_store_failures",
            "Checkpoint writes that failed and are being retried (see checkpoint_age_seconds)",
            m.checkpoint_store_failures.clone(),
        );
        r.register(
            "checkpoint_store_failing",
            "1 while checkpoint writes fail and are retried (streaming goes on; /readyz stays ready and names the problem), 0 otherwise",
            m.checkpoint_store_failing.clone(),
        );
        r.register(
            "sink_tasks",
            "Sink request tasks alive (at most one per lane)",
            m.sink_tasks.clone(),
        );
        r.register(
            "ack_queue_len",
            "Rows and transaction boundaries waiting for acknowledgement",
            m.ack_queue_len.clone(),
        );
        r.register(
            "reshard_resent_records",
            "Aggregated rows re-sent because their aggregate landed on a shard whose hash range does not hold their key (after a reshard)",
            m.reshard_resent.clone(),
        );
        r.register(
            "checkpoint_position",
            "Binlog offset of the stored checkpoint",
            m.checkpoint_position.clone(),
        );
        r.register(
            "checkpoint_file_number",
            "Numeric suffix of the stored checkpoint's binlog file",
            m.checkpoint_file_number.clone(),
        );
        r.register(
            "checkpoint_age_seconds",
            "Seconds since the checkpoint was last stored",
            m.checkpoint_age.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "Now minus the timestamp of the newest acknowledged event (0 when idle and caught up)",
            m.lag.clone(),
        );
        for reason in RETRY_REASONS {
            let _ = m.retries.get_or_create(&Reason {
                reason: (*reason).into(),
            });
        }
        m
    }

    pub fn checkpoint_saved(&self, file: &str, pos: u64) {
        self.checkpoint_position.set(pos as i64);
        let n = file
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        self.checkpoint_file_number.set(n);
        self.checkpoint_saved_at
            .store(now_unix(), Ordering::Relaxed);
    }

    pub fn acknowledged_event(&self, ts: u32) {
        if ts > 0 {
            self.acked_event_ts
                .fetch_max(i64::from(ts), Ordering::Relaxed);
        }
    }

    pub fn lag_seconds(&self) -> Option<i64> {
        let ts = self.acked_event_ts.load(Ordering::Relaxed);
        (ts > 0).then(|| (now_unix() - ts).max(0))
    }

    pub fn set_ready(&self, ready: bool, problem: Option<String>) {
        self.ready.store(ready, Ordering::Relaxed);
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
    }

    /// Why checkpoints cannot be stored now (`None` once they can again).
    pub fn set_store_problem(&self, problem: Option<String>) {
        self.checkpoint_store_failing
            .set(i64::from(problem.is_some()));
        if let Ok(mut p) = self.store_problem.lock() {
            *p = problem;
        }
    }

    /// What /readyz answers: not ready only for the source and the sink. A failing checkpoint
    /// store leaves the stream running, so the pod stays ready and the body names the problem
    /// (a NotReady pod would read as "starting" to the operator).
    pub fn readiness(&self) -> (bool, String) {
        if !self.ready.load(Ordering::Relaxed) {
            return (false, self.problem().unwrap_or_else(|| "starting".into()));
        }
        match self.store_problem.lock().ok().and_then(|p| p.clone()) {
            Some(store) => (true, store),
            None => (true, String::new()),
        }
    }

    /// `None` when ready and storing checkpoints; otherwise why not (the publisher's report in
    /// the status).
    pub fn problem(&self) -> Option<String> {
        if self.ready.load(Ordering::Relaxed) {
            self.store_problem.lock().ok().and_then(|p| p.clone())
        } else {
            Some(
                self.problem
                    .lock()
                    .ok()
                    .and_then(|p| p.clone())
                    .unwrap_or_else(|| "starting".into()),
            )
        }
    }

    pub fn render(&self) -> String {
        if let Some(lag) = self.lag_seconds() {
            self.lag.set(lag);
        }
        let saved = self.checkpoint_saved_at.load(Ordering::Relaxed);
        if saved > 0 {
            self.checkpoint_age.set(now_unix() - saved);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.readiness() {
        (true, note) if note.is_empty() => (StatusCode::OK, "ready\n".to_string()),
        (true, note) => (StatusCode::OK, format!("ready; {note}\n")),
        (false, why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::{extract::State, http::StatusCode, response::IntoResponse};

    use super::{readyz, Metrics, RETRY_REASONS};

    #[test]
    fn every_retry_reason_and_the_snapshot_flag_exist_from_the_start() {
        let out = Metrics::new().render();
        for reason in RETRY_REASONS {
            let line = format!("binlogstream_retries_total{{reason=\"{reason}\"}} 0");
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        assert!(
            out.lines().any(|l| l == "binlogstream_snapshot_running 0"),
            "{out}"
        );
    }

    #[test]
    fn unapplied_partial_json_updates_are_exported() {
        let m = Metrics::new();
        assert!(m
            .render()
            .contains("binlogstream_partial_json_unapplied_total 0"));
        m.partial_json_unapplied.inc();
        assert!(m
            .render()
            .contains("binlogstream_partial_json_unapplied_total 1"));
    }

    async fn readyz_of(m: &Arc<Metrics>) -> (StatusCode, String) {
        let r = readyz(State(m.clone())).await.into_response();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 4096)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A failing checkpoint store (an API server restarting, webhooks answering 500) does not
    /// stop the stream: the pod stays ready (a NotReady pod reads as "starting" to the
    /// operator and to people), and the body and a gauge say the store is failing.
    #[tokio::test]
    async fn a_failing_checkpoint_store_leaves_readyz_ready_and_says_so() {
        let m = Arc::new(Metrics::new());
        m.set_ready(true, None);
        assert_eq!(readyz_of(&m).await, (StatusCode::OK, "ready\n".into()));
        m.set_store_problem(Some("checkpoint store failing: HTTP 500".into()));
        let (status, body) = readyz_of(&m).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("checkpoint store failing: HTTP 500"),
            "{body}"
        );
        assert!(m
            .render()
            .contains("binlogstream_checkpoint_store_failing 1"));
        m.set_store_problem(None);
        assert_eq!(readyz_of(&m).await, (StatusCode::OK, "ready\n".into()));
        assert!(m
            .render()
            .contains("binlogstream_checkpoint_store_failing 0"));
        // Not ready for the source or the sink: 503, whatever the store does.
        m.set_ready(false, Some("source unreachable".into()));
        let (status, body) = readyz_of(&m).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("source unreachable"), "{body}");
    }
}
