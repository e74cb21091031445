//! Where the reader is in the binlog: transaction-boundary checkpoints. The start grammar and
//! GTID types live in the shared API crate (one grammar for publisher and operator). The
//! serialized shape of [`Checkpoint`] is stored by users (file, Kubernetes status), so it is
//! pinned by a test.

use serde::{Deserialize, Serialize};

pub use binlogstream_api::start::{
    GtidParseError, GtidState, MariaGtid, StartFrom, StartParseError,
};

use crate::mysql_gtid::MysqlGtidSet;

/// Which server a checkpoint came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceServer {
    /// The source's `@@server_id`.
    pub server_id: u32,
    /// The source's `@@server_uuid` (MySQL; MariaDB has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uuid: Option<String>,
    /// The address connected to (`host:port`), for messages only: one server may have many
    /// names, so it does not decide sameness.
    #[serde(default)]
    pub host: String,
}

impl SourceServer {
    /// The UUID when both sides have one (MySQL), else the server id.
    pub fn same_server(&self, other: &SourceServer) -> bool {
        match (&self.server_uuid, &other.server_uuid) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => self.server_id == other.server_id,
        }
    }
}

impl std::fmt::Display for SourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (server_id {}", self.host, self.server_id)?;
        if let Some(u) = &self.server_uuid {
            write!(f, ", server_uuid {u}")?;
        }
        f.write_str(")")
    }
}

/// A resumable position. `file:pos` is always the start of a transaction (or the point just
/// after a commit); `rows_done` rows of the transaction starting there were already delivered,
/// so a resume re-reads that transaction from its start (its TABLE_MAP events included) and
/// skips them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub file: String,
    pub pos: u64,
    #[serde(default)]
    pub rows_done: u64,
    /// GTID of the transaction `rows_done` counts into (when it has one and rows_done > 0):
    /// a resume skips those rows only if the first transaction it reads carries this GTID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_gtid: Option<String>,
    /// GTID state including the last fully delivered transaction, when the source uses GTIDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_state: Option<GtidState>,
    /// MySQL sources: the executed GTID set including the last fully delivered transaction.
    /// Only stored once it is complete (see the reader), so a resume by GTID skips nothing
    /// and replays nothing already delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql_gtid_set: Option<MysqlGtidSet>,
    /// Where inside the transaction the delivered rows end, independent of the table filter
    /// (so a restart with another include/exclude skips exactly the delivered rows of the
    /// tables both filters capture). Written with `rows_done`; a resume prefers it. Absent in
    /// checkpoints written before it existed, which resume by `rows_done` as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_mark: Option<EventMark>,
    /// Timestamp (seconds) of the last event covered by this checkpoint.
    #[serde(default)]
    pub event_ts: u32,
    /// Progress of a snapshot, when one ran or runs: every chunk it describes as done was
    /// delivered before this binlog position (see `snapshot`). Absent in checkpoints of
    /// publishers that never snapshotted, and in those written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Box<SnapshotState>>,
    /// The server this position was read from: a `file:pos` means nothing on another server,
    /// so a resume there goes by GTID or refuses (see the reader's `open`). Absent in
    /// checkpoints written before it existed, which resume as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<SourceServer>,
}

/// How far a snapshot got, stored with the binlog position it was delivered at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotState {
    /// What the snapshot serves: `initial` for `--start snapshot`, otherwise the
    /// `--snapshot-request-id` of an on-demand request.
    pub request_id: String,
    /// Tables (`schema.table`) still to read, in order; the first is the one being read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// The key of the last row delivered of the first pending table, as a JSON array of the
    /// key's values (`None`: that table has not started, or it is read in one pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<serde_json::Value>,
    /// Rows of the first pending table delivered so far.
    #[serde(default)]
    pub table_rows: u64,
    /// Tables finished by this request (for status; the counts are rows delivered).
    #[serde(default)]
    pub tables_done: u64,
    /// Request ids completed, oldest first (the last few only), so that a restart with the
    /// same `--snapshot-request-id` does not repeat the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<String>,
}

impl SnapshotState {
    /// True while tables remain to be read.
    pub fn running(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// A point inside a transaction: every row of its ROWS events before number `event`
/// (counting every ROWS event from 0, whatever its table and the filter) and the first `rows`
/// rows of event `event` were delivered. A ROWS event holds the rows of one table, so all of
/// them or none are captured under any filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMark {
    pub event: u32,
    pub rows: u32,
}

impl Checkpoint {
    pub fn start(&self) -> StartFrom {
        StartFrom::FilePos {
            file: self.file.clone(),
            pos: self.pos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_serialized_shape_is_stable() {
        let c = Checkpoint {
            server: None,
            file: "binlog.000002".into(),
            pos: 385,
            rows_done: 7,
            tx_gtid: None,
            gtid_state: Some("0-1-9".parse().expect("gtid")),
            mysql_gtid_set: None,
            event_mark: None,
            event_ts: 1_732_480_000,
            snapshot: None,
        };
        let text = serde_json::to_string(&c).expect("json");
        assert_eq!(
            text,
            r#"{"file":"binlog.000002","pos":385,"rowsDone":7,"gtidState":"0-1-9","eventTs":1732480000}"#
        );
        assert_eq!(serde_json::from_str::<Checkpoint>(&text).expect("back"), c);

        // MySQL: the executed set rides in its own optional field; older checkpoints without
        // it still read.
        let m = Checkpoint {
            gtid_state: None,
            mysql_gtid_set: Some(
                "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9"
                    .parse()
                    .expect("set"),
            ),
            ..c.clone()
        };
        let text = serde_json::to_string(&m).expect("json");
        assert_eq!(
            text,
            r#"{"file":"binlog.000002","pos":385,"rowsDone":7,"mysqlGtidSet":"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9","eventTs":1732480000}"#
        );
        assert_eq!(serde_json::from_str::<Checkpoint>(&text).expect("back"), m);
        let old: Checkpoint = serde_json::from_str(r#"{"file":"b.1","pos":4}"#).expect("old form");
        assert_eq!(old.mysql_gtid_set, None);
        assert_eq!(old.event_mark, None);

        // Mid-transaction, as written now: the filter-independent mark rides along.
        let marked = Checkpoint {
            event_mark: Some(EventMark { event: 3, rows: 2 }),
            ..c
        };
        let text = serde_json::to_string(&marked).expect("json");
        assert_eq!(
            text,
            r#"{"file":"binlog.000002","pos":385,"rowsDone":7,"gtidState":"0-1-9","eventMark":{"event":3,"rows":2},"eventTs":1732480000}"#
        );
        assert_eq!(
            serde_json::from_str::<Checkpoint>(&text).expect("back"),
            marked
        );
    }

    #[test]
    fn snapshot_progress_rides_in_an_optional_field() {
        let c = Checkpoint {
            server: None,
            file: "binlog.000002".into(),
            pos: 385,
            rows_done: 0,
            tx_gtid: None,
            gtid_state: Some("0-1-9".parse().expect("gtid")),
            mysql_gtid_set: None,
            event_mark: None,
            event_ts: 5,
            snapshot: Some(Box::new(SnapshotState {
                request_id: "initial".into(),
                pending: vec!["shop.orders".into(), "shop.items".into()],
                last_key: Some(serde_json::json!([42, "a"])),
                table_rows: 10_000,
                tables_done: 1,
                completed: vec![],
            })),
        };
        let text = serde_json::to_string(&c).expect("json");
        assert_eq!(
            text,
            r#"{"file":"binlog.000002","pos":385,"rowsDone":0,"gtidState":"0-1-9","eventTs":5,"snapshot":{"requestId":"initial","pending":["shop.orders","shop.items"],"lastKey":[42,"a"],"tableRows":10000,"tablesDone":1}}"#
        );
        assert_eq!(serde_json::from_str::<Checkpoint>(&text).expect("back"), c);
        // Finished: only the completed request ids remain.
        let done: Checkpoint = serde_json::from_str(
            r#"{"file":"b.1","pos":4,"snapshot":{"requestId":"r1","completed":["initial","r1"]}}"#,
        )
        .expect("done form");
        let s = done.snapshot.expect("snapshot");
        assert!(!s.running());
        assert_eq!(s.completed, vec!["initial", "r1"]);
        // Written before the field existed.
        let old: Checkpoint = serde_json::from_str(r#"{"file":"b.1","pos":4}"#).expect("old");
        assert_eq!(old.snapshot, None);
    }

    #[test]
    fn transaction_gtid_is_optional_and_omitted_when_none() {
        let c = Checkpoint {
            server: None,
            file: "binlog.000002".into(),
            pos: 385,
            rows_done: 7,
            tx_gtid: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:tag:10".into()),
            gtid_state: None,
            mysql_gtid_set: Some(
                "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9"
                    .parse()
                    .expect("set"),
            ),
            event_mark: None,
            event_ts: 5,
            snapshot: None,
        };
        let text = serde_json::to_string(&c).expect("json");
        assert_eq!(
            text,
            r#"{"file":"binlog.000002","pos":385,"rowsDone":7,"txGtid":"3e11fa47-71ca-11e1-9e33-c80aa9429562:tag:10","mysqlGtidSet":"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9","eventTs":5}"#
        );
        assert_eq!(serde_json::from_str::<Checkpoint>(&text).expect("back"), c);

        // Written before the field existed: loads as None, and None is not written.
        let old: Checkpoint =
            serde_json::from_str(r#"{"file":"b.1","pos":4,"rowsDone":2,"gtidState":"0-1-9"}"#)
                .expect("old form");
        assert_eq!((old.rows_done, old.tx_gtid.as_deref()), (2, None));
        let text = serde_json::to_string(&old).expect("json");
        assert!(!text.contains("txGtid"), "{text}");
    }
}
