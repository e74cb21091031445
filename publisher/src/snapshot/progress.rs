//! What a running snapshot reports: a shared view for the status writer and metrics, log
//! lines per table and at intervals, and a one-line progress display on a terminal.

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use tracing::info;

use crate::metrics::{now_unix, Metrics, TableLabel};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TableProgress {
    pub table: String,
    /// `pending`, `running`, `done` or `skipped` (dropped before or while being read).
    pub state: String,
    /// `PRIMARY`, a unique key's name, or `one pass` (no usable key: not resumable inside
    /// the table).
    pub key: String,
    pub rows_done: u64,
    /// information_schema.TABLES.TABLE_ROWS when the table started (an estimate).
    pub rows_estimated: u64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The snapshot's state as the Kubernetes status should show it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    /// `Running` or `Done` (no snapshot: the view stays default, `state` empty).
    pub state: String,
    pub request_id: String,
    /// `consistent-snapshot` or `watermark`.
    pub method: String,
    pub rows: u64,
    pub rows_per_second: f64,
    /// Seconds left by the estimated row counts, while running.
    pub eta_seconds: Option<u64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub tables: Vec<TableProgress>,
}

/// Shared, cheap to read: the status writer clones the view when it reports.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<ProgressView>>);

impl Progress {
    pub fn view(&self) -> ProgressView {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut ProgressView) -> R) -> Option<R> {
        self.0.lock().ok().map(|mut v| f(&mut v))
    }
}

/// Updates the view, the metrics and the log as chunks go out.
pub struct Reporter {
    pub progress: Progress,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Rows at `started` (a resumed snapshot counts from where it was).
    rows_at_start: u64,
    last_log: Instant,
    last_line: Instant,
    terminal: bool,
    table_started: Option<(Instant, u64)>,
}

const LOG_EVERY: Duration = Duration::from_secs(10);
const LINE_EVERY: Duration = Duration::from_millis(250);

impl Reporter {
    pub fn new(metrics: Arc<Metrics>, progress: Progress) -> Reporter {
        Reporter {
            progress,
            metrics,
            started: Instant::now(),
            rows_at_start: 0,
            last_log: Instant::now(),
            last_line: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            table_started: None,
        }
    }

    pub fn begin(&mut self, request_id: &str, method: &str, tables: &[String], rows_before: u64) {
        self.started = Instant::now();
        self.rows_at_start = rows_before;
        self.metrics.snapshot_running.set(1);
        self.progress.with(|v| {
            *v = ProgressView {
                state: "Running".into(),
                request_id: request_id.to_string(),
                method: method.to_string(),
                rows: rows_before,
                started_at: Some(now_unix()),
                tables: tables
                    .iter()
                    .map(|t| TableProgress {
                        table: t.clone(),
                        state: "pending".into(),
                        ..TableProgress::default()
                    })
                    .collect(),
                ..ProgressView::default()
            }
        });
        info!(
            request_id,
            method,
            tables = tables.len(),
            "snapshot started"
        );
    }

    pub fn table_started(&mut self, table: &str, key: &str, estimated: u64, rows_done: u64) {
        self.table_started = Some((Instant::now(), rows_done));
        self.metrics
            .snapshot_table_rows_estimated
            .get_or_create(&TableLabel {
                table: table.to_string(),
            })
            .set(estimated as i64);
        self.progress.with(|v| {
            if let Some(t) = v.tables.iter_mut().find(|t| t.table == table) {
                t.state = "running".into();
                t.key = key.to_string();
                t.rows_estimated = estimated;
                t.rows_done = rows_done;
                t.started_at = Some(now_unix());
            }
        });
        if key == "one pass" {
            tracing::warn!(
                table,
                estimated_rows = estimated,
                "snapshot: table has no primary key and no unique NOT NULL key; reading it in one \
                 pass (the binlog waits meanwhile, and a restart reads it again from its start)"
            );
        } else {
            info!(
                table,
                key,
                estimated_rows = estimated,
                resumed_at_rows = rows_done,
                "snapshot: table started"
            );
        }
    }

    pub fn rows(&mut self, table: &str, n: u64, table_rows: u64) {
        self.metrics.snapshot_rows.inc_by(n);
        self.metrics
            .snapshot_table_rows
            .get_or_create(&TableLabel {
                table: table.to_string(),
            })
            .set(table_rows as i64);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let (rows, rate, eta) = self
            .progress
            .with(|v| {
                v.rows += n;
                v.rows_per_second = (v.rows - self.rows_at_start) as f64 / elapsed;
                if let Some(t) = v.tables.iter_mut().find(|t| t.table == table) {
                    t.rows_done = table_rows;
                }
                let left: u64 = v
                    .tables
                    .iter()
                    .filter(|t| t.state == "pending" || t.state == "running")
                    .map(|t| t.rows_estimated.saturating_sub(t.rows_done))
                    .sum();
                v.eta_seconds =
                    (v.rows_per_second > 0.0).then(|| (left as f64 / v.rows_per_second) as u64);
                (v.rows, v.rows_per_second, v.eta_seconds)
            })
            .unwrap_or_default();
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            info!(
                table,
                table_rows,
                rows,
                rows_per_sec = rate as u64,
                eta_secs = eta,
                "snapshot progress"
            );
        }
        if self.terminal && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let eta = eta
                .map(|s| format!("{}m{:02}s", s / 60, s % 60))
                .unwrap_or_else(|| "?".into());
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[Ksnapshot {table}: {rows} rows, {:.0} rows/s, ETA {eta}",
                rate
            );
            let _ = err.flush();
        }
    }

    pub fn table_finished(&mut self, table: &str, rows: u64, skipped: bool) {
        let secs = self
            .table_started
            .take()
            .map(|(t, _)| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        self.progress.with(|v| {
            if let Some(t) = v.tables.iter_mut().find(|t| t.table == table) {
                t.state = if skipped { "skipped" } else { "done" }.into();
                t.finished_at = Some(now_unix());
                t.rows_done = rows;
            }
        });
        if skipped {
            self.metrics.snapshot_tables_skipped.inc();
            tracing::warn!(table, "snapshot: table no longer exists; skipped");
        } else {
            self.clear_line();
            info!(
                table,
                rows,
                secs = format!("{secs:.1}"),
                rows_per_sec = (rows as f64 / secs.max(1e-3)) as u64,
                "snapshot: table finished"
            );
        }
    }

    pub fn finished(&mut self, request_id: &str) {
        self.clear_line();
        self.metrics.snapshot_running.set(0);
        let rows = self
            .progress
            .with(|v| {
                v.state = "Done".into();
                v.finished_at = Some(now_unix());
                v.eta_seconds = None;
                v.rows
            })
            .unwrap_or(0);
        info!(
            request_id,
            rows,
            secs = format!("{:.1}", self.started.elapsed().as_secs_f64()),
            "snapshot finished"
        );
    }

    fn clear_line(&self) {
        if self.terminal {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}
