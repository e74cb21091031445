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
    pub metrics: Arc<Metrics>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            linger: Duration::from_millis(5),
            checkpoint_interval: Duration::from_millis(1000),
            max_backoff: Duration::from_secs(30),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
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

struct Saver<'a, C: CheckpointStore> {
    store: &'a mut C,
    metrics: &'a Metrics,
    interval: Duration,
    last_save: Option<Instant>,
    unsaved: Option<Checkpoint>,
    saved: Option<Checkpoint>,
}

impl<C: CheckpointStore> Saver<'_, C> {
    async fn offer(&mut self, cp: Option<Checkpoint>, force: bool) -> Result<(), CheckpointError> {
        if let Some(cp) = cp {
            self.unsaved = Some(cp);
        }
        let due = force || self.last_save.is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            if let Some(cp) = self.unsaved.take() {
                self.store.save(&cp).await?;
                self.metrics.checkpoint_saved(&cp.file, cp.pos);
                self.last_save = Some(Instant::now());
                self.saved = Some(cp);
            }
        }
        Ok(())
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
    tokio::pin!(shutdown);
    let metrics = opts.metrics.clone();
    metrics.set_ready(true, None);
    // Until something new is delivered, the lag runs from where the stored checkpoint ended, so
    // a publisher that restarts into an outage still reports how far behind it is.
    metrics.acknowledged_event(reader.resume_point().event_ts);
    let mut saver = Saver {
        store,
        metrics: &metrics,
        interval: opts.checkpoint_interval,
        last_save: None,
        unsaved: None,
        saved: None,
    };
    let mut summary = Summary::default();
    let mut items = Vec::with_capacity(1024);
    let mut flush_at: Option<Instant> = None;
    metrics.source_connected.set(1);

    let outcome: Result<(), PipelineError> = loop {
        if let Some(snap) = snapshot.as_mut().filter(|s| s.ready(&reader)) {
            let stepped = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                r = snap.step(&reader, sink, &mut items) => r,
            };
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
        for item in items.drain(..) {
            let r = match item {
                Item::Row(row) => {
                    summary.rows += 1;
                    metrics.rows_read.inc();
                    sink.write_row(row).await
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
        }
        if let Some(e) = failed {
            break Err(e.into());
        }
        if flush_at.is_none() {
            flush_at = Some(Instant::now() + opts.linger);
        }
    };

    // Deliver what was handed to the sink and record how far that got, whatever the outcome.
    metrics.set_ready(false, Some("stopping".into()));
    let flushed = sink.drain().await;
    let (final_cp, drain_error) = match flushed {
        Ok(cp) => (cp, None),
        Err(e) => {
            warn!(error = %e, "final delivery failed; the checkpoint stays where the last acknowledged write ended");
            (None, Some(e))
        }
    };
    saver.offer(final_cp, true).await?;
    summary.checkpoint = saver.saved.clone();
    if let Some(cp) = &summary.checkpoint {
        info!(file = %cp.file, pos = cp.pos, rows = summary.rows, "stopped");
    }
    match (outcome, drain_error) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(e.into()),
        (Ok(()), None) => Ok(summary),
    }
}
