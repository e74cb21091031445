//! Status conditions from what the publisher reports and what its pod is doing. Pure: the
//! controller gathers the inputs, this decides.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::requests;
use crate::crd::{BinlogStream, BinlogStreamStatus};

pub const READY: &str = "Ready";
pub const LAGGING: &str = "Lagging";
pub const DEGRADED: &str = "Degraded";
pub const BINLOG_AT_RISK: &str = "BinlogAtRisk";
pub const SNAPSHOTTING: &str = "Snapshotting";

/// What the operator sees of the publisher's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// No pod yet (just created, or being replaced).
    Missing,
    Pending {
        reason: String,
        message: String,
    },
    Running {
        ready: bool,
    },
    /// Restarting after failures (CrashLoopBackOff and the like).
    Failing {
        reason: String,
        message: String,
    },
}

/// Everything the conditions depend on.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub bls: &'a BinlogStream,
    /// `Err(message)` when the spec is invalid (names the field).
    pub spec: Result<(), String>,
    /// `Err` when the stream cannot go on: the API server refused a child object (admission,
    /// quota, RBAC), or a retained checkpoint cannot be read.
    pub apply: Result<(), Blocked>,
    pub pod: PodState,
    pub now: Timestamp,
}

/// Why the children were not (all) applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub reason: String,
    pub message: String,
}

impl From<String> for Blocked {
    /// A refusal by the API server.
    fn from(message: String) -> Blocked {
        Blocked {
            reason: "ApplyFailed".into(),
            message,
        }
    }
}

impl From<&str> for Blocked {
    fn from(message: &str) -> Blocked {
        Blocked::from(message.to_string())
    }
}

struct Want {
    type_: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

fn want(
    type_: &'static str,
    status: &'static str,
    reason: &str,
    message: impl Into<String>,
) -> Want {
    Want {
        type_,
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// A binlog file name split into its base name and numeric suffix (`mysql-bin.000042`).
/// The server numbers the files of one base name in the order it writes them, so within one
/// base name the suffix is the server's own order.
fn split_binlog_name(name: &str) -> Option<(&str, u64)> {
    let (base, n) = name.rsplit_once('.')?;
    Some((base, n.parse().ok()?))
}

fn at_risk(status: &BinlogStreamStatus) -> Want {
    let (Some(cp), Some(binlogs)) = (&status.checkpoint, &status.source_binlogs) else {
        return want(
            BINLOG_AT_RISK,
            "Unknown",
            "NoCheckpointYet",
            "the publisher has not reported a checkpoint and the source's binlogs yet",
        );
    };
    // The file being written cannot be purged, whatever else the server keeps.
    if cp.file == binlogs.newest {
        return want(
            BINLOG_AT_RISK,
            "False",
            "CheckpointInActiveBinlog",
            format!(
                "the checkpoint is in {}, the binlog the source is writing, which cannot be purged",
                cp.file
            ),
        );
    }
    let parsed = (
        split_binlog_name(&cp.file),
        split_binlog_name(&binlogs.oldest),
        split_binlog_name(&binlogs.newest),
    );
    let (Some((base, at)), Some((oldest_base, oldest)), Some((newest_base, newest))) = parsed
    else {
        return want(
            BINLOG_AT_RISK,
            "Unknown",
            "UnknownBinlogNames",
            format!(
                "cannot order {} among the source's binlogs {}..{}",
                cp.file, binlogs.oldest, binlogs.newest
            ),
        );
    };
    if base != oldest_base || base != newest_base {
        return want(
            BINLOG_AT_RISK,
            "Unknown",
            "UnknownBinlogNames",
            format!(
                "the checkpoint's binlog {} has another base name than the source's binlogs {}..{}",
                cp.file, binlogs.oldest, binlogs.newest
            ),
        );
    }
    if at < oldest {
        want(
            BINLOG_AT_RISK,
            "True",
            "CheckpointPurged",
            format!(
                "the checkpoint's binlog {} is already purged from the source (oldest kept: {}); the publisher cannot resume without losing changes",
                cp.file, binlogs.oldest
            ),
        )
    } else if at > newest {
        want(
            BINLOG_AT_RISK,
            "Unknown",
            "CheckpointAheadOfSource",
            format!(
                "the checkpoint's binlog {} is newer than the newest the source reports ({})",
                cp.file, binlogs.newest
            ),
        )
    } else if at == oldest {
        want(
            BINLOG_AT_RISK,
            "True",
            "CheckpointInOldestBinlog",
            format!(
                "the checkpoint is in {}, the oldest binlog the source keeps and not the one it writes; the next purge loses the position",
                cp.file
            ),
        )
    } else {
        want(
            BINLOG_AT_RISK,
            "False",
            "CheckpointSafe",
            format!(
                "the checkpoint's binlog {} is newer than the oldest the source keeps ({})",
                cp.file, binlogs.oldest
            ),
        )
    }
}

/// How long the publisher may leave its status untouched before the operator stops
/// trusting the lag it last reported. It writes at least every report interval.
pub const PUBLISHER_SILENT_AFTER_SECS: i64 = 120;

/// The newest time the publisher wrote its status, from the checkpoint and its report.
fn last_publisher_write(status: &BinlogStreamStatus) -> Option<Timestamp> {
    let checkpoint = status
        .checkpoint
        .as_ref()
        .and_then(|c| c.written_at.as_deref());
    let report = status.publisher.as_ref().and_then(|p| p.time.as_deref());
    [checkpoint, report]
        .into_iter()
        .flatten()
        .filter_map(|t| t.parse::<Timestamp>().ok())
        .max()
}

fn lagging(bls: &BinlogStream, status: &BinlogStreamStatus, now: Timestamp) -> Want {
    let threshold = bls.spec.lag.threshold_seconds;
    if bls.spec.paused {
        return want(
            LAGGING,
            "Unknown",
            "Paused",
            "the stream is paused (spec.paused); the lag grows until it is resumed",
        );
    }
    let silent_for = last_publisher_write(status).map(|t| now.as_second() - t.as_second());
    if status.lag_seconds.is_some() && silent_for.is_none_or(|s| s > PUBLISHER_SILENT_AFTER_SECS) {
        // The lag on record is stale: the publisher stopped reporting.
        return want(
            LAGGING,
            "Unknown",
            "PublisherSilent",
            format!(
                "the publisher has not refreshed its status for more than {PUBLISHER_SILENT_AFTER_SECS}s; the last reported lag is out of date"
            ),
        );
    }
    // The lag itself stays in status.lagSeconds: a number in the message would change the
    // condition (and cost a status write) every time the lag moves.
    match status.lag_seconds {
        None => want(
            LAGGING,
            "Unknown",
            "NoLagReported",
            "the publisher has not reported its lag yet",
        ),
        Some(lag) if lag > threshold => want(
            LAGGING,
            "True",
            "LagAboveThreshold",
            format!(
                "replication lag is above the threshold of {threshold}s (see status.lagSeconds)"
            ),
        ),
        Some(_) => want(
            LAGGING,
            "False",
            "LagWithinThreshold",
            format!(
                "replication lag is within the threshold of {threshold}s (see status.lagSeconds)"
            ),
        ),
    }
}

/// A checkpoint request that holds the stream: (reason, message, needs attention).
fn request_hold(bls: &BinlogStream, status: &BinlogStreamStatus) -> Option<(String, String, bool)> {
    let c = requests::current_request(&bls.spec, status)?;
    let msg = c.message.clone().unwrap_or_default();
    match c.phase.as_str() {
        requests::REFUSED => Some((requests::SKIP_NOT_ACKNOWLEDGED.into(), msg, true)),
        requests::STOPPING | requests::APPLYING => Some((
            "MovingCheckpoint".into(),
            format!(
                "checkpointRequest `{}`: the publisher is stopped while the checkpoint moves from {} to {}",
                c.request_id,
                c.from.as_deref().unwrap_or("no checkpoint"),
                c.to
            ),
            false,
        )),
        _ => None,
    }
}

/// `Snapshotting`, for streams that have or had a snapshot (absent otherwise, so streams that
/// never snapshot keep four conditions).
fn snapshotting(bls: &BinlogStream, status: &BinlogStreamStatus) -> Option<Want> {
    let spec = &bls.spec;
    let asked = spec.start.as_deref() == Some("snapshot") || spec.snapshot.is_some();
    match &status.snapshot {
        Some(s) if s.state == "Running" => Some(want(
            SNAPSHOTTING,
            "True",
            "SnapshotRunning",
            format!(
                "snapshot `{}` is publishing the tables' existing rows (progress in status.snapshot)",
                s.request_id
            ),
        )),
        _ if spec.snapshot.as_ref().is_some_and(|r| {
            status
                .snapshot_request
                .as_ref()
                .is_none_or(|s| s.request_id != r.request_id || s.phase == "Requested")
        }) =>
        {
            Some(want(
                SNAPSHOTTING,
                "Unknown",
                "SnapshotRequested",
                format!(
                    "snapshot request `{}` is passed to the publisher and has not started yet",
                    spec.snapshot.as_ref().map(|r| r.request_id.as_str()).unwrap_or_default()
                ),
            ))
        }
        Some(s) => Some(want(
            SNAPSHOTTING,
            "False",
            "SnapshotDone",
            format!(
                "snapshot `{}` finished{}",
                s.request_id,
                s.finished_at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default()
            ),
        )),
        None if asked => Some(want(
            SNAPSHOTTING,
            "Unknown",
            "SnapshotNotReported",
            "the publisher has not reported a snapshot yet",
        )),
        None => None,
    }
}

/// The conditions to write, keeping `lastTransitionTime` of those whose status did not change.
pub fn compute(inputs: &Inputs<'_>) -> Vec<Condition> {
    let bls = inputs.bls;
    let status = bls.status.clone().unwrap_or_default();
    let report = status.publisher.clone().unwrap_or_default();
    let report_msg = report.message.clone().unwrap_or_default();
    let hold = request_hold(bls, &status);

    let (ready, degraded) = match (&inputs.spec, &inputs.pod, report.state.as_str()) {
        (Err(msg), _, _) => (
            want(READY, "False", "InvalidSpec", msg.clone()),
            want(DEGRADED, "True", "InvalidSpec", msg.clone()),
        ),
        (Ok(()), _, _) if hold.is_some() => {
            let (reason, message, degraded) = hold.clone().unwrap_or_default();
            (
                want(READY, "False", &reason, message.clone()),
                if degraded {
                    want(DEGRADED, "True", &reason, message)
                } else {
                    want(DEGRADED, "False", "NoProblem", "no problem reported")
                },
            )
        }
        (Ok(()), pod, _) if bls.spec.paused => {
            let msg = if *pod == PodState::Missing {
                "paused by spec.paused; the publisher stopped at its checkpoint and resumes there when it is set to false".to_string()
            } else {
                "pausing (spec.paused): the publisher is draining and storing its final checkpoint"
                    .to_string()
            };
            (
                want(READY, "False", "Paused", msg),
                want(DEGRADED, "False", "NoProblem", "no problem reported"),
            )
        }
        (Ok(()), _, _) if inputs.apply.is_err() => {
            let b = inputs.apply.clone().err().unwrap_or_else(|| "".into());
            (
                want(READY, "False", &b.reason, b.message.clone()),
                want(DEGRADED, "True", &b.reason, b.message),
            )
        }
        (Ok(()), PodState::Failing { reason, message }, _) => {
            let detail = if report_msg.is_empty() {
                message.clone()
            } else {
                format!("{message}; publisher: {report_msg}")
            };
            let reason = report
                .reason
                .clone()
                .filter(|_| report.state == "Failed")
                .unwrap_or_else(|| reason.clone());
            (
                want(READY, "False", &reason, detail.clone()),
                want(DEGRADED, "True", &reason, detail),
            )
        }
        (Ok(()), _, "Failed") | (Ok(()), _, "Retrying") => {
            let reason = report
                .reason
                .clone()
                .unwrap_or_else(|| "PublisherFailing".into());
            (
                want(READY, "False", &reason, report_msg.clone()),
                want(DEGRADED, "True", &reason, report_msg.clone()),
            )
        }
        (Ok(()), PodState::Pending { reason, message }, _) => (
            want(READY, "False", reason, message.clone()),
            want(DEGRADED, "True", reason, message.clone()),
        ),
        (Ok(()), PodState::Missing, _) => (
            want(
                READY,
                "False",
                "PublisherStarting",
                "the publisher pod is being created",
            ),
            want(DEGRADED, "False", "NoProblem", "no problem reported"),
        ),
        (Ok(()), PodState::Running { ready: false }, _) => (
            want(
                READY,
                "False",
                "PublisherStarting",
                "the publisher is starting (connecting to the source and the stream)",
            ),
            want(DEGRADED, "False", "NoProblem", "no problem reported"),
        ),
        (Ok(()), PodState::Running { ready: true }, _) => (
            want(
                READY,
                "True",
                "Streaming",
                "the publisher is streaming row changes",
            ),
            want(DEGRADED, "False", "NoProblem", "no problem reported"),
        ),
    };
    let mut wants = vec![
        ready,
        lagging(bls, &status, inputs.now),
        degraded,
        at_risk(&status),
    ];
    wants.extend(snapshotting(bls, &status));
    let generation = bls.metadata.generation;
    wants
        .into_iter()
        .map(|w| {
            let previous = status.conditions.iter().find(|c| c.type_ == w.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == w.status => p.last_transition_time.clone(),
                _ => Time(inputs.now),
            };
            Condition {
                type_: w.type_.to_string(),
                status: w.status.to_string(),
                reason: w.reason,
                message: w.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Conditions whose status changed, for events: (type, new status, reason, message).
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<(String, String, String, String)> {
    new.iter()
        .filter(|n| {
            old.iter()
                .find(|o| o.type_ == n.type_)
                .is_none_or(|o| o.status != n.status || o.reason != n.reason)
        })
        .map(|n| {
            (
                n.type_.clone(),
                n.status.clone(),
                n.reason.clone(),
                n.message.clone(),
            )
        })
        .collect()
}
