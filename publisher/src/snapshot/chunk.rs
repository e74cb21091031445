//! Reading one chunk by either consistency method, and what a chunk is.

use std::sync::Arc;

use mysql_async::{prelude::Queryable, Conn, Row};

use super::{plan::SnapshotPlan, BinlogPos, Method, SnapshotError};
use crate::{
    decode::{EncodeOptions, RowChange, SnapshotAt, SnapshotEncoder},
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
}

/// Reads one chunk: with a consistent snapshot, inside a transaction that lasts one SELECT;
/// with watermarks, between two reads of the binlog's end.
pub async fn read(conn: &mut Conn, r: Reading<'_>) -> Result<Chunk, SnapshotError> {
    let (sql, params) = r.plan.chunk_sql(r.after, r.limit)?;
    match r.method {
        Method::ConsistentSnapshot => {
            let at = open_consistent(conn).await?;
            let res = select(conn, &r, &sql, params, &at).await;
            // Commit at once, whatever the SELECT did: no transaction outlives its chunk.
            let commit = conn.query_drop("COMMIT").await;
            let mut chunk = res?;
            commit.map_err(|e| SnapshotError::Db(Box::new(e)))?;
            chunk.at = at;
            Ok(chunk)
        }
        Method::Watermark => {
            let low = binlog_end(conn, &r).await?;
            let mut chunk = select(conn, &r, &sql, params, &low).await?;
            chunk.at = binlog_end(conn, &r).await?;
            chunk.low = Some(low);
            Ok(chunk)
        }
    }
}

async fn binlog_end(conn: &mut Conn, r: &Reading<'_>) -> Result<BinlogPos, SnapshotError> {
    preflight::binlog_end(conn, r.user, r.version, r.is_mariadb)
        .await
        .map(|(f, p, _)| (f, p))
        .map_err(|e| SnapshotError::Source(Box::new(e)))
}

async fn select(
    conn: &mut Conn,
    r: &Reading<'_>,
    sql: &str,
    params: Vec<mysql_async::Value>,
    at: &BinlogPos,
) -> Result<Chunk, SnapshotError> {
    let q = |e| SnapshotError::query(&r.plan.name, e);
    let snap_at = SnapshotAt {
        file: Arc::from(at.0.as_str()),
        pos: at.1,
        ts: crate::metrics::now_unix() as u32,
    };
    let mut rows = Vec::with_capacity(r.limit.min(65_536));
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
                r.first_row + rows.len() as u64,
            )
            .map_err(SnapshotError::Decode)?;
        bytes += change.body.len();
        rows.push(change);
        last_values = Some(values);
        if bytes >= r.max_bytes {
            cut = true;
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
    let dropped = seen > rows.len();
    Ok(Chunk {
        last: !dropped && seen < r.limit,
        cut: dropped,
        rows,
        at: at.clone(),
        low: None,
        last_key,
        bytes,
    })
}
