//! Owns the read → sink → checkpoint loop, its timers, reconnects and shutdown.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::time::sleep_until;
use tracing::{debug, info, warn};

use crate::{
    checkpoint::{CheckpointError, CheckpointStore},
    metrics::Metrics,
    position::Checkpoint,
    sink::{Sink, SinkError},
    snapshot::{Driver as SnapshotDriver, SnapshotError},
    source::{Item, Reader, SourceError},
};

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Longest a written record waits before the sink is flushed.
    pub linger: Duration,
    /// Shortest time between two checkpoint writes.
    pub checkpoint_interval: Duration,
    /// Ceiling of the exponential backoff between reconnect attempts.
    pub max_backoff: Duration,
    /// Longest a stop (a signal or an error) waits for the sink and the final checkpoint,
    /// so that it ends inside the pod's grace period.
    pub drain_timeout: Duration,
    /// Store the reader's start as the checkpoint before anything is delivered (set when no
    /// checkpoint existed), so a restart after an early failure does not resolve the start
    /// (`latest`) again and skip what happened in between.
    pub store_start: bool,
    pub metrics: Arc<Metrics>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            linger: Duration::from_millis(5),
            checkpoint_interval: Duration::from_millis(1000),
            max_backoff: Duration::from_secs(30),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            store_start: false,
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// Below Kubernetes' default grace period (30 s), leaving room for the final status report.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Asked to stop, but the sink did not deliver everything before the drain deadline.
    /// Nothing is lost: the stored checkpoint covers only what was acknowledged.
    #[error(
        "stopped at the drain deadline ({timeout_secs} s) with {undelivered} records not acknowledged; \
         the checkpoint covers what was ({checkpoint}) and a restart sends the rest"
    )]
    DrainIncomplete {
        timeout_secs: u64,
        undelivered: i64,
        checkpoint: String,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub rows: u64,
    pub transactions: u64,
    /// The last checkpoint stored (everything before it was delivered).
    pub checkpoint: Option<Checkpoint>,
}

/// `cp` records a snapshot done that the checkpoint stored before still had running.
fn snapshot_finished(saved: Option<&Checkpoint>, cp: &Checkpoint) -> bool {
    let done = |c: &Checkpoint| c.snapshot.as_ref().is_some_and(|s| !s.running());
    done(cp) && !saved.is_some_and(done)
}

struct Saver<'a, C: CheckpointStore> {
    store: &'a mut C,
    metrics: &'a Metrics,
    interval: Duration,
    last_save: Option<Instant>,
    unsaved: Option<Checkpoint>,
    saved: Option<Checkpoint>,
    /// The last transient store error, while the store keeps failing.
    failing: Option<String>,
}

impl<'a, C: CheckpointStore> Saver<'a, C> {
    fn new(store: &'a mut C, metrics: &'a Metrics, interval: Duration) -> Self {
        Saver {
            store,
            metrics,
            interval,
            last_save: None,
            unsaved: None,
            saved: None,
            failing: None,
        }
    }

    /// Takes the newest checkpoint and stores it when due. A transient store error keeps it
    /// (newer ones replace it) for the next attempt an interval later: the stream goes on,
    /// only a restart would repeat more rows. A definite error stops the pipeline.
    async fn offer(&mut self, cp: Option<Checkpoint>, force: bool) -> Result<(), CheckpointError> {
        let mut force = force;
        if let Some(cp) = cp {
            // The checkpoint that finishes a snapshot is stored at once: the status says it
            // is done (and a restart does not read it again) without waiting an interval.
            force |= snapshot_finished(self.saved.as_ref(), &cp);
            self.unsaved = Some(cp);
        }
        let due = force || self.last_save.is_none_or(|t| t.elapsed() >= self.interval);
        if !due {
            return Ok(());
        }
        let Some(cp) = self.unsaved.take() else {
            return Ok(());
        };
        self.last_save = Some(Instant::now());
        match self.store.save(&cp).await {
            Ok(()) => {
                // A queueing store reports to the metrics when the write really happened.
                if !self.store.queues() {
                    self.metrics.checkpoint_saved(&cp.file, cp.pos);
                }
                if self.failing.take().is_some() {
                    info!(file = %cp.file, pos = cp.pos, "checkpoint store recovered");
                    self.metrics.set_store_problem(None);
                }
                self.saved = Some(cp);
                Ok(())
            }
            Err(e) if e.is_transient() => {
                self.metrics.checkpoint_store_failures.inc();
                if self.failing.is_none() {
                    warn!(error = %e, retry_in_ms = self.interval.as_millis() as u64,
                        "could not store the checkpoint; streaming on and retrying");
                }
                self.metrics
                    .set_store_problem(Some(format!("checkpoint store failing: {e}")));
                self.failing = Some(e.to_string());
                self.unsaved = Some(cp);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The final checkpoint: stored, retried on transient errors, until `deadline`.
    async fn finish(
        &mut self,
        cp: Option<Checkpoint>,
        deadline: Instant,
    ) -> Result<(), CheckpointError> {
        const RETRY: Duration = Duration::from_millis(200);
        self.offer(cp, true).await?;
        while self.unsaved.is_some() {
            if Instant::now() + RETRY >= deadline {
                return Err(CheckpointError::Other(format!(
                    "the final checkpoint was not stored before the drain deadline: {}",
                    self.failing.as_deref().unwrap_or("no attempt finished")
                )));
            }
            tokio::time::sleep(RETRY).await;
            self.offer(None, true).await?;
        }
        self.store.finish(deadline).await
    }
}

enum Reconnected {
    Yes,
    ShutDown,
    /// An error a reconnect cannot cure (credentials, purged binlog, bad start).
    Failed(SourceError),
}

/// First wait before a reconnect attempt; doubled after every failure up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The wait before attempt `attempt` (from 1): exponential, capped, with ±20 % jitter so
/// publishers that lost the same server do not all come back in the same instant.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    use rand::Rng;
    let exp = FIRST_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(cap).mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// Reconnects after a transient source error, for as long as the source may come back:
/// attempts with backoff until one succeeds, an error that needs a person, or shutdown.
/// Readiness is false ("source: ...") and `binlogstream_source_connected` 0 meanwhile.
async fn reconnect(
    reader: &mut Reader,
    metrics: &Metrics,
    max_backoff: Duration,
    lost: SourceError,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Reconnected {
    let since = Instant::now();
    warn!(error = %lost, "source connection lost; reconnecting");
    metrics.source_connected.set(0);
    metrics.set_ready(false, Some(format!("source: {lost}")));
    let mut attempt = 0u32;
    let mut wait = backoff(1, max_backoff);
    loop {
        attempt += 1;
        tokio::select! {
            _ = shutdown.as_mut() => return Reconnected::ShutDown,
            _ = tokio::time::sleep(wait) => {}
        }
        metrics.source_reconnects.inc();
        let outcome = tokio::select! {
            _ = shutdown.as_mut() => return Reconnected::ShutDown,
            r = reader.reconnect() => r,
        };
        match outcome {
            Ok(()) => {
                info!(
                    attempts = attempt,
                    down_ms = since.elapsed().as_millis() as u64,
                    "source connection restored"
                );
                metrics.source_connected.set(1);
                metrics.set_ready(true, None);
                return Reconnected::Yes;
            }
            Err(e) if e.is_transient() => {
                wait = backoff(attempt + 1, max_backoff);
                debug!(attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "source still unreachable");
                metrics.set_ready(
                    false,
                    Some(format!("source: {e} (reconnect attempt {attempt})")),
                );
            }
            Err(e) => {
                warn!(attempts = attempt, error = %e, "reconnecting to the source failed for good");
                return Reconnected::Failed(e);
            }
        }
    }
}

/// Runs until `shutdown` resolves, the stream ends (`stop_at_end`) or a non-transient error.
/// On every exit path it flushes the sink and stores the final checkpoint first, so what was
/// delivered is never read again and nothing undelivered is marked as done.
pub async fn run<S: Sink, C: CheckpointStore>(
    reader: Reader,
    sink: &mut S,
    store: &mut C,
    opts: &PipelineOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, PipelineError> {
    run_with_snapshot(reader, None, sink, store, opts, shutdown).await
}

/// Hands `items` to the sink in order (used after a snapshot step).
async fn deliver<S: Sink>(
    items: &mut Vec<Item>,
    sink: &mut S,
    summary: &mut Summary,
    metrics: &Metrics,
) -> Result<(), SinkError> {
    for item in items.drain(..) {
        match item {
            Item::Row(row) => {
                summary.rows += 1;
                metrics.rows_read.inc();
                sink.write_row(row).await?
            }
            Item::Commit(cp) | Item::Idle(cp) => sink.boundary(cp).await?,
        }
    }
    Ok(())
}

/// [`run`], with a snapshot interleaved: whenever the snapshot has a chunk due (or the next
/// one to read), it goes before the next binlog event; every boundary the reader hands on
/// carries the snapshot's progress.
pub async fn run_with_snapshot<S: Sink, C: CheckpointStore>(
    mut reader: Reader,
    mut snapshot: Option<SnapshotDriver>,
    sink: &mut S,
    store: &mut C,
    opts: &PipelineOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, PipelineError> {
    // When a stop was requested (the drain deadline runs from then), as opposed to the end
    // of the stream.
    let requested_at = std::sync::OnceLock::<Instant>::new();
    let shutdown = async {
        shutdown.await;
        let _ = requested_at.set(Instant::now());
    };
    let budget = opts.drain_timeout;
    // Part of the budget stays for the final checkpoint write.
    let reserve = (budget / 4).min(Duration::from_secs(5));
    tokio::pin!(shutdown);
    let metrics = opts.metrics.clone();
    metrics.set_ready(true, None);
    // Until something new is delivered, the lag runs from where the stored checkpoint ended, so
    // a publisher that restarts into an outage still reports how far behind it is.
    metrics.acknowledged_event(reader.resume_point().event_ts);
    let mut saver = Saver::new(store, &metrics, opts.checkpoint_interval);
    // A start by GTID learns its file from the first event; the others know it now.
    let mut start_unsaved = opts.store_start;
    let mut summary = Summary::default();
    let mut items = Vec::with_capacity(1024);
    let mut flush_at: Option<Instant> = None;
    metrics.source_connected.set(1);

    let outcome: Result<(), PipelineError> = loop {
        // Only while no row went to the sink: the reader's position is then no further than
        // what is delivered.
        start_unsaved &= summary.rows == 0;
        if start_unsaved {
            let mut start = reader.resume_point();
            if !start.file.is_empty() {
                start_unsaved = false;
                // A snapshot still to run must be in the first checkpoint too, or a restart
                // after it would skip the snapshot.
                if let Some(snap) = &snapshot {
                    snap.stamp(&mut start);
                }
                info!(file = %start.file, pos = start.pos, "storing the start position as the first checkpoint");
                if let Err(e) = saver.offer(Some(start), true).await {
                    break Err(e.into());
                }
            }
        }
        if let Some(snap) = snapshot.as_mut().filter(|s| s.ready(&reader)) {
            let stepped = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                r = snap.step(&reader, sink, &mut items) => r,
            };
            let streamed = snap.take_streamed();
            summary.rows += streamed;
            metrics.rows_read.inc_by(streamed);
            let r = match stepped {
                Ok(cp) => saver.offer(cp, false).await.map_err(PipelineError::from),
                Err(e) => Err(PipelineError::Snapshot(e)),
            };
            if let Err(e) = r {
                break Err(e);
            }
            if let Err(e) = deliver(&mut items, sink, &mut summary, &metrics).await {
                break Err(e.into());
            }
            // Chunks can follow each other without a binlog event between: flush on time.
            if flush_at.is_none_or(|t| t <= Instant::now()) {
                match sink.flush().await {
                    Ok(cp) => {
                        if let Err(e) = saver.offer(cp, false).await {
                            break Err(e.into());
                        }
                    }
                    Err(e) => break Err(e.into()),
                }
                flush_at = Some(Instant::now() + opts.linger);
            }
            continue;
        }
        let next = match flush_at {
            Some(at) => tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                _ = sleep_until(at.into()) => {
                    match sink.flush().await {
                        Ok(cp) => {
                            if let Err(e) = saver.offer(cp, false).await {
                                break Err(e.into());
                            }
                        }
                        Err(e) => break Err(e.into()),
                    }
                    // Keep polling while the sink has records out, so acknowledgements turn
                    // into checkpoints even when the source is quiet, and rows held back
                    // behind a request in flight go out soon after it returns (every 20 ms
                    // added up to that much to their latency).
                    flush_at = (sink.busy() || saver.unsaved.is_some())
                        .then(|| Instant::now() + opts.linger.max(Duration::from_millis(5)));
                    continue;
                }
                r = reader.next_event() => r,
            },
            None => tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                r = reader.next_event() => r,
            },
        };
        let result = match next {
            Ok(None) => break Ok(()),
            Ok(Some(event)) => reader.handle_guarded(event, &mut items).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_transient() => {
                // Partial output of the failed event: the resume point does not count it.
                items.clear();
                match reconnect(&mut reader, &metrics, opts.max_backoff, e, &mut shutdown).await {
                    Reconnected::Yes => continue,
                    Reconnected::ShutDown => break Ok(()),
                    Reconnected::Failed(e) => break Err(e.into()),
                }
            }
            Err(e) => {
                if matches!(&e, SourceError::Decode(d) if d.is_unapplied_partial_json()) {
                    metrics.partial_json_unapplied.inc();
                }
                break Err(e.into());
            }
        }
        if let Some(snap) = snapshot.as_mut() {
            snap.observe(&mut items);
        }
        let mut failed = None;
        let mut stopped = false;
        for item in items.drain(..) {
            let r = match item {
                Item::Row(row) => {
                    summary.rows += 1;
                    metrics.rows_read.inc();
                    // A full lane waits for the sink (back-pressure). A stop lets the write
                    // finish within the drain deadline and sends nothing after it; a write
                    // given up is never acknowledged, so no checkpoint passes its row.
                    let write = sink.write_row(row);
                    tokio::pin!(write);
                    tokio::select! {
                        biased;
                        r = &mut write => r,
                        _ = &mut shutdown => {
                            stopped = true;
                            match tokio::time::timeout(budget - reserve, &mut write).await {
                                Ok(r) => r,
                                Err(_) => break,
                            }
                        }
                    }
                }
                Item::Commit(cp) => {
                    summary.transactions += 1;
                    sink.boundary(cp).await
                }
                Item::Idle(cp) => sink.boundary(cp).await,
            };
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
            if stopped {
                break;
            }
        }
        if let Some(e) = failed {
            break Err(e.into());
        }
        if stopped {
            break Ok(());
        }
        if flush_at.is_none() {
            flush_at = Some(Instant::now() + opts.linger);
        }
    };

    // Deliver what was handed to the sink and record how far that got, whatever the outcome.
    // A stop that was asked for, or forced by an error, is bounded by the drain deadline; the
    // end of the stream (--stop-at-end) waits for delivery as the stream itself does.
    metrics.set_ready(false, Some("stopping".into()));
    let deadline = match requested_at.get() {
        Some(at) => {
            info!(
                drain_timeout_s = budget.as_secs(),
                "stop requested: draining the sink"
            );
            Some(*at + budget)
        }
        None => outcome.is_err().then(|| Instant::now() + budget),
    };
    let (drained, timed_out) = match deadline {
        Some(d) => match tokio::time::timeout_at((d - reserve).into(), sink.drain()).await {
            Ok(r) => (r, false),
            Err(_) => (Ok(None), true),
        },
        None => (sink.drain().await, false),
    };
    let (mut final_cp, drain_error) = match drained {
        Ok(cp) => (cp, None),
        Err(e) => {
            warn!(error = %e, "final delivery failed; the checkpoint stays where the last acknowledged write ended");
            (None, Some(e))
        }
    };
    // Whatever the drain did (finished, failed, abandoned), what is acknowledged by now is
    // stored: after a failure it would otherwise be sent again.
    if let Some(cp) = sink.acknowledged() {
        final_cp = Some(cp);
    }
    // Records given up at the deadline, or a write abandoned by the stop, stay unacknowledged.
    let undelivered = metrics.in_flight_records.get().max(i64::from(sink.busy()));
    let incomplete = timed_out || (drain_error.is_none() && sink.busy());
    let stored = saver
        .finish(
            final_cp,
            deadline.unwrap_or_else(|| Instant::now() + budget),
        )
        .await;
    summary.checkpoint = saver.saved.clone();
    let at = summary
        .checkpoint
        .as_ref()
        .map(|cp| format!("{}:{}", cp.file, cp.pos))
        .unwrap_or_else(|| "none".into());
    match &stored {
        Ok(()) => info!(checkpoint = %at, rows = summary.rows, "stopped"),
        Err(e) => {
            warn!(error = %e, checkpoint = %at, "stopped; the final checkpoint was not stored")
        }
    }
    if timed_out {
        warn!(
            drain_timeout_s = budget.as_secs(),
            undelivered,
            checkpoint = %at,
            "drain deadline passed: unacknowledged records are not marked done; a restart sends them"
        );
    }
    match (outcome, stored, drain_error) {
        (Err(e), _, _) => Err(e),
        (Ok(()), Err(e), _) => Err(e.into()),
        (Ok(()), Ok(()), Some(e)) => Err(e.into()),
        (Ok(()), Ok(()), None) if incomplete => Err(PipelineError::DrainIncomplete {
            timeout_secs: budget.as_secs(),
            undelivered,
            checkpoint: at,
        }),
        (Ok(()), Ok(()), None) => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose writes fail like a full disk until `fail` runs out.
    struct FullDisk {
        fail: u32,
        stored: Vec<Checkpoint>,
    }

    impl CheckpointStore for FullDisk {
        async fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
            Ok(None)
        }

        async fn save(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(CheckpointError::Io {
                    path: "cp.json".into(),
                    source: std::io::ErrorKind::StorageFull.into(),
                });
            }
            self.stored.push(cp.clone());
            Ok(())
        }
    }

    fn cp(pos: u64) -> Checkpoint {
        Checkpoint {
            server: None,
            file: "binlog.000001".into(),
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

    #[tokio::test]
    async fn a_full_disk_is_retried_with_the_newest_checkpoint() {
        let metrics = Metrics::new();
        metrics.set_ready(true, None);
        let mut store = FullDisk {
            fail: 2,
            stored: Vec::new(),
        };
        let mut saver = Saver::new(&mut store, &metrics, Duration::ZERO);
        saver.offer(Some(cp(10)), false).await.expect("goes on");
        saver.offer(Some(cp(20)), false).await.expect("goes on");
        assert_eq!(metrics.checkpoint_store_failures.get(), 2);
        assert!(metrics
            .problem()
            .is_some_and(|p| p.starts_with("checkpoint store failing")));
        assert_eq!(saver.saved, None);
        saver.offer(Some(cp(30)), false).await.expect("stored");
        assert_eq!(saver.saved, Some(cp(30)));
        assert_eq!(metrics.problem(), None, "/readyz recovers");
        assert_eq!(store.stored, vec![cp(30)], "only the newest is written");
    }

    #[tokio::test]
    async fn the_checkpoint_that_finishes_a_snapshot_is_stored_at_once() {
        let metrics = Metrics::new();
        let mut store = FullDisk {
            fail: 0,
            stored: Vec::new(),
        };
        let mut saver = Saver::new(&mut store, &metrics, Duration::from_secs(3600));
        let with = |pos: u64, pending: &[&str]| {
            let mut c = cp(pos);
            c.snapshot = Some(Box::new(crate::position::SnapshotState {
                request_id: "initial".into(),
                pending: pending.iter().map(|t| t.to_string()).collect(),
                last_key: None,
                table_rows: 0,
                tables_done: 0,
                completed: Vec::new(),
            }));
            c
        };
        saver
            .offer(Some(with(10, &["s.t"])), false)
            .await
            .expect("first");
        saver
            .offer(Some(with(20, &["s.t"])), false)
            .await
            .expect("not due");
        assert_eq!(saver.saved, Some(with(10, &["s.t"])), "an interval away");
        saver.offer(Some(with(30, &[])), false).await.expect("done");
        assert_eq!(saver.saved, Some(with(30, &[])), "stored without waiting");
        saver
            .offer(Some(with(40, &[])), false)
            .await
            .expect("later");
        assert_eq!(
            saver.saved,
            Some(with(30, &[])),
            "only the one that finishes it"
        );
    }

    #[tokio::test]
    async fn the_final_checkpoint_is_retried_until_the_deadline() {
        let metrics = Metrics::new();
        let mut store = FullDisk {
            fail: u32::MAX,
            stored: Vec::new(),
        };
        let mut saver = Saver::new(&mut store, &metrics, Duration::ZERO);
        let started = Instant::now();
        let e = saver
            .finish(Some(cp(10)), started + Duration::from_millis(700))
            .await
            .expect_err("never stored");
        assert!(started.elapsed() < Duration::from_millis(900));
        assert!(e.to_string().contains("drain deadline"), "{e}");
        assert!(metrics.checkpoint_store_failures.get() >= 3);
    }
}
