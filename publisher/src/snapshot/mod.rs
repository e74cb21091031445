//! Snapshots: every existing row of the captured tables as a `WriteRowsEvent`, interleaved
//! with the binlog stream so that per-key order holds and nothing is lost or left stale.
//!
//! Tables are read in chunks by key (keyset pagination, the server's collation order). Each
//! chunk is tied to a binlog position and handed on exactly when the reader has handed on
//! everything up to it, before any later change:
//! - consistent snapshot (MariaDB): the chunk is read in a transaction opened `WITH CONSISTENT
//!   SNAPSHOT`, whose `Binlog_snapshot_position` P is the binlog position its read view
//!   corresponds to. Its rows are the state at P; changes after P follow them.
//! - watermark (DBLog; MySQL 8 has no snapshot position): binlog end L before the SELECT, H
//!   after. Rows whose key changed in the binlog between the previous chunk's L and H are
//!   dropped (the stream carries their newer state); the rest go out at H. The window starts
//!   one chunk early so a transaction already in the binlog but not yet committed in the
//!   engine when the SELECT's read view opened is still caught.
//!
//! Progress (tables left, last key) rides in every checkpoint, and a chunk is acknowledged
//! together with the binlog position it went out at, so a restart resumes after the last
//! delivered chunk without ever skipping a change the snapshot relied on.

pub mod chunk;
pub mod plan;
pub mod progress;

use std::{
    cmp::Ordering,
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use mysql_async::{prelude::Queryable, Conn};
use tracing::{info, warn};

use crate::{
    decode::{DecodeError, EncodeOptions, RowChange},
    filter::TableFilter,
    metrics::Metrics,
    position::{Checkpoint, SnapshotState, StartFrom},
    sink::{Sink, SinkError},
    source::{Item, Reader, SourceAddr, SourceConfig, SourceError},
};

pub use plan::TableName;
pub use progress::{Progress, ProgressView, TableProgress};

/// A binlog position: file and offset.
pub type BinlogPos = (String, u64);

/// Orders binlog positions: files by their numeric suffix (`.000009` < `.000010`, and past
/// `.999999` too), then offsets.
pub fn binlog_cmp(a: &BinlogPos, b: &BinlogPos) -> Ordering {
    let num = |f: &str| {
        f.rsplit_once('.')
            .and_then(|(base, n)| n.parse::<u64>().ok().map(|n| (base.to_string(), n)))
    };
    let files = match (num(&a.0), num(&b.0)) {
        (Some((ba, na)), Some((bb, nb))) if ba == bb => na.cmp(&nb),
        _ => a.0.cmp(&b.0),
    };
    files.then(a.1.cmp(&b.1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ConsistentSnapshot,
    Watermark,
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "consistent-snapshot" => Ok(Method::ConsistentSnapshot),
            "watermark" => Ok(Method::Watermark),
            other => Err(format!(
                "`{other}` is not one of consistent-snapshot, watermark"
            )),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::ConsistentSnapshot => "consistent-snapshot",
            Method::Watermark => "watermark",
        })
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// A chunk ends early once its records pass this many bytes.
    pub chunk_bytes: usize,
    /// `None`: consistent snapshot on MariaDB, watermark on MySQL.
    pub method: Option<Method>,
    /// On demand: re-snapshot these tables once, under `request_id`.
    pub tables: Vec<TableName>,
    pub request_id: Option<String>,
    /// Shared with whoever reports status (the Kubernetes status writer).
    pub progress: Progress,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            chunk_rows: 10_000,
            chunk_bytes: 8 << 20,
            method: None,
            tables: Vec::new(),
            request_id: None,
            progress: Progress::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot of {table}: {message}")]
    Query {
        table: String,
        message: String,
        code: Option<u16>,
    },
    #[error("snapshot: {0}")]
    Db(Box<mysql_async::Error>),
    #[error("snapshot: {0}")]
    Source(Box<SourceError>),
    #[error(transparent)]
    Decode(Box<DecodeError>),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("snapshot of {table}: the user lacks the SELECT privilege ({message}); GRANT SELECT ON {table} to it, or leave the table out of the snapshot")]
    NoSelect { table: String, message: String },
    #[error("snapshot of {table}: key column `{column}` has type {data_type}, which cannot be paged by (snapshots need a primary or unique NOT NULL key of orderable columns; exclude the table or change its key)")]
    Unorderable {
        table: String,
        column: String,
        data_type: String,
    },
    #[error("snapshot of {table}, column `{column}`: {reason}")]
    Unsupported {
        table: String,
        column: String,
        reason: String,
    },
    #[error("snapshot of {table}: stored key {key} does not fit the table's key (was the key changed? start a new snapshot request)")]
    BadKey { table: String, key: String },
    #[error("snapshot of {table}: the table changed while its plan was read")]
    Changed { table: String },
    #[error("snapshot: the source reports no Binlog_snapshot_file/position (needs MariaDB or Percona Server); use --snapshot-method watermark")]
    NoSnapshotPosition,
    #[error("snapshot of {table}: the table has no primary or unique NOT NULL key, and the watermark method ties such a table's read view to a binlog position under LOCK TABLES ... READ, held only while the view opens; the user lacks that privilege ({message}); GRANT LOCK TABLES ON {schema}.* to it, use --snapshot-method consistent-snapshot (MariaDB, Percona Server), give the table a key, or leave it out of the snapshot")]
    NoLockTables {
        table: String,
        schema: String,
        message: String,
    },
}

impl SnapshotError {
    fn query(table: &TableName, e: mysql_async::Error) -> SnapshotError {
        let code = match &e {
            mysql_async::Error::Server(s) => Some(s.code),
            _ => None,
        };
        if let (Some(1142), mysql_async::Error::Server(s)) = (code, &e) {
            return SnapshotError::NoSelect {
                table: table.to_string(),
                message: s.message.clone(),
            };
        }
        SnapshotError::Query {
            table: table.to_string(),
            message: e.to_string(),
            code,
        }
    }

    fn code(&self) -> Option<u16> {
        match self {
            SnapshotError::Query { code, .. } => *code,
            SnapshotError::Db(e) => match e.as_ref() {
                mysql_async::Error::Server(s) => Some(s.code),
                _ => None,
            },
            _ => None,
        }
    }

    /// A lost or killed connection: reconnecting and reading the chunk again cures it.
    fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Db(e) => matches!(
                e.as_ref(),
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
            ),
            SnapshotError::Query { code: None, .. } => true,
            SnapshotError::Source(e) => e.is_transient(),
            _ => matches!(
                self.code(),
                Some(1053 | 2006 | 2013 | 1317 | 1927 | 1213 | 1205)
            ),
        }
    }
}

/// How many completed request ids a checkpoint keeps.
const KEEP_COMPLETED: usize = 16;
/// The request id of `--start snapshot`.
pub const INITIAL: &str = "initial";

/// The table being read.
struct Current {
    name: TableName,
    plan: Arc<plan::SnapshotPlan>,
    /// The reader's schema generation when the plan was read.
    schema_gen: u64,
}

pub struct Driver {
    addr: SourceAddr,
    conn: Option<Conn>,
    opts: SnapshotOptions,
    method: Method,
    encode: EncodeOptions,
    user: String,
    version: String,
    is_mariadb: bool,
    /// Progress as handed on: what the next boundary records.
    state: SnapshotState,
    /// An on-demand request waiting for the running snapshot to finish.
    queued: Option<(String, Vec<String>)>,
    current: Option<Current>,
    chunk: Option<chunk::Chunk>,
    /// A one-pass table whose read view is open, waiting for the reader to reach it.
    one_pass_at: Option<BinlogPos>,
    /// Watermark, keyless table: a transaction held the table past the lock wait; when to
    /// try again, and how many tries so far. The stream goes on meanwhile.
    lock_retry: Option<(std::time::Instant, u32)>,
    /// Adapted down when the byte bound cuts chunks.
    limit: usize,
    /// Watermark: the window's start, and keys of the current table changed since, with the
    /// position of the change.
    window_from: Option<BinlogPos>,
    changes: VecDeque<(BinlogPos, String)>,
    reporter: progress::Reporter,
    /// Set once a table's start has been reported (cleared when it finishes).
    table_reported: bool,
    /// Initial snapshot: tables without a key whose rows have not gone out yet. Their row
    /// changes before that are left out of the stream: the rows (the state at the read
    /// view's position) already hold them, and a consumer without a key could not apply a
    /// change to a row it does not have yet without duplicating it.
    suppress: HashSet<(String, String)>,
    /// Rows written straight to the sink (not through `items`) since the pipeline last
    /// asked: it counts them as delivered rows.
    streamed: u64,
}

fn is_system_schema(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "mysql" | "information_schema" | "performance_schema" | "sys"
    )
}

/// Tables without a primary or unique key (read in one pass).
async fn keyless_tables(conn: &mut Conn) -> Result<HashSet<(String, String)>, SnapshotError> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t \
             WHERE t.TABLE_TYPE = 'BASE TABLE' AND NOT EXISTS (SELECT 1 FROM \
             information_schema.STATISTICS s WHERE s.TABLE_SCHEMA = t.TABLE_SCHEMA \
             AND s.TABLE_NAME = t.TABLE_NAME AND s.NON_UNIQUE = 0)",
        )
        .await
        .map_err(|e| SnapshotError::Db(Box::new(e)))?;
    Ok(rows.into_iter().collect())
}

/// The base tables the filter captures, in name order.
async fn captured_tables(
    conn: &mut Conn,
    filter: &TableFilter,
) -> Result<Vec<String>, SnapshotError> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(|e| SnapshotError::Db(Box::new(e)))?;
    Ok(rows
        .into_iter()
        .filter(|(s, t)| !is_system_schema(s) && filter.captures(s, t))
        .map(|(s, t)| format!("{s}.{t}"))
        .collect())
}

impl Driver {
    /// The snapshot work this start implies, if any: resuming one a checkpoint records as
    /// running, the initial one of `--start snapshot` (no checkpoint yet), and an on-demand
    /// request whose id the checkpoint does not record as done. `None` when there is
    /// nothing to read and nothing to keep recording.
    pub async fn start(
        cfg: &SourceConfig,
        reader: &Reader,
        checkpoint: Option<&Checkpoint>,
        opts: SnapshotOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Driver>, SnapshotError> {
        let progress = opts.progress.clone();
        let server = reader.server();
        let prior = checkpoint.and_then(|c| c.snapshot.as_deref().cloned());
        let initial = checkpoint.is_none() && cfg.start == StartFrom::Snapshot;
        let wants_request = opts
            .request_id
            .as_ref()
            .filter(|id| {
                !prior.as_ref().is_some_and(|p| {
                    p.completed.iter().any(|c| c == *id) || (p.running() && &p.request_id == *id)
                })
            })
            .cloned();
        if prior.is_none() && !initial && wants_request.is_none() {
            return Ok(None);
        }
        let method = opts.method.unwrap_or(if server.is_mariadb {
            Method::ConsistentSnapshot
        } else {
            Method::Watermark
        });
        let mut conn = cfg
            .addr
            .connect()
            .await
            .map_err(|e| SnapshotError::Source(Box::new(e)))?;
        chunk::prepare_session(&mut conn)
            .await
            .map_err(|e| SnapshotError::Db(Box::new(e)))?;
        let mut state = prior.unwrap_or(SnapshotState {
            request_id: String::new(),
            pending: Vec::new(),
            last_key: None,
            table_rows: 0,
            tables_done: 0,
            completed: Vec::new(),
        });
        let mut queued = None;
        if initial {
            state.request_id = INITIAL.into();
            state.pending = captured_tables(&mut conn, &cfg.filter).await?;
        }
        if let Some(id) = wants_request {
            let tables: Vec<String> = opts.tables.iter().map(|t| t.to_string()).collect();
            if state.running() {
                info!(request_id = %id, running = %state.request_id, "snapshot request waits for the running snapshot to finish");
                queued = Some((id, tables));
            } else {
                state.request_id = id;
                state.pending = tables;
                state.last_key = None;
                state.table_rows = 0;
                state.tables_done = 0;
            }
        }
        let mut suppress = HashSet::new();
        if state.request_id == INITIAL && state.running() {
            let keyless = keyless_tables(&mut conn).await?;
            // The table being read when a one-pass table was interrupted is read again whole;
            // its rows already delivered are delivered again (documented).
            for t in &state.pending {
                if let Ok(n) = t.parse::<TableName>() {
                    if keyless.contains(&(n.schema.clone(), n.table.clone())) {
                        suppress.insert((n.schema, n.table));
                    }
                }
            }
        }
        let mut reporter = progress::Reporter::new(metrics, progress);
        if state.running() {
            reporter.begin(
                &state.request_id,
                &method.to_string(),
                &state.pending,
                state.table_rows,
            );
        }
        let limit = opts.chunk_rows.max(1);
        Ok(Some(Driver {
            addr: cfg.addr.clone(),
            conn: Some(conn),
            method,
            encode: cfg.encode,
            user: cfg.addr.user(),
            version: server.version.clone(),
            is_mariadb: server.is_mariadb,
            opts,
            state,
            queued,
            current: None,
            chunk: None,
            one_pass_at: None,
            lock_retry: None,
            limit,
            window_from: reader.boundary_position(),
            changes: VecDeque::new(),
            reporter,
            table_reported: false,
            suppress,
            streamed: 0,
        }))
    }

    pub fn state(&self) -> &SnapshotState {
        &self.state
    }

    pub fn running(&self) -> bool {
        self.state.running()
    }

    /// Rows the last steps wrote to the sink themselves (a chunk streamed as it was read, a
    /// one-pass table), for the pipeline's row count.
    pub fn take_streamed(&mut self) -> u64 {
        std::mem::take(&mut self.streamed)
    }

    /// Sees what the reader hands on before it goes to the sink: every boundary records the
    /// snapshot's progress, and with watermarks, changes of the table being read are noted.
    /// Puts the snapshot's progress into `cp` (the first checkpoint, stored before any item).
    pub fn stamp(&self, cp: &mut Checkpoint) {
        cp.snapshot = Some(Box::new(self.state.clone()));
    }

    pub fn observe(&mut self, items: &mut Vec<Item>) {
        if !self.suppress.is_empty() {
            items.retain(|i| match i {
                Item::Row(r) => !self
                    .suppress
                    .contains(&(r.schema.to_string(), r.table.to_string())),
                _ => true,
            });
        }
        let watch = self.method == Method::Watermark && self.current.is_some();
        for item in items.iter_mut() {
            match item {
                Item::Commit(cp) | Item::Idle(cp) => {
                    cp.snapshot = Some(Box::new(self.state.clone()))
                }
                Item::Row(r) if watch => self.note_change(r),
                Item::Row(_) => {}
            }
        }
    }

    fn note_change(&mut self, r: &RowChange) {
        let Some(cur) = &self.current else { return };
        if *r.schema != *cur.name.schema || *r.table != *cur.name.table {
            return;
        }
        let at = (r.position.file.to_string(), r.position.pos);
        for key in keys_in_record(&cur.plan, &r.body) {
            self.changes.push_back((at.clone(), key));
        }
    }

    fn reached(reader: &Reader, at: &BinlogPos) -> bool {
        reader
            .boundary_position()
            .is_some_and(|p| binlog_cmp(&p, at).is_ge())
    }

    /// True when [`Driver::step`] has work that needs no more binlog first.
    pub fn ready(&self, reader: &Reader) -> bool {
        if !self.state.running() {
            return false;
        }
        if self
            .lock_retry
            .is_some_and(|(at, _)| std::time::Instant::now() < at)
        {
            return false;
        }
        if let Some(at) = &self.one_pass_at {
            return Self::reached(reader, at);
        }
        match &self.chunk {
            None => true,
            Some(c) => Self::reached(reader, &c.at),
        }
    }

    /// Hands on a chunk that is due (rows, then a boundary carrying the progress), or reads
    /// the next one. One-pass tables write straight to `sink`; the newest checkpoint the
    /// sink reported meanwhile is returned for storing.
    pub async fn step<S: Sink>(
        &mut self,
        reader: &Reader,
        sink: &mut S,
        items: &mut Vec<Item>,
    ) -> Result<Option<Checkpoint>, SnapshotError> {
        if self.one_pass_at.is_some() {
            return self.one_pass(reader, sink, items).await;
        }
        if let Some(c) = self.chunk.take() {
            if self.current.as_ref().map(|c| c.schema_gen) != Some(reader.schema_generation()) {
                // A DDL went by before the chunk's position: its rows may lack a column the
                // stream now has. Read it again under a fresh plan.
                self.invalidate_plan();
                return Ok(None);
            }
            if Self::reached(reader, &c.at) {
                self.emit(c, reader, items);
                return Ok(None);
            }
            self.chunk = Some(c);
            return Ok(None);
        }
        let mut attempt = 0;
        let chunk = loop {
            attempt += 1;
            match self.read_next(reader, sink).await {
                Ok(c) => break c,
                Err(e)
                    if attempt < 5
                        && (e.is_transient() || matches!(e.code(), Some(1412 | 1054 | 1146))) =>
                {
                    // 1412/1054: the table was altered since the plan was read; a fresh plan
                    // and the same key continue it. 1146: dropped; the fresh plan says so.
                    warn!(error = %e, attempt, "snapshot chunk failed; reading it again");
                    self.invalidate_plan();
                    if e.is_transient() {
                        self.conn = None;
                    }
                }
                Err(e) => return Err(e),
            }
        };
        match chunk {
            Next::Chunk(c) => {
                if Self::reached(reader, &c.at) {
                    self.emit(c, reader, items);
                } else {
                    self.chunk = Some(c);
                }
            }
            Next::Skipped => self.boundary(reader, items),
            Next::OnePassOpened | Next::Later => {}
        }
        Ok(None)
    }

    /// Makes the next chunk read the table's plan again. The table stays current, so the
    /// watermark window keeps noting its changes meanwhile.
    fn invalidate_plan(&mut self) {
        if let Some(c) = self.current.as_mut() {
            c.schema_gen = u64::MAX;
        }
    }

    async fn conn(&mut self) -> Result<&mut Conn, SnapshotError> {
        if self.conn.is_none() {
            let mut c = self
                .addr
                .connect()
                .await
                .map_err(|e| SnapshotError::Source(Box::new(e)))?;
            chunk::prepare_session(&mut c)
                .await
                .map_err(|e| SnapshotError::Db(Box::new(e)))?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn read_next<S: Sink>(
        &mut self,
        reader: &Reader,
        sink: &mut S,
    ) -> Result<Next, SnapshotError> {
        let Some(table) = self.state.pending.first().cloned() else {
            return Ok(Next::Skipped);
        };
        let name: TableName = match table.parse() {
            Ok(n) => n,
            Err(_) => {
                self.table_done(true);
                return Ok(Next::Skipped);
            }
        };
        let is_mariadb = self.is_mariadb;
        // The plan is read once per table, and again after a DDL went by in the stream (or a
        // chunk failed because the table changed), so the next chunk continues from the last
        // key under the new columns.
        let gen = reader.schema_generation();
        let plan = match &self.current {
            Some(c) if c.name == name && c.schema_gen == gen => c.plan.clone(),
            _ => {
                let loaded = plan::load(self.conn().await?, &name, is_mariadb).await?;
                let Some(plan) = loaded else {
                    self.table_done(true);
                    return Ok(Next::Skipped);
                };
                let plan = Arc::new(plan);
                self.current = Some(Current {
                    name: name.clone(),
                    plan: plan.clone(),
                    schema_gen: gen,
                });
                plan
            }
        };
        let key_label = match &plan.paging {
            plan::Paging::Key { index, .. } => index.clone(),
            plan::Paging::OnePass => "one pass".into(),
        };
        if !self.table_reported {
            self.table_reported = true;
            self.reporter.table_started(
                &table,
                &key_label,
                plan.estimated_rows,
                self.state.table_rows,
            );
        }
        if plan.paging == plan::Paging::OnePass {
            let at = match self.open_one_pass(&plan).await {
                Ok(at) => at,
                Err(e) if e.code() == Some(1205) => {
                    // A transaction that changed the table is still open. Try again later
                    // instead of failing: a batch job may hold it for minutes.
                    let tries = self.lock_retry.map_or(0, |(_, n)| n) + 1;
                    let wait = std::time::Duration::from_secs((1u64 << tries.min(5)).min(30));
                    warn!(
                        table,
                        tries,
                        retry_in_secs = wait.as_secs(),
                        "snapshot: an open transaction holds the keyless table past the lock wait; trying again later"
                    );
                    self.lock_retry = Some((std::time::Instant::now() + wait, tries));
                    return Ok(Next::Later);
                }
                Err(e) => return Err(e),
            };
            self.lock_retry = None;
            self.one_pass_at = Some(at);
            return Ok(Next::OnePassOpened);
        }
        let user = self.user.clone();
        let version = self.version.clone();
        let after = self.state.last_key.clone();
        let reading = chunk::Reading {
            plan: &plan,
            after: after.as_ref(),
            limit: self.limit,
            max_bytes: self.opts.chunk_bytes,
            encode: self.encode,
            method: self.method,
            user: &user,
            version: &version,
            is_mariadb,
            first_row: self.state.table_rows,
            reader_at: reader.boundary_position(),
        };
        let c = chunk::read(self.conn().await?, reading, sink).await?;
        if c.cut {
            // Rows past the byte bound were read and dropped: ask for fewer next time.
            self.limit = c.rows.len().max(1);
        }
        Ok(Next::Chunk(c))
    }

    /// Opens the read view a one-pass table is read in and returns the position the reader
    /// must reach first: the view holds every change of the table up to it and none after.
    async fn open_one_pass(
        &mut self,
        plan: &plan::SnapshotPlan,
    ) -> Result<BinlogPos, SnapshotError> {
        if self.method == Method::ConsistentSnapshot {
            return chunk::open_consistent(self.conn().await?).await;
        }
        // No snapshot position (MySQL), and a keyless table has no key to drop changed rows
        // by. So a second session holds LOCK TABLES ... READ while this one opens its view
        // and reads the binlog end: the lock waits for every transaction that changed the
        // table to end (engine commit included) and holds off new ones, so no change of the
        // table lies between the view and that position. Writers of the table wait for a
        // few round trips; other tables are not touched.
        let name = &plan.name;
        let (user, version, is_mariadb) =
            (self.user.clone(), self.version.clone(), self.is_mariadb);
        let db = |e| SnapshotError::Db(Box::new(e));
        let mut lock = self
            .addr
            .connect()
            .await
            .map_err(|e| SnapshotError::Source(Box::new(e)))?;
        // Every outcome past this point goes through the UNLOCK below.
        let opened = async {
            lock.query_drop("SET SESSION lock_wait_timeout = 1")
                .await
                .map_err(db)?;
            lock.query_drop(format!("LOCK TABLES {} READ", name.quoted()))
                .await
                .map_err(|e| match e {
                    mysql_async::Error::Server(s) if s.code == 1044 => {
                        SnapshotError::NoLockTables {
                            table: name.to_string(),
                            schema: name.schema.clone(),
                            message: s.message,
                        }
                    }
                    e => SnapshotError::query(name, e),
                })?;
            let conn = self.conn().await?;
            let view = async {
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await
                    .map_err(db)?;
                chunk::binlog_end(conn, &user, &version, is_mariadb).await
            }
            .await;
            if view.is_err() {
                let _ = conn.query_drop("ROLLBACK").await;
            }
            view
        }
        .await;
        // Closing the session releases the lock too; UNLOCK first so it goes at once.
        let _ = lock.query_drop("UNLOCK TABLES").await;
        let _ = lock.disconnect().await;
        opened
    }

    /// Streams a one-pass table to the sink while the binlog waits (the read view is at the
    /// reader's position), then hands on the boundary that records it done.
    async fn one_pass<S: Sink>(
        &mut self,
        reader: &Reader,
        sink: &mut S,
        items: &mut Vec<Item>,
    ) -> Result<Option<Checkpoint>, SnapshotError> {
        let at = self.one_pass_at.take().expect("one pass open");
        let cur = self.current.as_ref().expect("plan loaded");
        let plan = cur.plan.clone();
        let table = cur.name.to_string();
        let snap_at = crate::decode::SnapshotAt {
            file: Arc::from(at.0.as_str()),
            pos: at.1,
            ts: crate::metrics::now_unix() as u32,
        };
        let encode = self.encode;
        let mut flushed = None;
        let mut rows = 0u64;
        let mut batch = 0u64;
        let mut encoder = crate::decode::SnapshotEncoder::default();
        let conn = self.conn.as_mut().expect("read view open");
        let q = |e| SnapshotError::query(&plan.name, e);
        let result: Result<(), SnapshotError> = async {
            let mut res = conn.exec_iter(plan.full_sql(), ()).await.map_err(q)?;
            while let Some(row) = res.next().await.map_err(q)? {
                let values = mysql_async::Row::unwrap(row);
                let change = encoder
                    .encode(&plan.record, &values, encode, &snap_at, rows)
                    .map_err(SnapshotError::Decode)?;
                sink.write_row(change).await?;
                rows += 1;
                batch += 1;
                if batch == 10_000 {
                    batch = 0;
                    if let Some(cp) = sink.flush().await? {
                        flushed = Some(cp);
                    }
                    self.reporter.rows(&table, 10_000, rows);
                }
            }
            Ok(())
        }
        .await;
        let _ = conn.query_drop("COMMIT").await;
        self.streamed += rows;
        result?;
        self.reporter.rows(&table, batch, rows);
        self.state.table_rows = rows;
        self.table_done(false);
        self.boundary(reader, items);
        Ok(flushed)
    }

    fn emit(&mut self, c: chunk::Chunk, reader: &Reader, items: &mut Vec<Item>) {
        let Some(cur) = &self.current else { return };
        let table = cur.name.to_string();
        let mut rows = c.rows;
        if self.method == Method::Watermark {
            let from = self.window_from.clone();
            let changed: std::collections::HashSet<&str> = self
                .changes
                .iter()
                .filter(|(at, _)| from.as_ref().is_none_or(|f| binlog_cmp(at, f).is_gt()))
                .map(|(_, k)| k.as_str())
                .collect();
            if !changed.is_empty() {
                let before = rows.len();
                rows.retain(|r| {
                    keys_in_record(&cur.plan, &r.body)
                        .first()
                        .is_none_or(|k| !changed.contains(k.as_str()))
                });
                tracing::debug!(
                    table,
                    dropped = before - rows.len(),
                    "snapshot: rows changed in the watermark window left to the stream"
                );
            }
            // The next chunk's window starts at this chunk's low watermark.
            if let Some(low) = c.low.clone() {
                while self
                    .changes
                    .front()
                    .is_some_and(|(at, _)| binlog_cmp(at, &low).is_le())
                {
                    self.changes.pop_front();
                }
                self.window_from = Some(low);
            }
        }
        self.streamed += c.streamed;
        let n = rows.len() as u64 + c.streamed;
        items.extend(rows.into_iter().map(Item::Row));
        self.state.table_rows += n;
        self.reporter.rows(&table, n, self.state.table_rows);
        if c.last {
            self.table_done(false);
        } else {
            self.state.last_key = c.last_key;
        }
        self.boundary(reader, items);
    }

    /// The boundary after a chunk: the reader's position (at or past the chunk's) with the
    /// progress that includes it.
    fn boundary(&mut self, reader: &Reader, items: &mut Vec<Item>) {
        let mut cp = reader.resume_point();
        cp.snapshot = Some(Box::new(self.state.clone()));
        items.push(Item::Idle(cp));
    }

    fn table_done(&mut self, skipped: bool) {
        if self.state.pending.is_empty() {
            return;
        }
        let table = self.state.pending.remove(0);
        if let Ok(n) = table.parse::<TableName>() {
            self.suppress.remove(&(n.schema, n.table));
        }
        self.reporter
            .table_finished(&table, self.state.table_rows, skipped);
        self.state.tables_done += u64::from(!skipped);
        self.state.last_key = None;
        self.state.table_rows = 0;
        self.current = None;
        self.table_reported = false;
        self.changes.clear();
        if self.state.pending.is_empty() {
            let id = self.state.request_id.clone();
            self.state.completed.push(id.clone());
            let extra = self.state.completed.len().saturating_sub(KEEP_COMPLETED);
            self.state.completed.drain(..extra);
            self.state.tables_done = 0;
            self.reporter.finished(&id);
            if let Some((id, tables)) = self.queued.take() {
                self.state.request_id = id.clone();
                self.state.pending = tables;
                self.reporter
                    .begin(&id, &self.method.to_string(), &self.state.pending, 0);
            }
        }
    }
}

enum Next {
    Chunk(chunk::Chunk),
    /// The table was dropped (or nothing was left): a boundary records it.
    Skipped,
    OnePassOpened,
    /// Nothing this time (a keyless table's lock is busy); the stream goes on meanwhile.
    Later,
}

/// The paging-key values of the row images in a record, as canonical JSON arrays: an
/// insert's or delete's row, an update's before and after rows.
fn keys_in_record(plan: &plan::SnapshotPlan, body: &[u8]) -> Vec<String> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let row = &doc["row"];
    let key_names: Vec<&str> = plan
        .key_columns()
        .iter()
        .map(|&k| plan.record.columns[k].name.as_str())
        .collect();
    ["values", "before_values", "after_values"]
        .iter()
        .filter_map(|image| row.get(image))
        .map(|img| {
            let vals: Vec<serde_json::Value> = key_names
                .iter()
                .map(|n| img.get(*n).cloned().unwrap_or(serde_json::Value::Null))
                .collect();
            serde_json::Value::Array(vals).to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_positions_order_by_file_number_then_offset() {
        let p = |f: &str, o| (f.to_string(), o);
        assert!(binlog_cmp(&p("b.000009", 900), &p("b.000010", 4)).is_lt());
        assert!(binlog_cmp(&p("b.999999", 900), &p("b.1000000", 4)).is_lt());
        assert!(binlog_cmp(&p("b.000010", 4), &p("b.000010", 4)).is_eq());
        assert!(binlog_cmp(&p("b.000010", 5), &p("b.000010", 4)).is_gt());
    }

    #[test]
    fn methods_parse() {
        assert_eq!("watermark".parse(), Ok(Method::Watermark));
        assert_eq!(
            "consistent-snapshot".parse(),
            Ok(Method::ConsistentSnapshot)
        );
        assert!("lock".parse::<Method>().is_err());
    }
}
