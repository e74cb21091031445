//! Reading one chunk by either consistency method, and what a chunk is.

use std::sync::Arc;

use mysql_async::{prelude::Queryable, Conn, Row};

use super::{plan::SnapshotPlan, BinlogPos, Method, SnapshotError};
use crate::{
    decode::{EncodeOptions, RowChange, SnapshotAt, SnapshotEncoder},
    sink::Sink,
    source::preflight,
};

/// One chunk's rows, encoded, and the binlog position they must be handed on at.
#[derive(Debug)]
pub struct Chunk {
    pub rows: Vec<RowChange>,
    /// Consistent snapshot: the read view's position P; watermark: the high watermark H.
    /// The chunk goes out once the reader has handed on everything up to here.
    pub at: BinlogPos,
    /// Watermark only: the low watermark L read before the SELECT.
    pub low: Option<BinlogPos>,
    /// Key of the last row the server returned (the next chunk starts after it).
    pub last_key: Option<serde_json::Value>,
    /// The table has no rows after this chunk.
    pub last: bool,
    /// The byte bound cut the chunk short (the rows after the cut were read and dropped).
    pub cut: bool,
    pub bytes: usize,
    /// The rows went straight to the sink while they were read (`rows` is empty); how many.
    pub streamed: u64,
}

/// The session a snapshot reads in: times in UTC (the binlog's TIMESTAMP is seconds since the
/// epoch), text in each column's own charset (as the binlog holds it), REPEATABLE READ.
pub async fn prepare_session(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop("SET SESSION time_zone = '+00:00', SESSION character_set_results = NULL")
        .await?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
}

/// Opens a transaction with a consistent snapshot and returns the binlog position its read
/// view corresponds to (MariaDB and Percona: `Binlog_snapshot_file/position`). The caller
/// commits.
pub async fn open_consistent(conn: &mut Conn) -> Result<BinlogPos, SnapshotError> {
    let q = |e| SnapshotError::Db(Box::new(e));
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(q)?;
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(q)?;
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match (
        get("Binlog_snapshot_file"),
        get("Binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
    ) {
        (Some(file), Some(pos)) if !file.is_empty() => Ok((file, pos)),
        _ => {
            let _ = conn.query_drop("ROLLBACK").await;
            Err(SnapshotError::NoSnapshotPosition)
        }
    }
}

pub struct Reading<'a> {
    pub plan: &'a SnapshotPlan,
    pub after: Option<&'a serde_json::Value>,
    pub limit: usize,
    pub max_bytes: usize,
    pub encode: EncodeOptions,
    pub method: Method,
    pub user: &'a str,
    pub version: &'a str,
    pub is_mariadb: bool,
    /// Row number of the first row (within the table), for `position.row`.
    pub first_row: u64,
    /// Where the reader stands (everything up to here handed on, nothing after it).
    pub reader_at: Option<BinlogPos>,
}

/// Reads one chunk: with a consistent snapshot, inside a transaction that lasts one SELECT;
/// with watermarks, between two reads of the binlog's end.
///
/// A consistent-snapshot chunk whose read view is exactly where the reader stands (the
/// usual case: the reader waits while a chunk is read) goes straight to `sink` row by row
/// as the server sends it: no change can come between, so this is the order a buffered
/// chunk would have gone out in, without holding the chunk in memory and without the server
/// waiting while the chunk is handed on.
pub async fn read<S: Sink>(
    conn: &mut Conn,
    r: Reading<'_>,
    sink: &mut S,
) -> Result<Chunk, SnapshotError> {
    let (sql, params) = r.plan.chunk_sql(r.after, r.limit)?;
    match r.method {
        Method::ConsistentSnapshot => {
            let at = open_consistent(conn).await?;
            // The reader is never past the binlog's end, which is where the read view is.
            let direct = r
                .reader_at
                .as_ref()
                .is_some_and(|p| super::binlog_cmp(p, &at).is_ge());
            let out = if direct { Some(sink) } else { None };
            let res = select(conn, &r, &sql, params, &at, out).await;
            // Commit at once, whatever the SELECT did: no transaction outlives its chunk.
            let commit = conn.query_drop("COMMIT").await;
            let mut chunk = res?;
            commit.map_err(|e| SnapshotError::Db(Box::new(e)))?;
            chunk.at = at;
            Ok(chunk)
        }
        Method::Watermark => {
            let low = binlog_end(conn, r.user, r.version, r.is_mariadb).await?;
            // Rows changed in the window are dropped when the chunk is handed on: buffered.
            let mut chunk = select::<S>(conn, &r, &sql, params, &low, None).await?;
            chunk.at = binlog_end(conn, r.user, r.version, r.is_mariadb).await?;
            chunk.low = Some(low);
            Ok(chunk)
        }
    }
}

/// The binlog's current end (file, offset).
pub async fn binlog_end(
    conn: &mut Conn,
    user: &str,
    version: &str,
    is_mariadb: bool,
) -> Result<BinlogPos, SnapshotError> {
    preflight::binlog_end(conn, user, version, is_mariadb)
        .await
        .map(|(f, p, _)| (f, p))
        .map_err(|e| SnapshotError::Source(Box::new(e)))
}

async fn select<S: Sink>(
    conn: &mut Conn,
    r: &Reading<'_>,
    sql: &str,
    params: Vec<mysql_async::Value>,
    at: &BinlogPos,
    mut sink: Option<&mut S>,
) -> Result<Chunk, SnapshotError> {
    let q = |e| SnapshotError::query(&r.plan.name, e);
    let snap_at = SnapshotAt {
        file: Arc::from(at.0.as_str()),
        pos: at.1,
        ts: crate::metrics::now_unix() as u32,
    };
    let mut rows = Vec::with_capacity(if sink.is_some() {
        0
    } else {
        r.limit.min(65_536)
    });
    let mut streamed = 0u64;
    let mut bytes = 0usize;
    let mut seen = 0usize;
    let mut cut = false;
    let mut last_values: Option<Vec<mysql_async::Value>> = None;
    let mut encoder = SnapshotEncoder::default();
    // Binary protocol (a prepared statement), so values arrive typed as the binlog has them.
    let mut result = conn.exec_iter(sql, params).await.map_err(q)?;
    while let Some(row) = result.next().await.map_err(q)? {
        seen += 1;
        if cut {
            // The rest of the result must be read off the wire; it is dropped, and the next
            // chunk starts after the last row kept.
            continue;
        }
        let values = Row::unwrap(row);
        let change = encoder
            .encode(
                &r.plan.record,
                &values,
                r.encode,
                &snap_at,
                r.first_row + streamed + rows.len() as u64,
            )
            .map_err(SnapshotError::Decode)?;
        bytes += change.body.len();
        last_values = Some(values);
        match sink.as_mut() {
            // Nothing is held: the byte bound has nothing to bound.
            Some(s) => {
                s.write_row(change).await?;
                streamed += 1;
            }
            None => {
                rows.push(change);
                if bytes >= r.max_bytes {
                    cut = true;
                }
            }
        }
    }
    drop(result);
    let last_key = match &last_values {
        Some(v) => Some(r.plan.key_of(v).ok_or_else(|| SnapshotError::BadKey {
            table: r.plan.name.to_string(),
            key: "(the last row's key has no JSON form)".into(),
        })?),
        None => None,
    };
    let dropped = seen > rows.len() + streamed as usize;
    Ok(Chunk {
        streamed,
        last: !dropped && seen < r.limit,
        cut: dropped,
        rows,
        at: at.clone(),
        low: None,
        last_key,
        bytes,
    })
}
