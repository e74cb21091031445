//! One-shot requests in the spec, decided without API calls: `spec.checkpointRequest` (move
//! the checkpoint back or forward, once per request id) and `spec.snapshot` (an on-demand
//! snapshot, once per request id). The controller gathers the state and performs the steps;
//! this module says which step is due and what the publisher's pod must look like.
//!
//! Forward or backward, decided against the stored checkpoint:
//! - `FILE:POS`: files of one base name are ordered by their numeric suffix (the server
//!   numbers them in the order it writes them), then by offset. Another base name, or a name
//!   without a numeric suffix, cannot be ordered: treated like a skip (needs the
//!   acknowledgement).
//! - `gtid:SET`: by containment in the checkpoint's GTID set. A target that names transactions
//!   the checkpoint has not delivered skips them (forward); one that lacks transactions the
//!   checkpoint has delivered replays them (backward); both at once counts as a skip. MariaDB
//!   `D-S-N` positions compare per domain by sequence number; MySQL `UUID:N-M` sets by their
//!   intervals. A checkpoint without a GTID set of the same kind cannot be compared: a skip.
//! - `latest` is always a skip; `snapshot` too (every row is published again, but deletes
//!   between the checkpoint and the snapshot never reach consumers).
//! - No checkpoint stored yet: nothing to compare with, a skip.

use binlogstream_api::{
    mysql_gtid::MysqlGtidSet,
    start::{GtidState, StartFrom},
};

use crate::crd::{
    BinlogStreamSpec, BinlogStreamStatus, CheckpointRequestSpec, CheckpointRequestStatus,
    CheckpointStatus, SnapshotRequestStatus,
};

/// Phases of `status.checkpointRequest`.
pub const REFUSED: &str = "Refused";
pub const STOPPING: &str = "Stopping";
pub const APPLYING: &str = "Applying";
pub const APPLIED: &str = "Applied";

/// The condition reason (and Event reason) of a refused skip.
pub const SKIP_NOT_ACKNOWLEDGED: &str = "SkipNotAcknowledged";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    FilePos {
        file: String,
        pos: u64,
    },
    /// The text after `gtid:`.
    Gtid(String),
    Latest,
    Snapshot,
}

impl Target {
    /// True when the operator writes this checkpoint itself; otherwise it removes the
    /// checkpoint and the publisher starts at `to` as its `--start` (the operator cannot know
    /// the source's current end, and a GTID start is resolved by the server).
    pub fn is_checkpoint(&self) -> bool {
        matches!(self, Target::FilePos { .. })
    }
}

/// The publisher's start grammar (binlogstream-api), less `earliest`: a request names where
/// to be, and "the oldest file the server keeps" is a moving target; name that file instead.
pub fn parse_target(to: &str) -> Result<Target, String> {
    match to.parse::<StartFrom>().map_err(|e| e.to_string())? {
        StartFrom::Latest => Ok(Target::Latest),
        StartFrom::Snapshot => Ok(Target::Snapshot),
        StartFrom::FilePos { file, pos } => Ok(Target::FilePos { file, pos }),
        StartFrom::Gtid(g) if g.is_empty() => Err("the GTID set is empty".into()),
        StartFrom::Gtid(g) => Ok(Target::Gtid(g.to_string())),
        StartFrom::MysqlGtid(g) if g.is_empty() => Err("the GTID set is empty".into()),
        StartFrom::MysqlGtid(g) => Ok(Target::Gtid(g.to_string())),
        StartFrom::Earliest => Err(
            "`earliest` is not a checkpoint request target: name the oldest binlog file as \
             FILE:4"
                .into(),
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// Changes after the target are published again.
    Rewind,
    /// Changes between the checkpoint and the target are never published.
    SkipAhead,
    Unchanged,
    /// Cannot be ordered (why): handled like a skip.
    Unordered(String),
}

impl Direction {
    pub fn label(&self) -> &'static str {
        match self {
            Direction::Rewind => "Rewind",
            Direction::SkipAhead => "SkipAhead",
            Direction::Unchanged => "Unchanged",
            Direction::Unordered(_) => "Unordered",
        }
    }

    pub fn needs_acknowledgement(&self) -> bool {
        matches!(self, Direction::SkipAhead | Direction::Unordered(_))
    }
}

fn split_binlog_name(name: &str) -> Option<(&str, u64)> {
    let (base, n) = name.rsplit_once('.')?;
    Some((base, n.parse().ok()?))
}

/// `file:position` of a checkpoint.
pub fn display(cp: &CheckpointStatus) -> String {
    cp.display
        .clone()
        .unwrap_or_else(|| format!("{}:{}", cp.file, cp.position))
}

pub fn direction(target: &Target, cp: Option<&CheckpointStatus>) -> Direction {
    let Some(cp) = cp else {
        return Direction::Unordered(
            "no checkpoint is stored yet, so nothing says which changes were delivered".into(),
        );
    };
    match target {
        Target::Latest => Direction::SkipAhead,
        Target::Snapshot => Direction::SkipAhead,
        Target::FilePos { file, pos } => {
            match (split_binlog_name(file), split_binlog_name(&cp.file)) {
                (Some((base, n)), Some((cbase, cn))) if base == cbase => {
                    let at = (n, *pos);
                    let now = (cn, u64::try_from(cp.position).unwrap_or(0));
                    // Rows already delivered inside the transaction at the checkpoint are
                    // replayed by a move to the same position: that is a rewind too.
                    let mid_tx = cp.rows_in_transaction > 0 || cp.event_mark.is_some();
                    match at.cmp(&now) {
                        std::cmp::Ordering::Less => Direction::Rewind,
                        std::cmp::Ordering::Equal if mid_tx => Direction::Rewind,
                        std::cmp::Ordering::Equal => Direction::Unchanged,
                        std::cmp::Ordering::Greater => Direction::SkipAhead,
                    }
                }
                _ => Direction::Unordered(format!(
                    "`{file}` and the checkpoint's `{}` are not numbered files of one base name",
                    cp.file
                )),
            }
        }
        Target::Gtid(set) => {
            let Some(have) = cp.gtid_set.as_deref().filter(|g| !g.is_empty()) else {
                return Direction::Unordered(
                    "the checkpoint has no GTID set to compare with".into(),
                );
            };
            let (skips, replays) = if set.contains(':') {
                match (set.parse::<MysqlGtidSet>(), have.parse::<MysqlGtidSet>()) {
                    (Ok(t), Ok(h)) => (!t.is_subset(&h), !h.is_subset(&t)),
                    _ => {
                        return Direction::Unordered(format!(
                        "the checkpoint's GTID set `{have}` is not a MySQL set like the target's"
                    ))
                    }
                }
            } else {
                match (set.parse::<GtidState>(), have.parse::<GtidState>()) {
                    (Ok(t), Ok(h)) => {
                        let seq = |s: &GtidState, d: u32| s.0.get(&d).map(|g| g.seq);
                        let skips = t.0.values().any(|g| seq(&h, g.domain).is_none_or(|hs| g.seq > hs));
                        let replays = h.0.values().any(|g| seq(&t, g.domain).is_none_or(|ts| ts < g.seq));
                        (skips, replays)
                    }
                    _ => {
                        return Direction::Unordered(format!(
                            "the checkpoint's GTID set `{have}` is not a MariaDB position like the target's"
                        ))
                    }
                }
            };
            match (skips, replays) {
                (true, _) => Direction::SkipAhead,
                (false, true) => Direction::Rewind,
                (false, false) => Direction::Unchanged,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes; the message says why and what to do.
    Refuse {
        message: String,
    },
    Apply {
        direction: Direction,
    },
}

pub fn decide(req: &CheckpointRequestSpec, cp: Option<&CheckpointStatus>) -> Decision {
    let target = match parse_target(&req.to) {
        Ok(t) => t,
        Err(e) => {
            return Decision::Refuse {
                message: format!("spec.checkpointRequest.to: {e}"),
            }
        }
    };
    let dir = direction(&target, cp);
    if dir.needs_acknowledgement() && !req.acknowledge_skip {
        let from = cp.map(display).unwrap_or_else(|| "no checkpoint".into());
        let why = match &dir {
            Direction::Unordered(why) => format!("cannot tell whether it moves back ({why})"),
            _ => "moves forward".into(),
        };
        return Decision::Refuse {
            message: format!(
                "checkpointRequest `{}` to `{}` {why} from {from}: the changes in between would never be published; set spec.checkpointRequest.acknowledgeSkip: true to skip them on purpose. Nothing was changed.",
                req.request_id, req.to
            ),
        };
    }
    Decision::Apply { direction: dir }
}

/// What the publisher's Deployment must look like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// No pod: paused, or a checkpoint request being applied.
    pub stopped: bool,
    /// `--start` instead of `spec.start` (a checkpoint request removed the checkpoint).
    pub start: Option<String>,
    /// The on-demand snapshot to pass: (request id, tables).
    pub snapshot: Option<(String, Vec<String>)>,
}

/// The status record of the checkpoint request in the spec, if it has one.
pub fn current_request<'a>(
    spec: &BinlogStreamSpec,
    status: &'a BinlogStreamStatus,
) -> Option<&'a CheckpointRequestStatus> {
    let req = spec.checkpoint_request.as_ref()?;
    status
        .checkpoint_request
        .as_ref()
        .filter(|c| c.request_id == req.request_id && c.to == req.to)
}

pub fn overrides(spec: &BinlogStreamSpec, status: &BinlogStreamStatus) -> Overrides {
    let current = current_request(spec, status);
    let moving = current.is_some_and(|c| c.phase == STOPPING || c.phase == APPLYING);
    let start = current.filter(|c| c.phase == APPLIED).and_then(|c| {
        parse_target(&c.to)
            .ok()
            .filter(|t| !t.is_checkpoint())
            .map(|_| c.to.clone())
    });
    let snapshot = spec.snapshot.as_ref().and_then(|r| {
        let done_here = status
            .snapshot_request
            .as_ref()
            .is_some_and(|s| s.request_id == r.request_id && s.phase == "Completed");
        let done_there = publisher_completed(status)
            .iter()
            .any(|c| c == &r.request_id);
        // Completed, and the publisher's record of it is gone (a checkpoint request reset
        // the checkpoint): passing it again would run it again.
        (!done_here || done_there).then(|| (r.request_id.clone(), r.tables.clone()))
    });
    Overrides {
        stopped: spec.paused || moving,
        start,
        snapshot,
    }
}

/// Request ids the publisher records as completed in its checkpoint.
pub fn publisher_completed(status: &BinlogStreamStatus) -> Vec<String> {
    status
        .checkpoint
        .as_ref()
        .and_then(|c| c.snapshot.as_ref())
        .map(|s| s.completed.clone())
        .unwrap_or_default()
}

/// `status.snapshotRequest` for `spec.snapshot`: `Requested` until the publisher runs it,
/// `Running`, then `Completed` (kept once reached). `None` without a request in the spec.
pub fn snapshot_request_status(
    spec: &BinlogStreamSpec,
    status: &BinlogStreamStatus,
    now: &str,
) -> Option<SnapshotRequestStatus> {
    let req = spec.snapshot.as_ref()?;
    if let Some(prev) = status
        .snapshot_request
        .as_ref()
        .filter(|s| s.request_id == req.request_id && s.phase == "Completed")
    {
        return Some(prev.clone());
    }
    let phase = if publisher_completed(status).contains(&req.request_id) {
        "Completed"
    } else if status
        .snapshot
        .as_ref()
        .is_some_and(|s| s.request_id == req.request_id && s.state == "Running")
    {
        "Running"
    } else {
        "Requested"
    };
    Some(SnapshotRequestStatus {
        request_id: req.request_id.clone(),
        phase: phase.into(),
        tables: req.tables.clone(),
        completed_at: (phase == "Completed").then(|| now.to_string()),
    })
}

/// The checkpoint a `FILE:POS` request stores: at a transaction boundary, nothing of it
/// delivered, no GTID set (the server's GTID state at that point is not known here; the
/// publisher resumes by file and offset). The snapshot request ids already completed are kept
/// (so a completed request is not run again); a snapshot still running is dropped with the
/// position it depended on (an on-demand one runs again from its start).
pub fn moved_checkpoint(
    file: &str,
    pos: u64,
    old: Option<&CheckpointStatus>,
    now: &str,
) -> CheckpointStatus {
    let completed = old
        .and_then(|c| c.snapshot.as_ref())
        .map(|s| s.completed.clone())
        .unwrap_or_default();
    CheckpointStatus {
        file: file.to_string(),
        position: i64::try_from(pos).unwrap_or(i64::MAX),
        rows_in_transaction: 0,
        transaction_gtid: None,
        event_mark: None,
        gtid_set: None,
        event_time: None,
        written_at: Some(now.to_string()),
        display: Some(format!("{file}:{pos}")),
        // A file:pos names a place on the server the old checkpoint came from.
        source: old.and_then(|c| c.source.clone()),
        snapshot: (!completed.is_empty()).then(|| crate::crd::SnapshotCheckpointStatus {
            request_id: completed.last().cloned().unwrap_or_default(),
            completed,
            ..Default::default()
        }),
    }
}

/// Reason and note of the Event that records an applied request.
pub fn applied_event(
    req: &CheckpointRequestSpec,
    direction: &Direction,
    from: &str,
) -> (&'static str, bool, String) {
    let id = &req.request_id;
    let to = &req.to;
    match direction {
        Direction::Rewind => (
            "CheckpointRewound",
            false,
            format!("checkpointRequest `{id}` applied: checkpoint moved back from {from} to {to}; the changes after {to} are published again"),
        ),
        Direction::Unchanged => (
            "CheckpointMoved",
            false,
            format!("checkpointRequest `{id}` applied: checkpoint {from} set to {to} (the same position)"),
        ),
        Direction::SkipAhead | Direction::Unordered(_) => (
            "CheckpointSkippedAhead",
            true,
            format!("checkpointRequest `{id}` applied with acknowledgeSkip: checkpoint moved from {from} to {to}; the changes in between are skipped on purpose and never published{}",
                if to == "snapshot" { " (every existing row is published again by a new snapshot, but rows deleted in between stay at consumers)" } else { "" }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(file: &str, pos: i64, gtid: Option<&str>) -> CheckpointStatus {
        CheckpointStatus {
            file: file.into(),
            position: pos,
            gtid_set: gtid.map(str::to_string),
            ..Default::default()
        }
    }

    fn req(to: &str, ack: bool) -> CheckpointRequestSpec {
        CheckpointRequestSpec {
            request_id: "r1".into(),
            to: to.into(),
            acknowledge_skip: ack,
        }
    }

    #[test]
    fn file_positions_order_by_file_number_then_offset() {
        let at = cp("binlog.000009", 900, None);
        let dir = |to: &str| direction(&parse_target(to).expect("target"), Some(&at));
        assert_eq!(dir("binlog.000009:4"), Direction::Rewind);
        assert_eq!(dir("binlog.000008:12000"), Direction::Rewind);
        assert_eq!(dir("binlog.000009:900"), Direction::Unchanged);
        assert_eq!(dir("binlog.000009:901"), Direction::SkipAhead);
        // Numbers, not text: .000010 is after .000009, and past 999999 too.
        assert_eq!(dir("binlog.000010:4"), Direction::SkipAhead);
        assert_eq!(
            direction(
                &parse_target("b.1000000:4").expect("t"),
                Some(&cp("b.999999", 4, None))
            ),
            Direction::SkipAhead
        );
        assert!(matches!(dir("other.000001:4"), Direction::Unordered(_)));
        assert!(matches!(
            direction(&parse_target("binlog.000001:4").expect("t"), None),
            Direction::Unordered(_)
        ));
        // Inside a transaction, the same position replays the rows already delivered.
        let mid = CheckpointStatus {
            rows_in_transaction: 2,
            ..cp("binlog.000009", 900, None)
        };
        assert_eq!(
            direction(&parse_target("binlog.000009:900").expect("t"), Some(&mid)),
            Direction::Rewind
        );
    }

    #[test]
    fn gtid_sets_order_by_containment() {
        let maria = cp("b.000002", 4, Some("0-1-100,1-2-50"));
        let dir = |to: &str, at: &CheckpointStatus| {
            direction(&parse_target(to).expect("target"), Some(at))
        };
        assert_eq!(dir("gtid:0-1-90,1-2-50", &maria), Direction::Rewind);
        // A domain left out is replayed from its start.
        assert_eq!(dir("gtid:0-1-100", &maria), Direction::Rewind);
        assert_eq!(dir("gtid:0-1-100,1-2-50", &maria), Direction::Unchanged);
        assert_eq!(dir("gtid:0-1-101,1-2-50", &maria), Direction::SkipAhead);
        // Back in one domain, forward in another: something is skipped.
        assert_eq!(dir("gtid:0-1-90,1-2-60", &maria), Direction::SkipAhead);
        // A domain the checkpoint never saw: its transactions up to 5 are skipped.
        assert_eq!(
            dir("gtid:0-1-100,1-2-50,2-3-5", &maria),
            Direction::SkipAhead
        );
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mysql = cp("b.000002", 4, Some(&format!("{u}:1-100")));
        assert_eq!(dir(&format!("gtid:{u}:1-50"), &mysql), Direction::Rewind);
        assert_eq!(
            dir(&format!("gtid:{u}:1-50:51-100"), &mysql),
            Direction::Unchanged
        );
        assert_eq!(
            dir(&format!("gtid:{u}:1-101"), &mysql),
            Direction::SkipAhead
        );
        assert!(matches!(
            dir(&format!("gtid:{u}:1-5"), &maria),
            Direction::Unordered(_)
        ));
        assert!(matches!(
            dir("gtid:0-1-5", &cp("b.1", 4, None)),
            Direction::Unordered(_)
        ));
    }

    #[test]
    fn a_skip_needs_the_acknowledgement_and_a_rewind_does_not() {
        let at = cp("binlog.000009", 900, None);
        assert_eq!(
            decide(&req("binlog.000009:4", false), Some(&at)),
            Decision::Apply {
                direction: Direction::Rewind
            }
        );
        for to in ["binlog.000010:4", "latest", "snapshot", "x.1:4"] {
            match decide(&req(to, false), Some(&at)) {
                Decision::Refuse { message } => {
                    assert!(message.contains("acknowledgeSkip: true"), "{message}");
                    assert!(message.contains("binlog.000009:900"), "{message}");
                }
                d => panic!("{to}: {d:?}"),
            }
            assert!(matches!(
                decide(&req(to, true), Some(&at)),
                Decision::Apply { .. }
            ));
        }
        assert!(matches!(
            decide(&req("binlog.000009:2", true), Some(&at)),
            Decision::Refuse { message } if message.starts_with("spec.checkpointRequest.to:")
        ));
    }

    fn spec(extra: serde_json::Value) -> BinlogStreamSpec {
        let mut v = serde_json::json!({
            "source": {"host": "db", "user": "repl", "passwordSecretRef": {"name": "pw", "key": "password"}},
            "target": {"stream": "s"}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn the_pod_stops_while_a_request_is_applied_and_starts_where_it_says() {
        let s = spec(
            serde_json::json!({"checkpointRequest": {"requestId": "r1", "to": "latest", "acknowledgeSkip": true}}),
        );
        let mut st = BinlogStreamStatus::default();
        assert_eq!(overrides(&s, &st), Overrides::default(), "not decided yet");
        let record = |phase: &str| CheckpointRequestStatus {
            request_id: "r1".into(),
            phase: phase.into(),
            to: "latest".into(),
            ..Default::default()
        };
        for phase in [STOPPING, APPLYING] {
            st.checkpoint_request = Some(record(phase));
            assert!(overrides(&s, &st).stopped, "{phase}");
            assert_eq!(overrides(&s, &st).start, None);
        }
        st.checkpoint_request = Some(record(APPLIED));
        let o = overrides(&s, &st);
        assert!(!o.stopped);
        assert_eq!(o.start.as_deref(), Some("latest"));
        st.checkpoint_request = Some(record(REFUSED));
        assert_eq!(
            overrides(&s, &st),
            Overrides::default(),
            "a refusal changes nothing"
        );
        // Another request id: the old record does not apply.
        st.checkpoint_request = Some(CheckpointRequestStatus {
            request_id: "r0".into(),
            ..record(STOPPING)
        });
        assert!(!overrides(&s, &st).stopped);
        // FILE:POS is written as a checkpoint: no start override.
        let s =
            spec(serde_json::json!({"checkpointRequest": {"requestId": "r1", "to": "b.000001:4"}}));
        st.checkpoint_request = Some(CheckpointRequestStatus {
            to: "b.000001:4".into(),
            ..record(APPLIED)
        });
        assert_eq!(overrides(&s, &st).start, None);
    }

    #[test]
    fn a_completed_snapshot_request_is_never_passed_again_once_the_publisher_forgot_it() {
        let s =
            spec(serde_json::json!({"snapshot": {"requestId": "re-1", "tables": ["shop.orders"]}}));
        let mut st = BinlogStreamStatus::default();
        let passed = Some(("re-1".to_string(), vec!["shop.orders".to_string()]));
        assert_eq!(overrides(&s, &st).snapshot, passed);
        let r = snapshot_request_status(&s, &st, "t0").expect("record");
        assert_eq!(r.phase, "Requested");
        st.snapshot = Some(crate::crd::SnapshotStatus {
            state: "Running".into(),
            request_id: "re-1".into(),
            ..Default::default()
        });
        assert_eq!(
            snapshot_request_status(&s, &st, "t1").expect("r").phase,
            "Running"
        );
        st.checkpoint = Some(CheckpointStatus {
            snapshot: Some(crate::crd::SnapshotCheckpointStatus {
                request_id: "re-1".into(),
                completed: vec!["initial".into(), "re-1".into()],
                ..Default::default()
            }),
            ..cp("b.000001", 4, None)
        });
        let done = snapshot_request_status(&s, &st, "t2").expect("r");
        assert_eq!(
            (done.phase.as_str(), done.completed_at.as_deref()),
            ("Completed", Some("t2"))
        );
        st.snapshot_request = Some(done.clone());
        // Kept as it was (the completion time does not move).
        assert_eq!(snapshot_request_status(&s, &st, "t3"), Some(done));
        // The publisher still records it: passing it is harmless and keeps the pod as it is.
        assert_eq!(overrides(&s, &st).snapshot, passed);
        // The checkpoint was reset (a checkpoint request): not passed again.
        st.checkpoint = None;
        assert_eq!(overrides(&s, &st).snapshot, None);
    }

    #[test]
    fn a_moved_checkpoint_keeps_the_completed_requests_and_nothing_else() {
        let old = CheckpointStatus {
            rows_in_transaction: 3,
            transaction_gtid: Some("0-1-9".into()),
            gtid_set: Some("0-1-8".into()),
            snapshot: Some(crate::crd::SnapshotCheckpointStatus {
                request_id: "re-2".into(),
                pending: vec!["shop.items".into()],
                last_key: Some("[5]".into()),
                table_rows: 10,
                tables_done: 1,
                completed: vec!["initial".into(), "re-1".into()],
            }),
            ..cp("b.000009", 900, None)
        };
        let m = moved_checkpoint("b.000003", 4, Some(&old), "now");
        assert_eq!(
            (m.file.as_str(), m.position, m.rows_in_transaction),
            ("b.000003", 4, 0)
        );
        assert_eq!(m.display.as_deref(), Some("b.000003:4"));
        assert_eq!((m.gtid_set, m.transaction_gtid), (None, None));
        let sn = m.snapshot.expect("completed kept");
        assert_eq!(sn.completed, vec!["initial", "re-1"]);
        assert!(sn.pending.is_empty() && sn.last_key.is_none());
    }
}
