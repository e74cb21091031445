//! Follows the binlog like a replica and turns events into [`Item`]s: rows, transaction
//! commits and idle heartbeats, each carrying the position a resume can start from.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use mysql_async::{prelude::Queryable, BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::events::{
    Event, EventData, GtidEvent, PreviousGtidsEvent, QueryEvent, RotateEvent, TableMapEvent,
    TransactionPayloadEvent,
};
use tracing::{debug, info, warn};

use super::{
    connect::SourceAddr,
    error::SourceError,
    flavor,
    preflight::{self, ServerInfo},
    query::{self, classify, QueryKind, XaStatement},
    resume, schema,
};
use crate::{
    decode::{self, ChangeKind, EncodeOptions, RowChange, TableInfo, TablePlan},
    filter::TableFilter,
    mysql_gtid::{uuid_text, MysqlGtidSet},
    position::{Checkpoint, EventMark, GtidState, MariaGtid, SourceServer, StartFrom},
};

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub addr: SourceAddr,
    pub server_id: u32,
    pub start: StartFrom,
    pub filter: TableFilter,
    pub encode: EncodeOptions,
    /// How often an idle source sends a heartbeat (keeps the checkpoint moving).
    pub heartbeat: Duration,
    /// Stop at the current end of the binlog instead of waiting for more.
    pub stop_at_end: bool,
}

/// What the reader hands on, in binlog order.
#[derive(Debug, Clone)]
pub enum Item {
    Row(RowChange),
    /// A transaction ended; every row before it has been handed on. Resuming here is exact.
    Commit(Checkpoint),
    /// The source is idle at a transaction boundary.
    Idle(Checkpoint),
}

mod event_type {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_V1: u8 = 23;
    pub const UPDATE_V1: u8 = 24;
    pub const DELETE_V1: u8 = 25;
    pub const INCIDENT: u8 = 26;
    pub const HEARTBEAT: u8 = 27;
    pub const WRITE_V2: u8 = 30;
    pub const UPDATE_V2: u8 = 31;
    pub const DELETE_V2: u8 = 32;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const XA_PREPARE: u8 = 38;
    pub const PARTIAL_UPDATE: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    /// MySQL 8.4 writes tagged GTIDs (`uuid:tag:n`) with this type instead of GTID.
    pub const GTID_TAGGED: u8 = 42;
    pub const MARIA_GTID: u8 = 162;
    pub const MARIA_GTID_LIST: u8 = 163;
    pub const MARIA_QUERY_COMPRESSED: u8 = 165;
    pub const MARIA_ROWS_COMPRESSED_FIRST: u8 = 166;
    pub const MARIA_ROWS_COMPRESSED_LAST: u8 = 171;
}

#[derive(Debug)]
struct Tx {
    start_pos: u64,
    gtid: Option<Arc<str>>,
    maria_gtid: Option<MariaGtid>,
    /// MySQL GTID (server UUID, tag or "", transaction number).
    mysql_gtid: Option<([u8; 16], String, u64)>,
    /// Captured rows handed on so far (including any skipped on resume).
    rows: u64,
    explicit_begin: bool,
    /// MariaDB's FL_STANDALONE: one statement, no BEGIN/COMMIT around it.
    standalone: bool,
    /// ROWS events read so far (every one, whatever its table): numbers the next one.
    rows_events: u32,
    /// How far rows were handed on (or skipped as delivered before a resume).
    done: Option<EventMark>,
    /// An XA transaction (XA START ... XA PREPARE): its rows are held, not handed on, until
    /// its XA COMMIT.
    xa: bool,
    xid: Option<String>,
    held: Vec<RowChange>,
}

/// An XA transaction prepared (its XA PREPARE read) but not yet committed or rolled back.
#[derive(Debug)]
struct PreparedXa {
    xid: String,
    rows: Vec<RowChange>,
    bytes: usize,
    /// The boundary before its first event: checkpoints do not move past it while it is
    /// prepared, so a restart reads its rows again.
    before: Checkpoint,
}

/// Most bytes of row records held for prepared XA transactions (they are published at their
/// XA COMMIT, which may come much later); past it the stream stops with
/// [`SourceError::XaTooLarge`].
pub const XA_HELD_BYTES_MAX: usize = 256 << 20;

/// Which rows of the first transaction after a resume were delivered already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    /// Checkpoints written before event marks existed: the first n captured rows.
    Rows(u64),
    /// Every row of ROWS events before `event`, and the first `rows` of event `event`.
    Mark(EventMark),
}

impl Skip {
    /// Whether row `index` of ROWS event `event` is skipped (and counts it for `Rows`).
    fn take(&mut self, event: u32, index: u32) -> bool {
        match self {
            Skip::None => false,
            Skip::Rows(0) => false,
            Skip::Rows(n) => {
                *n -= 1;
                true
            }
            Skip::Mark(m) => event < m.event || (event == m.event && index < m.rows),
        }
    }
}

/// A mid-transaction checkpoint's delivered rows, not yet matched to a transaction.
#[derive(Debug)]
struct PendingSkip {
    rows: u64,
    mark: Option<EventMark>,
    tx_gtid: Option<String>,
    file: String,
    pos: u64,
}

impl PendingSkip {
    fn of(cp: &Checkpoint) -> Option<PendingSkip> {
        (cp.rows_done > 0).then(|| PendingSkip {
            rows: cp.rows_done,
            mark: cp.event_mark,
            tx_gtid: cp.tx_gtid.clone(),
            file: cp.file.clone(),
            pos: cp.pos,
        })
    }
}

struct PlanEntry {
    schema_gen: u64,
    tme_bytes: Vec<u8>,
    /// `None`: the table is filtered out, its rows are not decoded.
    plan: Option<Arc<TablePlan>>,
}

pub struct Reader {
    cfg: SourceConfig,
    server: ServerInfo,
    /// Connection for information_schema lookups; `None` when decoding files offline.
    meta: Option<Conn>,
    /// Offset and end of the TRANSACTION_PAYLOAD event whose inner events are being read
    /// (their own headers carry no position).
    payload: Option<(u64, u64)>,
    stream: Option<BinlogStream>,
    file: Arc<str>,
    seen_fde: bool,
    tx: Option<Tx>,
    last_boundary: Checkpoint,
    gtid_state: GtidState,
    /// MySQL executed GTID set. Stored in checkpoints only once `mysql_gtids_complete`: seeded
    /// from a GTID start, from SHOW BINARY LOG STATUS for `latest`, or from the
    /// PREVIOUS_GTIDS event of a file read from its start. A partial set would make a GTID
    /// resume replay everything missing from it.
    mysql_gtids: MysqlGtidSet,
    mysql_gtids_complete: bool,
    /// The current file is being read from its first event (so its PREVIOUS_GTIDS counts).
    file_from_start: bool,
    /// MySQL source with gtid_mode=ON: resumes use COM_BINLOG_DUMP_GTID, which survives a
    /// failover to another server (its file names and offsets differ).
    gtid_auto_position: bool,
    /// Rows of the current transaction to skip (already delivered before a resume).
    skip: Skip,
    /// Prepared XA transactions, oldest first, and the bytes of rows they hold.
    prepared: Vec<PreparedXa>,
    held_bytes: usize,
    /// With `stop_at_end`: the binlog's end when the dump started, so a stream that ends
    /// before it (the server dropped the dump) is a lost connection, not the end.
    end_at_dump: Option<(String, u64)>,
    /// Where the last event read ended (file, offset).
    read_to: (Arc<str>, u64),
    /// End of the last event read in the current file, in 64 bits: event headers carry
    /// 32-bit positions, which wrap in files past 4 GiB (one huge transaction makes one).
    file_end: u64,
    /// Consecutive dumps that ended early without progress.
    early_ends: u32,
    /// A `stop_at_end` dump reached the end: the only way `next_event` reports the end.
    finished: bool,
    /// When the last event (heartbeats included) arrived, for the silence watchdog.
    last_event_at: tokio::time::Instant,
    /// After a mid-transaction resume: the rows to skip once the first transaction is known
    /// to be the checkpoint's (checked in `begin_tx`).
    pending_skip: Option<PendingSkip>,
    plans: HashMap<u64, PlanEntry>,
    infos: HashMap<(String, String), Option<Arc<TableInfo>>>,
    schema_gen: u64,
    /// Statement-format DML seen (cannot be captured; warned about, counted).
    pub statement_dml: u64,
}

fn mariadb_gtid(data: &[u8], server_id: u32) -> Option<(MariaGtid, u8)> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags2 = *data.get(12)?;
    Some((
        MariaGtid {
            domain,
            server: server_id,
            seq,
        },
        flags2,
    ))
}

fn mariadb_gtid_list(data: &[u8]) -> Option<Vec<MariaGtid>> {
    let count = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) & 0x0fff_ffff;
    // Bounded by the body before it sizes anything: 16 bytes per GTID.
    if count as usize > data.len().saturating_sub(4) / 16 {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let b = data.get(4 + i * 16..4 + (i + 1) * 16)?;
        out.push(MariaGtid {
            domain: u32::from_le_bytes(b[0..4].try_into().ok()?),
            server: u32::from_le_bytes(b[4..8].try_into().ok()?),
            seq: u64::from_le_bytes(b[8..16].try_into().ok()?),
        });
    }
    Some(out)
}

/// Whether a statement (not BEGIN/COMMIT) ends the open transaction: it does when there is
/// none, when MariaDB marked it standalone, or for a MySQL statement outside BEGIN (DDL is
/// its own transaction).
fn query_ends_tx(tx: Option<&Tx>) -> bool {
    match tx {
        None => true,
        Some(tx) => tx.standalone || (tx.maria_gtid.is_none() && !tx.explicit_begin),
    }
}

/// The 64-bit end of an event whose header says `log_pos` (the low 32 bits), read after an
/// event that ended at `prev_end` in the same file. Positions only grow within a file and
/// no event is 4 GiB long, so a `log_pos` far below `prev_end`'s low bits has wrapped.
fn widen_log_pos(prev_end: u64, log_pos: u32) -> u64 {
    let candidate = (prev_end & !0xffff_ffff) | u64::from(log_pos);
    if candidate + (1 << 31) < prev_end {
        candidate + (1 << 32)
    } else {
        candidate
    }
}

/// An INCIDENT event body: the incident number (1 is LOST_EVENTS) and a message of at most
/// 255 bytes; what a damaged body lacks is reported as such, never read past its end.
fn incident(data: &[u8]) -> (u16, String) {
    let number = data
        .get(0..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let message = match data.get(2) {
        Some(&len) => {
            let end = (3 + usize::from(len)).min(data.len());
            String::from_utf8_lossy(&data[3..end]).into_owned()
        }
        None => String::new(),
    };
    let message = match (number, message.is_empty()) {
        (1, true) => "LOST_EVENTS".to_string(),
        (_, true) => "no message".to_string(),
        (_, false) => message,
    };
    (number, message)
}

/// Why a PREVIOUS_GTIDS body cannot hold the counts it claims, read as mysql_common reads
/// it: mysql_common reserves room for each count (server UUIDs, then intervals per UUID)
/// before reading the entries, so a damaged count would abort the process on allocation.
/// Shortfalls that mysql_common reports as errors by itself are left to it.
fn implausible_previous_gtids(data: &[u8]) -> Option<String> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
    };
    let header = u64_at(0)?;
    let tagged = header >> 56 != 0;
    let n_sids = if tagged {
        (header >> 8) & ((1u64 << 48) - 1)
    } else {
        header & ((1u64 << 56) - 1)
    };
    // Each entry takes at least 24 bytes: a UUID and an interval count.
    let room = (data.len() as u64 - 8) / 24;
    if n_sids > room {
        return Some(format!(
            "it claims {n_sids} server UUIDs but its {} bytes hold at most {room}",
            data.len()
        ));
    }
    let mut at = 8usize;
    for _ in 0..n_sids {
        at = at.checked_add(16)?;
        if tagged {
            // MySQL's variable-length integer: the first byte's trailing ones give the length.
            let first = *data.get(at)?;
            let (len, tag_len) = match first.trailing_ones() as usize {
                8 => (9, u64_at(at + 1)?),
                ones => {
                    let n = ones + 1;
                    let mut raw = [0u8; 8];
                    raw[..n].copy_from_slice(data.get(at..at + n)?);
                    (n, u64::from_le_bytes(raw) >> n)
                }
            };
            at = at
                .checked_add(len)?
                .checked_add(usize::try_from(tag_len).ok()?)?;
        }
        let n_intervals = u64_at(at)?;
        at += 8;
        let room = (data.len().saturating_sub(at) / 16) as u64;
        if n_intervals > room {
            return Some(format!(
                "it claims {n_intervals} GTID intervals for one server but has room for {room}"
            ));
        }
        at += n_intervals as usize * 16;
    }
    None
}

/// Server versions whose binlogs number events differently (TABLE_MAP = 16, rows = 17..19,
/// XID = 20): the pre-GA 5.1 trees MySQL itself remaps, matched as its
/// `Format_description_event` does (`5.1.[1-5]-a_drop5*`, `5.1.4-a_drop6*`, `5.2.[0-2]-a_drop6*`).
fn pre_ga_event_numbering(version: &str) -> bool {
    let v = version.as_bytes();
    if v.len() < 13 || &v[0..2] != b"5." || v[3] != b'.' || &v[5..12] != b"-a_drop" {
        return false;
    }
    let (minor, patch, drop) = (v[2], v[4], v[12]);
    (minor == b'1' && (b'1'..=b'5').contains(&patch) && drop == b'5')
        || (minor == b'1' && patch == b'4' && drop == b'6')
        || (minor == b'2' && (b'0'..=b'2').contains(&patch) && drop == b'6')
}

/// The artificial ROTATE that opens a dump arrives before the FORMAT_DESCRIPTION event, so the
/// parser cannot know that it ends in a CRC32; drop those four bytes when they are one.
fn strip_rotate_checksum(ev: &Event, name: &[u8]) -> usize {
    let h = ev.header();
    if name.len() < 4 {
        return name.len();
    }
    let data = ev.data();
    let body_len = data.len() - 4;
    let mut header = Vec::with_capacity(19);
    header.extend_from_slice(&h.timestamp().to_le_bytes());
    header.push(h.event_type_raw());
    header.extend_from_slice(&h.server_id().to_le_bytes());
    header.extend_from_slice(&h.event_size().to_le_bytes());
    header.extend_from_slice(&h.log_pos().to_le_bytes());
    header.extend_from_slice(&h.flags_raw().to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(&data[..body_len]);
    let expected = crc.finalize().to_le_bytes();
    if data[body_len..] == expected {
        name.len() - 4
    } else {
        name.len()
    }
}

/// The server a checkpoint written now comes from.
fn identity(server: &ServerInfo, cfg: &SourceConfig) -> SourceServer {
    SourceServer {
        server_id: server.server_id,
        server_uuid: server.server_uuid.clone(),
        host: cfg.addr.display(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum CrossServer {
    Same,
    ByGtid,
    Refuse(String),
}

/// Whether checkpoint `cp` may resume on server `here`. A `file:pos` is only meaningful on
/// the server that wrote it (a replica or a rebuilt primary has other offsets, often under
/// the same file names); GTIDs name transactions on every server of the topology.
fn across_servers(
    cp: &Checkpoint,
    here: &SourceServer,
    is_mariadb: bool,
    gtid_auto_position: bool,
) -> CrossServer {
    let Some(from) = &cp.server else {
        // Written before checkpoints named their server: resumes as it always did.
        return CrossServer::Same;
    };
    if from.same_server(here) {
        return CrossServer::Same;
    }
    let has_gtids = if is_mariadb {
        cp.gtid_state.as_ref().is_some_and(|g| !g.is_empty())
    } else {
        gtid_auto_position && cp.mysql_gtid_set.as_ref().is_some_and(|g| !g.is_empty())
    };
    if !has_gtids {
        return CrossServer::Refuse(
            "a binlog file and position mean nothing on another server, and the checkpoint has \
             no GTID state to carry it across (MySQL: gtid_mode=ON on both); point the publisher \
             back at the server that wrote it, or start this server from a position of its own \
             (a checkpoint request, or remove the checkpoint and set the start), accepting that \
             the changes in between are not published"
                .into(),
        );
    }
    if cp.rows_done > 0 && cp.tx_gtid.is_none() {
        return CrossServer::Refuse(
            "the checkpoint is inside a transaction it names by file and position only, so \
             the rows already delivered cannot be found on another server; resume once on the \
             server that wrote it (its next checkpoint names the transaction's GTID)"
                .into(),
        );
    }
    CrossServer::ByGtid
}

impl Reader {
    /// Connects, runs the preflight checks and starts the dump at `checkpoint` (when given) or
    /// at the configured start.
    pub async fn open(
        cfg: SourceConfig,
        checkpoint: Option<Checkpoint>,
    ) -> Result<Reader, SourceError> {
        let mut meta = cfg.addr.connect().await?;
        let user = cfg.addr.user();
        let server = preflight::preflight(&mut meta, &user, cfg.server_id).await?;
        info!(version = %server.version, source = %cfg.addr.display(), "source passed preflight checks");

        let gtid_auto_position =
            !server.is_mariadb && preflight::gtid_mode_on(&mut meta).await.unwrap_or(false);
        // The complete executed MySQL GTID set at the start, when known.
        let mut mysql_seed: Option<MysqlGtidSet> = checkpoint
            .as_ref()
            .and_then(|cp| cp.mysql_gtid_set.clone())
            .filter(|_| !server.is_mariadb);
        let here = identity(&server, &cfg);
        let (file, pos, gtid, pending_skip) = match &checkpoint {
            Some(cp) => match across_servers(cp, &here, server.is_mariadb, gtid_auto_position) {
                CrossServer::Same => (cp.file.clone(), cp.pos, None, PendingSkip::of(cp)),
                CrossServer::ByGtid => {
                    let from = cp
                        .server
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    warn!(from = %from, to = %here, checkpoint = %format!("{}:{}", cp.file, cp.pos), "checkpoint was read from another server; resuming by its GTIDs, not its file and position");
                    match cp.gtid_state.clone().filter(|_| server.is_mariadb) {
                        Some(state) => (String::new(), 4, Some(state), PendingSkip::of(cp)),
                        // MySQL: `by_gtid` below auto-positions with the checkpoint's set.
                        None => (cp.file.clone(), cp.pos, None, PendingSkip::of(cp)),
                    }
                }
                CrossServer::Refuse(reason) => {
                    return Err(SourceError::ServerChanged {
                        checkpoint: format!("{}:{}", cp.file, cp.pos),
                        from: cp
                            .server
                            .as_ref()
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                        to: here.to_string(),
                        reason,
                    });
                }
            },
            None => match &cfg.start {
                // A snapshot starts streaming at the current end; the snapshot driver reads the
                // existing rows and interleaves them (see `snapshot`).
                StartFrom::Latest | StartFrom::Snapshot => {
                    let (f, p, executed) =
                        preflight::binlog_end(&mut meta, &user, &server.version, server.is_mariadb)
                            .await?;
                    mysql_seed = executed
                        .filter(|e| !e.trim().is_empty())
                        .and_then(|e| e.parse().ok());
                    (f, p, None, None)
                }
                StartFrom::Earliest => {
                    let oldest = server
                        .binlogs
                        .first()
                        .ok_or_else(|| SourceError::BadStart {
                            start: "earliest".into(),
                            reason: "the source lists no binlog files".into(),
                        })?;
                    (oldest.name.clone(), 4, None, None)
                }
                StartFrom::FilePos { file, pos } => (file.clone(), *pos, None, None),
                StartFrom::Gtid(state) => (String::new(), 4, Some(state.clone()), None),
                StartFrom::MysqlGtid(set) => {
                    if server.is_mariadb || !gtid_auto_position {
                        return Err(SourceError::BadStart {
                            start: format!("gtid:{set}"),
                            reason: if server.is_mariadb {
                                "a MySQL GTID set (UUID:N-M) was given but the source is MariaDB; \
                                 give DOMAIN-SERVER-SEQ GTIDs"
                                    .into()
                            } else {
                                "the source has gtid_mode other than ON; start at FILE:POS".into()
                            },
                        });
                    }
                    mysql_seed = Some(set.clone());
                    (String::new(), 4, None, None)
                }
            },
        };
        // Auto-positioning needs a set the server can compare with; without one (or with
        // gtid_mode OFF) the file and offset are used, as for MariaDB. So are mid-transaction
        // checkpoints that name no transaction GTID (written before it was recorded): by GTID
        // the first transaction could be another one, and there is nothing to check it with.
        let unverifiable_mid_tx = pending_skip.as_ref().is_some_and(|p| p.tx_gtid.is_none());
        let by_gtid = gtid_auto_position
            && mysql_seed.as_ref().is_some_and(|s| !s.is_empty())
            && (checkpoint.is_some() || matches!(cfg.start, StartFrom::MysqlGtid(_)))
            && !unverifiable_mid_tx;

        if gtid.is_none() && !by_gtid {
            let found = server.binlogs.iter().find(|b| b.name == file);
            match found {
                None => {
                    let oldest = server
                        .binlogs
                        .first()
                        .map(|b| b.name.clone())
                        .unwrap_or_default();
                    let newer_than_all = server.binlogs.last().is_some_and(|b| file > b.name);
                    if newer_than_all || oldest.is_empty() || file > oldest {
                        return Err(SourceError::BadStart {
                            start: format!("{file}:{pos}"),
                            reason: format!(
                                "no binlog file of that name on the source (it has {})",
                                server
                                    .binlogs
                                    .iter()
                                    .map(|b| b.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                    return Err(SourceError::BinlogGone { file, oldest });
                }
                Some(b) if pos > b.size && b.size > 0 => {
                    // The list is from the preflight, before the start position was read: on
                    // a busy source the file has grown since (a `latest`/`snapshot` start is
                    // the end read just now). Only a fresh list can say the file is too short.
                    let size = preflight::binlog_files(&mut meta, &user, server.is_mariadb)
                        .await?
                        .into_iter()
                        .find(|f| f.name == file)
                        .map_or(b.size, |f| f.size);
                    if pos > size && size > 0 {
                        return Err(SourceError::BadStart {
                            start: format!("{file}:{pos}"),
                            reason: format!("the file is only {size} bytes long"),
                        });
                    }
                }
                _ => {}
            }
        }
        if let Some(state) = &gtid {
            if !server.is_mariadb {
                return Err(SourceError::BadStart {
                    start: format!("gtid:{state}"),
                    reason:
                        "a MariaDB GTID (D-S-N) was given but the source is MySQL; give its executed \
                         set (gtid:UUID:N-M, see SELECT @@GLOBAL.gtid_executed) or FILE:POS"
                            .into(),
                });
            }
            check_gtid_domains(&mut meta, state).await?;
        }

        // The GTID state to carry on: the start's, or the checkpoint's (a resume inside a
        // file reads no GTID_LIST, so domains quiet since would drop out of checkpoints).
        let seed_state = gtid.clone().or_else(|| {
            checkpoint
                .as_ref()
                .and_then(|cp| cp.gtid_state.clone())
                .filter(|_| server.is_mariadb)
        });
        let mut reader = Reader {
            last_boundary: Checkpoint {
                server: Some(here.clone()),
                file: file.clone(),
                pos,
                rows_done: 0,
                tx_gtid: None,
                gtid_state: seed_state.clone(),
                mysql_gtid_set: mysql_seed.clone().filter(|s| !s.is_empty()),
                event_mark: None,
                event_ts: 0,
                snapshot: None,
            },
            gtid_state: seed_state.unwrap_or_default(),
            mysql_gtids_complete: mysql_seed.is_some(),
            mysql_gtids: mysql_seed.clone().unwrap_or_default(),
            file_from_start: false,
            gtid_auto_position,
            file: file.as_str().into(),
            cfg,
            server,
            meta: Some(meta),
            payload: None,
            stream: None,
            seen_fde: false,
            tx: None,
            skip: Skip::None,
            prepared: Vec::new(),
            held_bytes: 0,
            end_at_dump: None,
            read_to: (Arc::from(""), 0),
            file_end: 4,
            early_ends: 0,
            finished: false,
            last_event_at: tokio::time::Instant::now(),
            pending_skip,
            plans: HashMap::new(),
            infos: HashMap::new(),
            schema_gen: 0,
            statement_dml: 0,
        };
        let auto = mysql_seed.as_ref().filter(|_| by_gtid);
        reader.start_dump(&file, pos, gtid.as_ref(), auto).await?;
        Ok(reader)
    }

    /// A reader with no server behind it, for binlog files: no information_schema, so columns
    /// are named from the binlog's own metadata or positionally (`@1`, `@2`, ...).
    pub fn offline(filter: TableFilter, encode: EncodeOptions, file: &str) -> Reader {
        let cfg = SourceConfig {
            // Never connected: `meta` is None and no dump is started.
            addr: SourceAddr::new("mysql://offline@127.0.0.1:1", None)
                .unwrap_or_else(|_| unreachable!("static URL")),
            server_id: 1,
            start: StartFrom::Earliest,
            filter,
            encode,
            heartbeat: Duration::ZERO,
            stop_at_end: true,
        };
        let boundary = Checkpoint {
            server: None,
            file: file.to_string(),
            pos: 4,
            rows_done: 0,
            tx_gtid: None,
            gtid_state: None,
            mysql_gtid_set: None,
            event_mark: None,
            event_ts: 0,
            snapshot: None,
        };
        Reader {
            cfg,
            server: ServerInfo {
                version: String::new(),
                is_mariadb: false,
                server_id: 0,
                server_uuid: None,
                binlogs: Vec::new(),
                warnings: Vec::new(),
            },
            meta: None,
            payload: None,
            stream: None,
            file: file.into(),
            seen_fde: true,
            tx: None,
            last_boundary: boundary,
            gtid_state: GtidState::default(),
            mysql_gtids: MysqlGtidSet::default(),
            mysql_gtids_complete: false,
            // A file is decoded from its first event, so its PREVIOUS_GTIDS counts.
            file_from_start: true,
            gtid_auto_position: false,
            skip: Skip::None,
            prepared: Vec::new(),
            held_bytes: 0,
            end_at_dump: None,
            read_to: (Arc::from(""), 0),
            file_end: 4,
            early_ends: 0,
            finished: false,
            last_event_at: tokio::time::Instant::now(),
            pending_skip: None,
            plans: HashMap::new(),
            infos: HashMap::new(),
            schema_gen: 0,
            statement_dml: 0,
        }
    }

    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// The binlog position everything handed on so far ends at, when that is between
    /// transactions (`None` inside one). A snapshot chunk read at a binlog position is handed
    /// on once this reaches it (see `snapshot`).
    pub fn boundary_position(&self) -> Option<(String, u64)> {
        if self.tx.is_some() {
            return None;
        }
        let read = (self.file.to_string(), self.file_end);
        let boundary = (self.last_boundary.file.clone(), self.last_boundary.pos);
        Some(if crate::snapshot::binlog_cmp(&read, &boundary).is_ge() {
            read
        } else {
            boundary
        })
    }

    /// Counts the DDL the reader has handed on past; a snapshot re-reads a table's plan when
    /// it moves.
    pub fn schema_generation(&self) -> u64 {
        self.schema_gen
    }

    /// Where a new dump must start to lose and repeat nothing that was already handed on.
    pub fn resume_point(&self) -> Checkpoint {
        // A prepared XA transaction's rows are only in memory: read it again.
        if let Some(p) = self.prepared.first() {
            return p.before.clone();
        }
        match &self.tx {
            // An XA transaction's rows are held, not handed on: none of them is delivered.
            Some(tx) if !tx.xa => Checkpoint {
                server: self.last_boundary.server.clone(),
                file: self.file.to_string(),
                pos: tx.start_pos,
                rows_done: tx.rows,
                tx_gtid: tx
                    .gtid
                    .as_deref()
                    .filter(|_| tx.rows > 0)
                    .map(str::to_string),
                gtid_state: (!self.gtid_state.is_empty()).then(|| self.gtid_state.clone()),
                mysql_gtid_set: self.mysql_checkpoint_set(),
                event_mark: tx.done.filter(|_| tx.rows > 0),
                event_ts: self.last_boundary.event_ts,
                snapshot: None,
            },
            _ => self.last_boundary.clone(),
        }
    }

    async fn start_dump(
        &mut self,
        file: &str,
        pos: u64,
        gtid: Option<&GtidState>,
        mysql_gtids: Option<&MysqlGtidSet>,
    ) -> Result<(), SourceError> {
        let mut conn = self.cfg.addr.connect().await?;
        let nanos = self
            .cfg
            .heartbeat
            .as_nanos()
            .min(u128::from(u32::MAX) * 1_000_000_000);
        let mut setup = flavor::dump_setup(&self.server.version, self.server.is_mariadb, nanos);
        if self.server.is_mariadb {
            if let Some(state) = gtid {
                setup.push(format!("SET @slave_connect_state='{state}'"));
                setup.push("SET @slave_gtid_strict_mode=1".to_string());
            }
        }
        for stmt in setup {
            conn.query_drop(&stmt)
                .await
                .map_err(SourceError::Connection)?;
        }
        if mysql_gtids.is_none() && gtid.is_none() && pos > u64::from(u32::MAX) {
            // COM_BINLOG_DUMP carries a 32-bit offset (the client library would truncate it
            // without a word and the dump would start somewhere else).
            return Err(SourceError::BadStart {
                start: format!("{file}:{pos}"),
                reason: "the offset is past 4 GiB, which a binlog dump by file and offset cannot \
                         request; resume by GTID (MySQL gtid_mode=ON; MariaDB --start gtid:STATE \
                         with the checkpoint's gtidState)"
                    .into(),
            });
        }
        self.file_end = pos;
        let mut request = dump_request(self.cfg.server_id, file, pos, mysql_gtids);
        if self.cfg.stop_at_end {
            request = request.with_non_blocking();
            // Only for dumps by file and offset: a GTID dump starts wherever the server finds
            // the GTID, so how far it got cannot be compared with the end.
            self.end_at_dump = None;
            let by_position = gtid.is_none() && mysql_gtids.is_none() && !file.is_empty();
            if by_position && (self.read_to.0.as_ref(), self.read_to.1) < (file, pos) {
                self.read_to = (Arc::from(file), pos);
            }
            if let Some(meta) = self.meta.as_mut().filter(|_| by_position) {
                let user = self.cfg.addr.user();
                let (f, p, _) = preflight::binlog_end(
                    meta,
                    &user,
                    &self.server.version,
                    self.server.is_mariadb,
                )
                .await?;
                self.end_at_dump = Some((f, p));
            }
        }
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| self.map_dump_error(e))?;
        match mysql_gtids {
            Some(set) => debug!(gtid_set = %set, "binlog dump started by GTID"),
            None => debug!(file, pos, "binlog dump started"),
        }
        self.stream = Some(stream);
        self.last_event_at = tokio::time::Instant::now();
        self.seen_fde = false;
        self.tx = None;
        self.plans.clear();
        Ok(())
    }

    fn map_dump_error(&self, e: mysql_async::Error) -> SourceError {
        if let mysql_async::Error::Server(s) = &e {
            let m = s.message.clone();
            return match s.code {
                1236 if m.contains("Could not find first log file name") => {
                    SourceError::BinlogGone {
                        file: self.last_boundary.file.clone(),
                        oldest: self
                            .server
                            .binlogs
                            .first()
                            .map(|b| b.name.clone())
                            .unwrap_or_default(),
                    }
                }
                1236 if m.contains("server_id") || m.contains("server_uuid") => {
                    SourceError::ServerIdInUse {
                        server_id: self.cfg.server_id,
                        message: m,
                    }
                }
                1236 | 1941 => SourceError::BadStart {
                    start: self.last_boundary.start().to_string(),
                    reason: m,
                },
                4052 => SourceError::ServerIdInUse {
                    server_id: self.cfg.server_id,
                    message: m,
                },
                1227 => SourceError::MissingPrivilege {
                    user: self.cfg.addr.user(),
                    privilege: "REPLICATION SLAVE",
                    grant: "REPLICATION SLAVE",
                    message: m,
                },
                _ => SourceError::Connection(e),
            };
        }
        self.cfg.addr.classify(e)
    }

    /// Reconnects after a transient error and resumes from [`Reader::resume_point`]. One
    /// attempt, bounded by [`Reader::connect_timeout`] (a black-holed path would otherwise
    /// hold it for ever); the caller retries with backoff.
    pub async fn reconnect(&mut self) -> Result<(), SourceError> {
        let cp = self.resume_point();
        // Dropped first: whatever happens next, no half-read dump is read on.
        self.stream = None;
        let limit = self.connect_timeout();
        match tokio::time::timeout(limit, self.reconnect_at(cp)).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Silent {
                seconds: limit.as_secs(),
            }),
        }
    }

    /// How long one reconnect attempt may take: three heartbeat periods, at least 10 s (a
    /// server that just started can be slow to answer).
    pub fn connect_timeout(&self) -> Duration {
        (self.cfg.heartbeat * 3).max(Duration::from_secs(10))
    }

    async fn reconnect_at(&mut self, cp: Checkpoint) -> Result<(), SourceError> {
        self.meta = Some(self.cfg.addr.connect().await?);
        self.skip = Skip::None;
        // Read again from `cp`, which is before every one of them.
        self.prepared.clear();
        self.held_bytes = 0;
        self.pending_skip = PendingSkip::of(&cp);
        self.file = cp.file.as_str().into();
        self.last_boundary = Checkpoint {
            rows_done: 0,
            tx_gtid: None,
            ..cp.clone()
        };
        info!(file = %cp.file, pos = cp.pos, skip_rows = cp.rows_done, "resuming the binlog dump");
        let auto = cp
            .mysql_gtid_set
            .as_ref()
            .filter(|_| self.gtid_auto_position);
        self.start_dump(&cp.file, cp.pos, None, auto).await
    }

    /// Waits for the next raw event. Cancel-safe (nothing is lost when the future is dropped),
    /// so it can race a timer in `select!`; [`Reader::handle`] is not.
    pub async fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        let watchdog = self.watchdog();
        let deadline = self.last_event_at;
        let Some(stream) = self.stream.as_mut() else {
            if self.finished {
                return Ok(None);
            }
            // No dump open (a reconnect failed): that is a lost connection, never the end.
            return Err(SourceError::DumpEnded {
                message: "no binlog dump is open (the source connection was lost)".into(),
            });
        };
        use futures::FutureExt;
        // mysql_async parses each packet with mysql_common, which panics on some malformed
        // events: a broken packet from the source is an error, not a crashed publisher.
        let next = std::panic::AssertUnwindSafe(stream.next()).catch_unwind();
        let next = match watchdog {
            // Measured from the last event, not from this call: the pipeline cancels and
            // repeats this call on every flush tick.
            Some(limit) => match tokio::time::timeout_at(deadline + limit, next).await {
                Ok(r) => r,
                Err(_) => {
                    self.stream = None;
                    return Err(SourceError::Silent {
                        seconds: limit.as_secs(),
                    });
                }
            },
            None => next.await,
        };
        if matches!(next, Ok(Some(Ok(_)))) {
            self.last_event_at = tokio::time::Instant::now();
        }
        match next {
            Err(_) => {
                self.stream = None;
                Err(self.unsupported(
                    "binlog event",
                    self.last_boundary.pos,
                    "malformed event from the source (the parser failed)",
                ))
            }
            Ok(None) => {
                self.stream = None;
                self.stream_ended()
            }
            Ok(Some(Ok(ev))) => Ok(Some(ev)),
            Ok(Some(Err(e))) => Err(self.map_dump_error(e)),
        }
    }

    /// The server closed the dump cleanly. Only a `stop_at_end` dump that reached the end
    /// known when it started is finished; anything else is a dropped dump to resume (a
    /// server can end a dump early, e.g. when another connection registers the same server
    /// id), and a dump that keeps ending early without progress is an error.
    fn stream_ended(&mut self) -> Result<Option<Event>, SourceError> {
        let reached = |end: &(String, u64), at: &(Arc<str>, u64)| {
            (at.0.as_ref(), at.1) >= (end.0.as_str(), end.1)
        };
        match (&self.end_at_dump, self.cfg.stop_at_end) {
            (Some(end), true) if !reached(end, &self.read_to) => {
                self.early_ends += 1;
                let message = format!(
                    "the source ended the binlog dump at {}:{}, before the end {}:{} it reported when the dump started",
                    self.read_to.0, self.read_to.1, end.0, end.1
                );
                if self.early_ends > 5 {
                    return Err(SourceError::Unsupported {
                        what: "binlog dump".into(),
                        file: self.read_to.0.to_string(),
                        pos: self.read_to.1,
                        reason: format!("{message}, {} times in a row", self.early_ends),
                    });
                }
                Err(SourceError::DumpEnded { message })
            }
            (_, true) => {
                self.finished = true;
                Ok(None)
            }
            (_, false) => Err(SourceError::DumpEnded {
                message: "the source ended the binlog dump of a live stream".into(),
            }),
        }
    }

    /// Silence after which a live dump is taken as dead: three heartbeat periods (none
    /// when no heartbeat was asked for).
    fn watchdog(&self) -> Option<Duration> {
        (!self.cfg.heartbeat.is_zero()).then(|| self.cfg.heartbeat * 3)
    }

    fn unsupported(&self, what: &str, pos: u64, reason: &str) -> SourceError {
        SourceError::Unsupported {
            what: what.to_string(),
            file: self.file.to_string(),
            pos,
            reason: reason.to_string(),
        }
    }

    fn begin_tx(
        &mut self,
        start_pos: u64,
        gtid: Option<Arc<str>>,
        maria: Option<MariaGtid>,
        standalone: bool,
    ) -> Result<(), SourceError> {
        let mut done = None;
        if let Some(p) = self.pending_skip.take() {
            let rows = resume::rows_to_skip(p.tx_gtid.as_deref(), gtid.as_deref(), p.rows)
                .map_err(|wrong| SourceError::WrongResumeTransaction {
                    received: wrong.to_string(),
                    expected: wrong.expected,
                    rows_done: wrong.rows_done,
                    file: p.file,
                    pos: p.pos,
                })?;
            self.skip = match p.mark {
                Some(m) if rows > 0 => {
                    done = Some(m);
                    Skip::Mark(m)
                }
                _ if rows > 0 => Skip::Rows(rows),
                _ => Skip::None,
            };
        }
        if let Some(open) = &self.tx {
            if open.rows > 0 {
                warn!(file = %self.file, pos = open.start_pos, "transaction without a commit event; treating the next one as its end");
            }
        }
        self.tx = Some(Tx {
            start_pos,
            gtid,
            maria_gtid: maria,
            mysql_gtid: None,
            rows: 0,
            explicit_begin: false,
            standalone,
            rows_events: 0,
            done,
            xa: false,
            xid: None,
            held: Vec::new(),
        });
        Ok(())
    }

    /// XA PREPARE: the open transaction's rows stay held until its XA COMMIT, and
    /// checkpoints stay before it.
    fn xa_prepared(&mut self, xid: String, pos: u64) {
        let Some(tx) = self.tx.as_mut().filter(|t| t.xa) else {
            return;
        };
        let rows = std::mem::take(&mut tx.held);
        let bytes = rows.iter().map(|r| r.body.len()).sum();
        debug!(file = %self.file, pos, xid = %xid, rows = rows.len(), "XA transaction prepared; its rows wait for XA COMMIT");
        self.prepared.push(PreparedXa {
            xid,
            rows,
            bytes,
            // Not advanced yet by this transaction: the boundary at its start.
            before: self.last_boundary.clone(),
        });
    }

    /// XA COMMIT: the prepared rows go out now, after every transaction committed between.
    fn xa_commit(&mut self, xid: &str, pos: u64, out: &mut Vec<Item>) {
        let Some(i) = self.prepared.iter().position(|p| p.xid == xid) else {
            warn!(file = %self.file, pos, xid, "XA COMMIT of a transaction prepared before the start position; its rows were not read and are not published");
            return;
        };
        let p = self.prepared.remove(i);
        self.held_bytes = self.held_bytes.saturating_sub(p.bytes);
        out.extend(p.rows.into_iter().map(|mut r| {
            // A checkpoint inside them would point at the PREPARE's offset with no way
            // to resume there.
            r.position.resumable = false;
            Item::Row(r)
        }));
    }

    fn xa_rollback(&mut self, xid: &str, pos: u64) {
        if let Some(i) = self.prepared.iter().position(|p| p.xid == xid) {
            let p = self.prepared.remove(i);
            self.held_bytes = self.held_bytes.saturating_sub(p.bytes);
            debug!(file = %self.file, pos, xid, rows = p.rows.len(), "XA transaction rolled back; its rows are dropped");
        }
    }

    fn commit(&mut self, end: u64, ts: u32, out: &mut Vec<Item>) {
        if let Some(mut tx) = self.tx.take() {
            // Rows still held here were never prepared (a one-phase XA commit): they commit
            // with the transaction.
            let held = std::mem::take(&mut tx.held);
            self.held_bytes = self
                .held_bytes
                .saturating_sub(held.iter().map(|r| r.body.len()).sum());
            let resumable = self.prepared.is_empty();
            out.extend(held.into_iter().map(|mut r| {
                r.position.resumable = resumable;
                Item::Row(r)
            }));
            if let Some(g) = tx.maria_gtid {
                self.gtid_state.apply(g);
            }
            if let Some((uuid, tag, gno)) = &tx.mysql_gtid {
                self.mysql_gtids.add(*uuid, tag, *gno);
            }
        }
        self.skip = Skip::None;
        let cp = Checkpoint {
            server: self.last_boundary.server.clone(),
            file: self.file.to_string(),
            pos: end,
            rows_done: 0,
            tx_gtid: None,
            gtid_state: (!self.gtid_state.is_empty()).then(|| self.gtid_state.clone()),
            mysql_gtid_set: self.mysql_checkpoint_set(),
            event_mark: None,
            event_ts: ts,
            snapshot: None,
        };
        self.last_boundary = cp.clone();
        out.push(Item::Commit(self.held_back(cp)));
    }

    /// The checkpoint to hand on for boundary `cp`: `cp` itself, or while an XA transaction
    /// is prepared, the boundary before the oldest one (with `cp`'s time, for the lag).
    fn held_back(&self, cp: Checkpoint) -> Checkpoint {
        match self.prepared.first() {
            None => cp,
            Some(p) => Checkpoint {
                event_ts: cp.event_ts,
                ..p.before.clone()
            },
        }
    }

    fn mysql_checkpoint_set(&self) -> Option<MysqlGtidSet> {
        (self.mysql_gtids_complete && !self.mysql_gtids.is_empty())
            .then(|| self.mysql_gtids.clone())
    }

    fn invalidate_schemas(&mut self) {
        self.infos.clear();
        self.schema_gen += 1;
    }

    async fn table_info(
        &mut self,
        schema_name: &str,
        table: &str,
    ) -> Result<Option<Arc<TableInfo>>, SourceError> {
        let key = (schema_name.to_string(), table.to_string());
        if let Some(info) = self.infos.get(&key) {
            return Ok(info.clone());
        }
        let Some(meta) = self.meta.as_mut() else {
            return Ok(None);
        };
        let loaded = match schema::load_table(meta, schema_name, table, self.server.is_mariadb)
            .await
        {
            Ok(v) => v,
            Err(_) => {
                // The metadata connection may have idled out; one fresh try before failing.
                let mut fresh = self.cfg.addr.connect().await?;
                let v = schema::load_table(&mut fresh, schema_name, table, self.server.is_mariadb)
                    .await?;
                self.meta = Some(fresh);
                v
            }
        };
        let info = loaded.map(Arc::new);
        self.infos.insert(key, info.clone());
        Ok(info)
    }

    async fn on_table_map(&mut self, ev: &Event, pos: u64) -> Result<(), SourceError> {
        let tme: TableMapEvent<'_> = ev
            .read_event()
            .map_err(|e| self.unsupported("TABLE_MAP event", pos, &e.to_string()))?;
        let table_id = tme.table_id();
        if let Some(entry) = self.plans.get(&table_id) {
            if entry.schema_gen == self.schema_gen && entry.tme_bytes == ev.data() {
                return Ok(());
            }
        }
        let schema_name = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let plan = if self.cfg.filter.captures(&schema_name, &table) {
            let info = self.table_info(&schema_name, &table).await?;
            let has_names =
                mysql_common::binlog::events::OptionalMetaExtractor::new(tme.iter_optional_meta())
                    .map(|m| m.iter_column_name().next().is_some())
                    .unwrap_or(false);
            if info.is_none() && !has_names && self.meta.is_some() {
                return Err(SourceError::Schema {
                    schema: schema_name.clone(),
                    table: table.clone(),
                    message: format!(
                        "the table is not in information_schema (dropped since this binlog position, or the \
                         user lacks SELECT on it) and the binlog carries no column names \
                         (binlog_row_metadata=FULL would); grant SELECT, or exclude it with --exclude '{schema_name}.{table}'"
                    ),
                });
            }
            Some(Arc::new(
                TablePlan::build(&tme, info.as_deref()).map_err(Box::new)?,
            ))
        } else {
            None
        };
        self.plans.insert(
            table_id,
            PlanEntry {
                schema_gen: self.schema_gen,
                tme_bytes: ev.data().to_vec(),
                plan,
            },
        );
        Ok(())
    }

    /// [`Reader::handle`], with a panic inside the binlog parser (mysql_common has a few on
    /// malformed input) turned into an error naming the position instead of a crash.
    pub async fn handle_guarded(
        &mut self,
        ev: Event,
        out: &mut Vec<Item>,
    ) -> Result<(), SourceError> {
        use futures::FutureExt;
        let h = ev.header();
        let pos = u64::from(h.log_pos()).saturating_sub(u64::from(h.event_size()));
        let ty = h.event_type_raw();
        match std::panic::AssertUnwindSafe(self.handle(ev, out))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(self.unsupported(
                    &format!("event of type {ty}"),
                    pos,
                    &format!("malformed event (the parser failed: {msg})"),
                ))
            }
        }
    }

    /// Turns one event into items (may query information_schema on a new table map).
    pub async fn handle(&mut self, ev: Event, out: &mut Vec<Item>) -> Result<(), SourceError> {
        use event_type as t;
        let h = ev.header();
        let ty = h.event_type_raw();
        let (pos, end) = match (h.log_pos(), self.payload) {
            // Inside a compressed transaction: positions are the payload event's.
            (0, Some((p, e))) => (p, e),
            // Artificial events (the dump's first ROTATE and FORMAT_DESCRIPTION) have none.
            (0, _) => (0, 0),
            (log_pos, _) => {
                // A heartbeat reports the server's position, possibly in the next file: only
                // widened once this file is past 4 GiB.
                let end = if ty == t::HEARTBEAT && self.file_end <= u64::from(u32::MAX) {
                    u64::from(log_pos)
                } else {
                    widen_log_pos(self.file_end, log_pos)
                };
                if ty != t::HEARTBEAT {
                    self.file_end = end;
                }
                (end.saturating_sub(u64::from(h.event_size())), end)
            }
        };
        // Progress only matters for a stop-at-end dump by position (see `stream_ended`).
        if self.end_at_dump.is_some()
            && end > 0
            && (self.file.as_ref(), end) > (self.read_to.0.as_ref(), self.read_to.1)
        {
            self.read_to = (self.file.clone(), end);
            self.early_ends = 0;
        }
        let ts = h.timestamp();
        match ty {
            t::ROTATE => {
                let rot: RotateEvent<'_> = ev
                    .read_event()
                    .map_err(|e| self.unsupported("ROTATE event", pos, &e.to_string()))?;
                let raw = rot.name_raw();
                let len = if self.seen_fde {
                    raw.len()
                } else {
                    strip_rotate_checksum(&ev, raw)
                };
                let name = String::from_utf8_lossy(&raw[..len]).into_owned();
                self.file_from_start = rot.position() <= 4;
                self.file = name.as_str().into();
                self.file_end = rot.position();
                if self.tx.is_none() {
                    self.last_boundary.file = name;
                    self.last_boundary.pos = rot.position();
                }
            }
            t::FORMAT_DESCRIPTION => {
                let data = ev.data();
                let version = data.get(2..52).map(|v| {
                    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                    String::from_utf8_lossy(&v[..end]).into_owned()
                });
                if let Some(v) = version.filter(|v| pre_ga_event_numbering(v)) {
                    return Err(self.unsupported(
                        "FORMAT_DESCRIPTION event",
                        pos,
                        &format!(
                            "written by MySQL {v}, a pre-GA 5.1 development build whose event \
                             type numbers differ from every released server; such binlogs are \
                             not supported (their rows would be misread)"
                        ),
                    ));
                }
                self.seen_fde = true;
            }
            t::MARIA_GTID => {
                let (g, flags2) = mariadb_gtid(ev.data(), h.server_id())
                    .ok_or_else(|| self.unsupported("MariaDB GTID event", pos, "body too short"))?;
                self.begin_tx(pos, Some(g.to_string().into()), Some(g), flags2 & 1 != 0)?;
                // FL_PREPARED_XA: the rows of an XA transaction up to its XA PREPARE.
                if flags2 & 0x40 != 0 {
                    if let Some(tx) = self.tx.as_mut() {
                        tx.xa = true;
                        tx.xid = query::mariadb_gtid_xid(ev.data());
                    }
                }
            }
            t::MARIA_GTID_LIST => {
                let list = mariadb_gtid_list(ev.data()).ok_or_else(|| {
                    self.unsupported("MariaDB GTID_LIST event", pos, "body too short")
                })?;
                for g in list {
                    let newer = self
                        .gtid_state
                        .0
                        .get(&g.domain)
                        .is_none_or(|cur| cur.seq < g.seq);
                    if newer {
                        self.gtid_state.apply(g);
                    }
                }
            }
            t::GTID | t::GTID_TAGGED => {
                let g: GtidEvent = ev
                    .read_event()
                    .map_err(|e| self.unsupported("GTID event", pos, &e.to_string()))?;
                let tag = g.tag().map(|t| t.as_str().to_string()).unwrap_or_default();
                let text = if tag.is_empty() {
                    format!("{}:{}", uuid_text(&g.sid()), g.gno())
                } else {
                    format!("{}:{}:{}", uuid_text(&g.sid()), tag, g.gno())
                };
                self.begin_tx(pos, Some(text.into()), None, false)?;
                if let Some(tx) = self.tx.as_mut() {
                    tx.mysql_gtid = Some((g.sid(), tag, g.gno()));
                }
            }
            t::PREVIOUS_GTIDS if self.file_from_start => {
                // mysql_common reserves room for the count the event claims before reading
                // it; a damaged count would abort the process on allocation, not fail.
                if let Some(reason) = implausible_previous_gtids(ev.data()) {
                    return Err(self.unsupported("PREVIOUS_GTIDS event", pos, &reason));
                }
                let prev: PreviousGtidsEvent<'_> = ev
                    .read_event()
                    .map_err(|e| self.unsupported("PREVIOUS_GTIDS event", pos, &e.to_string()))?;
                for sid in prev.sids() {
                    let tag = sid.tag().map(|t| t.as_str()).unwrap_or("");
                    for iv in sid.intervals() {
                        if iv.start() == 0 || iv.end() <= iv.start() {
                            return Err(self.unsupported(
                                "PREVIOUS_GTIDS event",
                                pos,
                                &format!(
                                    "interval [{}, {}) of server {} is empty or starts at 0",
                                    iv.start(),
                                    iv.end(),
                                    uuid_text(&sid.uuid())
                                ),
                            ));
                        }
                        // Wire intervals are end-exclusive.
                        self.mysql_gtids.add_range(
                            sid.uuid(),
                            tag,
                            iv.start(),
                            iv.end().saturating_sub(1),
                        );
                    }
                }
                // Everything before this file, plus all of it from here on: complete.
                self.mysql_gtids_complete = true;
                // No transaction of this file has passed yet, so the boundary at its start
                // has exactly this set (a resume from it need not fall back to file:pos).
                if self.tx.is_none() {
                    self.last_boundary.mysql_gtid_set = self.mysql_checkpoint_set();
                }
            }
            t::ANONYMOUS_GTID => self.begin_tx(pos, None, None, false)?,
            t::QUERY => {
                let q: QueryEvent<'_> = ev
                    .read_event()
                    .map_err(|e| self.unsupported("QUERY event", pos, &e.to_string()))?;
                let sql = q.query();
                match classify(&sql) {
                    QueryKind::Begin => {
                        if self.tx.is_none() {
                            self.begin_tx(pos, None, None, false)?;
                        }
                        if let Some(tx) = self.tx.as_mut() {
                            tx.explicit_begin = true;
                            // MySQL opens an XA transaction with an XA START query.
                            if let Some(XaStatement::Start(xid)) = query::xa_statement(&sql) {
                                tx.xa = true;
                                tx.xid = Some(xid);
                            }
                        }
                    }
                    QueryKind::Commit | QueryKind::Rollback => {
                        match query::xa_statement(&sql) {
                            Some(XaStatement::Commit { xid, .. }) => self.xa_commit(&xid, pos, out),
                            Some(XaStatement::Rollback(xid)) => self.xa_rollback(&xid, pos),
                            _ => {}
                        }
                        self.commit(end, ts, out)
                    }
                    kind => {
                        if kind == QueryKind::Ddl {
                            debug!(file = %self.file, pos, "DDL: table schemas will be re-read");
                            self.invalidate_schemas();
                        }
                        if kind == QueryKind::StatementDml {
                            self.statement_dml += 1;
                            warn!(file = %self.file, pos, query = %sql.chars().take(200).collect::<String>(),
                                "a row change was logged as a statement (session binlog_format=STATEMENT/MIXED); \
                                 its rows cannot be captured");
                        }
                        if query::opens_transaction(&sql) {
                            // MySQL 8.0.21+ CREATE TABLE ... SELECT: its rows follow, and
                            // the transaction ends at their XID.
                            if self.tx.is_none() {
                                self.begin_tx(pos, None, None, false)?;
                            }
                            if let Some(tx) = self.tx.as_mut() {
                                tx.explicit_begin = true;
                            }
                        } else if query_ends_tx(self.tx.as_ref()) {
                            self.commit(end, ts, out);
                        }
                    }
                }
            }
            t::MARIA_QUERY_COMPRESSED => {
                // A compressed statement is never BEGIN/COMMIT (those are too short to compress);
                // it may be DDL, so re-read schemas to be safe.
                self.invalidate_schemas();
                if self.tx.as_ref().is_none_or(|tx| tx.standalone) {
                    self.commit(end, ts, out);
                }
            }
            t::MARIA_ROWS_COMPRESSED_FIRST..=t::MARIA_ROWS_COMPRESSED_LAST => {
                return Err(self.unsupported(
                    "MariaDB compressed rows event",
                    pos,
                    "the source has log_bin_compress=ON; turn it off (SET GLOBAL log_bin_compress=OFF) so row events are readable",
                ));
            }
            t::XID => self.commit(end, ts, out),
            t::INCIDENT => {
                let (number, message) = incident(ev.data());
                return Err(SourceError::Incident {
                    file: self.file.to_string(),
                    pos,
                    next: end,
                    number,
                    message,
                });
            }
            t::XA_PREPARE => {
                let (one_phase, xid) = query::xa_prepare_xid(ev.data())
                    .ok_or_else(|| self.unsupported("XA_PREPARE event", pos, "malformed XID"))?;
                if !one_phase {
                    self.xa_prepared(xid, pos);
                }
                // One phase (MySQL's XA COMMIT ... ONE PHASE): commits here, rows and all.
                self.commit(end, ts, out);
            }
            t::TABLE_MAP => {
                if self.tx.is_none() {
                    self.begin_tx(pos, None, None, false)?;
                }
                self.on_table_map(&ev, pos).await?;
            }
            t::WRITE_V1
            | t::UPDATE_V1
            | t::DELETE_V1
            | t::WRITE_V2
            | t::UPDATE_V2
            | t::DELETE_V2
            | t::PARTIAL_UPDATE => {
                self.on_rows(&ev, ty, pos, ts, out)?;
            }
            t::TRANSACTION_PAYLOAD => {
                // mysql_async decompresses the payload itself and yields its events next, but
                // drops a payload it cannot decompress without a word: check it here.
                let tpe: TransactionPayloadEvent<'_> = ev.read_event().map_err(|e| {
                    self.unsupported("TRANSACTION_PAYLOAD event", pos, &e.to_string())
                })?;
                let mut data = Vec::new();
                tpe.decompressed()
                    .and_then(|mut r| std::io::Read::read_to_end(&mut r, &mut data))
                    .map_err(|e| {
                        self.unsupported(
                            "TRANSACTION_PAYLOAD event",
                            pos,
                            &format!("cannot decompress: {e}"),
                        )
                    })?;
                if data.len() as u64 != tpe.uncompressed_size() {
                    return Err(self.unsupported(
                        "TRANSACTION_PAYLOAD event",
                        pos,
                        &format!(
                            "decompressed to {} bytes, header says {}",
                            data.len(),
                            tpe.uncompressed_size()
                        ),
                    ));
                }
                self.payload = Some((pos, end));
            }
            t::HEARTBEAT if self.tx.is_none() && end > 0 => {
                let file = String::from_utf8_lossy(ev.data())
                    .trim_end_matches('\0')
                    .to_string();
                if !file.is_empty() && file.as_str() != &*self.file {
                    self.file = file.as_str().into();
                }
                let cp = Checkpoint {
                    server: self.last_boundary.server.clone(),
                    file: self.file.to_string(),
                    pos: end,
                    rows_done: 0,
                    tx_gtid: None,
                    gtid_state: (!self.gtid_state.is_empty()).then(|| self.gtid_state.clone()),
                    mysql_gtid_set: self.mysql_checkpoint_set(),
                    // A heartbeat means the source has nothing newer: caught up as of now.
                    event_mark: None,
                    event_ts: crate::metrics::now_unix() as u32,
                    snapshot: None,
                };
                self.last_boundary = cp.clone();
                out.push(Item::Idle(self.held_back(cp)));
            }
            _ => {}
        }
        Ok(())
    }

    fn on_rows(
        &mut self,
        ev: &Event,
        ty: u8,
        pos: u64,
        ts: u32,
        out: &mut Vec<Item>,
    ) -> Result<(), SourceError> {
        use event_type as t;
        let data = ev
            .read_data()
            .map_err(|e| self.unsupported("ROWS event", pos, &e.to_string()))?;
        let Some(EventData::RowsEvent(rows)) = data else {
            return Err(self.unsupported("ROWS event", pos, "not parsed as a rows event"));
        };
        let table_id = rows.table_id();
        // Every ROWS event is numbered, captured or not: the numbers must not depend on the
        // filter (see `EventMark`).
        let ord = match self.tx.as_mut() {
            Some(tx) => {
                tx.rows_events += 1;
                tx.rows_events - 1
            }
            None => 0,
        };
        let entry = self
            .plans
            .get(&table_id)
            .ok_or_else(|| SourceError::UnknownTable {
                table_id,
                file: self.file.to_string(),
                pos,
            })?;
        let Some(plan) = entry.plan.clone() else {
            return Ok(());
        };
        let kind = match ty {
            t::WRITE_V1 | t::WRITE_V2 => ChangeKind::Insert,
            t::DELETE_V1 | t::DELETE_V2 => ChangeKind::Delete,
            _ => ChangeKind::Update,
        };
        let no_prepared_xa = self.prepared.is_empty();
        let Some(tx) = self.tx.as_mut() else {
            return Err(SourceError::UnknownTable {
                table_id,
                file: self.file.to_string(),
                pos,
            });
        };
        let xa = tx.xa;
        // Behind a prepared XA transaction no checkpoint may point inside a transaction.
        let resumable = !xa && no_prepared_xa;
        let mut done = tx.done;
        let mut held = std::mem::take(&mut tx.held);
        let mut held_bytes = self.held_bytes;
        let skip = &mut self.skip;
        let mut index = 0u32;
        let n = decode::decode_rows(
            &plan,
            &rows,
            kind,
            ty == t::PARTIAL_UPDATE,
            self.cfg.encode,
            &self.file,
            pos,
            tx.start_pos,
            tx.gtid.as_ref(),
            ts,
            tx.rows,
            |mut row| {
                // The delete half of a key change shares its row's index; the row is done
                // once its update is.
                let half = row.position.key_change;
                let i = index;
                index += u32::from(!half);
                let mark = EventMark {
                    event: ord,
                    rows: i + u32::from(!half),
                };
                if done.is_none_or(|d| (d.event, d.rows) < (mark.event, mark.rows)) {
                    done = Some(mark);
                }
                if skip.take(ord, i) {
                    return;
                }
                row.position.rows_event = ord;
                row.position.event_row = i;
                row.position.resumable = resumable;
                if xa {
                    held_bytes += row.body.len();
                    held.push(row);
                } else {
                    out.push(Item::Row(row));
                }
            },
        )?;
        tx.rows += n;
        tx.done = done;
        tx.held = held;
        self.held_bytes = held_bytes;
        if self.held_bytes > XA_HELD_BYTES_MAX {
            let xid = self
                .tx
                .as_ref()
                .and_then(|t| t.xid.clone())
                .unwrap_or_else(|| "(being prepared)".into());
            return Err(SourceError::XaTooLarge {
                xid,
                file: self.file.to_string(),
                pos,
                limit: XA_HELD_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// The dump request: by file and offset, or (MySQL, `mysql_gtids` given) COM_BINLOG_DUMP_GTID
/// with the executed set and no file name, so the server finds the first missing transaction.
fn dump_request<'a>(
    server_id: u32,
    file: &'a str,
    pos: u64,
    mysql_gtids: Option<&MysqlGtidSet>,
) -> BinlogStreamRequest<'a> {
    let request = BinlogStreamRequest::new(server_id);
    match mysql_gtids {
        Some(set) => request
            .with_gtid()
            .with_pos(4)
            .with_gtid_set(crate::mysql_gtid::to_sids(set)),
        None => request.with_filename(file.as_bytes()).with_pos(pos),
    }
}

/// MariaDB replays a domain missing from `@slave_connect_state` from its oldest binlog without
/// an error, so every domain the server has must be named in a GTID start.
async fn check_gtid_domains(conn: &mut Conn, requested: &GtidState) -> Result<(), SourceError> {
    let state: Option<String> = conn
        .query_first("SELECT @@gtid_binlog_state")
        .await
        .map_err(SourceError::Connection)?;
    // The binlog state holds one entry per (domain, server id): a domain that two servers
    // wrote (every failover) appears twice, so it is read entry by entry, not as a position.
    let state = state.unwrap_or_default();
    let mut domains = std::collections::BTreeSet::new();
    for entry in state.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let g: MariaGtid = entry.parse().map_err(|e| SourceError::BadStart {
            start: format!("gtid:{requested}"),
            reason: format!("cannot read the server's @@gtid_binlog_state: {e}"),
        })?;
        domains.insert(g.domain);
    }
    let server = state;
    let missing: Vec<u32> = domains
        .into_iter()
        .filter(|d| !requested.0.contains_key(d))
        .collect();
    if !missing.is_empty() {
        return Err(SourceError::BadStart {
            start: format!("gtid:{requested}"),
            reason: format!(
                "the set names no position for GTID domain(s) {missing:?} that the source has \
                 (its state is {server}); MariaDB would silently replay those domains from the \
                 oldest binlog. Add a DOMAIN-SERVER-SEQ entry for each"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod event_guard_tests {
    use super::pre_ga_event_numbering;

    #[test]
    fn a_previous_gtids_count_larger_than_its_body_is_refused() {
        use super::implausible_previous_gtids;
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend([0u8; 16 + 8]);
        assert_eq!(implausible_previous_gtids(&body), None);
        let mut huge = 0x00ad_adad_0000_0000u64.to_le_bytes().to_vec();
        huge.extend([0u8; 40]);
        let why = implausible_previous_gtids(&huge).expect("refused");
        assert!(
            why.contains("claims 48886129511890944 server UUIDs"),
            "{why}"
        );
        // Tagged format (MySQL 8.4): format byte on top, count in bits 8..56.
        let tagged = ((1u64 << 56) | (5u64 << 8)).to_le_bytes().to_vec();
        assert!(implausible_previous_gtids(&tagged).is_some());
        // One server, untagged, claiming 2^36 intervals in 16 bytes.
        let mut intervals = 1u64.to_le_bytes().to_vec();
        intervals.extend([7u8; 16]);
        intervals.extend((1u64 << 36).to_le_bytes());
        intervals.extend([0u8; 16]);
        let why = implausible_previous_gtids(&intervals).expect("refused");
        assert!(why.contains("68719476736 GTID intervals"), "{why}");
        // One server, tagged "ab" (varlen 2 in one byte: 2 << 1), one interval: fine.
        let mut ok = ((1u64 << 56) | (1u64 << 8)).to_le_bytes().to_vec();
        ok.extend([7u8; 16]);
        ok.extend([2 << 1, b'a', b'b']);
        ok.extend(1u64.to_le_bytes());
        ok.extend([0u8; 16]);
        assert_eq!(implausible_previous_gtids(&ok), None);
    }

    #[test]
    fn a_gtid_list_count_larger_than_its_body_is_refused() {
        use super::mariadb_gtid_list;
        let mut one = 1u32.to_le_bytes().to_vec();
        one.extend(5u32.to_le_bytes());
        one.extend(1u32.to_le_bytes());
        one.extend(9u64.to_le_bytes());
        let list = mariadb_gtid_list(&one).expect("one GTID");
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].domain, list[0].seq), (5, 9));
        // 0x0fffffff GTIDs claimed in 16 bytes: refused before any allocation.
        let mut huge = 0x0fff_ffffu32.to_le_bytes().to_vec();
        huge.extend([0u8; 16]);
        assert!(mariadb_gtid_list(&huge).is_none());
        assert!(mariadb_gtid_list(&one[..19]).is_none());
    }

    #[test]
    fn create_table_select_on_mysql_ends_at_its_xid() {
        use super::{query, query_ends_tx, Tx};
        // MySQL 8.0.21+: GTID, `CREATE TABLE ... START TRANSACTION`, TABLE_MAP, rows, XID.
        let ctas = "CREATE TABLE `t2` (\n  `id` int NOT NULL\n) START TRANSACTION";
        assert!(query::opens_transaction(ctas));
        assert!(!query::opens_transaction("CREATE TABLE t (a int)"));
        assert!(!query::opens_transaction("START TRANSACTION"));
        let mut tx = Tx {
            start_pos: 4,
            gtid: None,
            maria_gtid: None,
            mysql_gtid: Some(([1; 16], String::new(), 5)),
            rows: 0,
            explicit_begin: false,
            standalone: false,
            rows_events: 0,
            done: None,
            xa: false,
            xid: None,
            held: Vec::new(),
        };
        // A plain DDL statement after a MySQL GTID is its own transaction...
        assert!(query_ends_tx(Some(&tx)));
        // ...but once the CTAS opened one, later statements do not end it: the XID does.
        tx.explicit_begin = true;
        assert!(!query_ends_tx(Some(&tx)));
        assert!(query_ends_tx(None));
    }

    #[test]
    fn positions_past_4_gib_do_not_wrap() {
        use super::widen_log_pos;
        const G4: u64 = 1 << 32;
        assert_eq!(widen_log_pos(4, 120), 120);
        assert_eq!(
            widen_log_pos(1000, 1000),
            1000,
            "a heartbeat at the same place"
        );
        // An event ending past 4 GiB, after one ending just below.
        assert_eq!(widen_log_pos(G4 - 100, 50), G4 + 50);
        // Later events of the same file keep the high bits.
        assert_eq!(widen_log_pos(G4 + 50, 900), G4 + 900);
        assert_eq!(widen_log_pos(3 * G4 - 10, 10), 3 * G4 + 10);
        // A position just below the previous end (not a wrap) stays where it is.
        assert_eq!(widen_log_pos(G4 + 900, 800), G4 + 800);
    }

    #[test]
    fn incident_bodies_are_read_within_their_bounds() {
        use super::incident;
        let mut body = vec![1, 0, 11];
        body.extend(b"LOST_EVENTS");
        assert_eq!(incident(&body), (1, "LOST_EVENTS".into()));
        // A length past the body reads what is there; an empty one names the incident.
        assert_eq!(incident(&[2, 0, 200, b'x']), (2, "x".into()));
        assert_eq!(incident(&[1, 0]), (1, "LOST_EVENTS".into()));
        assert_eq!(incident(&[]), (0, "no message".into()));
    }

    #[test]
    fn only_the_pre_ga_trees_mysql_remaps_are_refused() {
        for v in [
            "5.2.2-a_drop6p13-alpha",
            "5.1.2-a_drop5p10",
            "5.1.4-a_drop6p0",
        ] {
            assert!(pre_ga_event_numbering(v), "{v}");
        }
        for v in [
            "5.1.23-rc-debug-log",
            "5.1.1-alpha",
            "8.0.36",
            "10.11.6-MariaDB",
            "5.1.6-a_drop5p1",
            "",
        ] {
            assert!(!pre_ga_event_numbering(v), "{v}");
        }
    }
}
