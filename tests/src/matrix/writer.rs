//! The steady writer: inserts, updates, deletes, primary-key changes (and the re-use of the
//! old key value right after), multi-table transactions, one large transaction and DDL, on
//! three tables (an integer key, a composite key, a VARCHAR key). Every row carries a column
//! `v` set from one counter that only grows, so each change of a key is named by (kind, v).
//!
//! The writer keeps its own model of every table and a history per key of what it committed,
//! applied only once COMMIT returned. It owns its connection; a run is bounded by a step count,
//! a time limit and a stop flag, and hands the writer back so the next phase continues it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mysql_async::{prelude::Queryable, Conn, Opts};
use rand::{rngs::StdRng, Rng, SeedableRng};

pub const SCHEMA: &str = "fm";
/// Canonical names; a RENAME TABLE gives a table a new current name, never a new identity.
pub const T_INT: &str = "t_int";
pub const T_COMP: &str = "t_comp";
pub const T_STR: &str = "t_str";
pub const TABLES: [&str; 3] = [T_INT, T_COMP, T_STR];
/// Integer keys moved by a primary-key change go up by this much (the issue's
/// `UPDATE t SET id = id + 1000000`).
const KEY_SHIFT: i64 = 1_000_000;
/// Keys of the large transaction, far from every other key.
const BIG_BASE: i64 = 100_000_000;

/// Key columns of a canonical table, in key order.
pub fn key_columns(table: &str) -> &'static [&'static str] {
    match table {
        T_INT => &["id"],
        T_COMP => &["a", "b"],
        _ => &["name"],
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyVal {
    Int(i64),
    Comp(i64, String),
    Str(String),
}

impl KeyVal {
    /// The key as a JSON array of its values, as the verifier builds it from a record.
    pub fn json(&self) -> String {
        let v = match self {
            KeyVal::Int(i) => serde_json::json!([i]),
            KeyVal::Comp(a, b) => serde_json::json!([a, b]),
            KeyVal::Str(s) => serde_json::json!([s]),
        };
        v.to_string()
    }

    fn sql_tuple(&self) -> String {
        match self {
            KeyVal::Int(i) => i.to_string(),
            KeyVal::Comp(a, b) => format!("({a},'{b}')"),
            KeyVal::Str(s) => format!("'{s}'"),
        }
    }

    fn sql_values(&self) -> String {
        match self {
            KeyVal::Int(i) => i.to_string(),
            KeyVal::Comp(a, b) => format!("{a},'{b}'"),
            KeyVal::Str(s) => format!("'{s}'"),
        }
    }

    /// The key a primary-key change moves this one to.
    fn shifted(&self) -> KeyVal {
        match self {
            KeyVal::Int(i) => KeyVal::Int(i + KEY_SHIFT),
            KeyVal::Comp(a, b) => KeyVal::Comp(*a, format!("{b}C")),
            KeyVal::Str(s) => KeyVal::Str(format!("{s}m")),
        }
    }

    fn set_clause(&self) -> String {
        match self {
            KeyVal::Int(i) => format!("id = {i}"),
            KeyVal::Comp(_, b) => format!("b = '{b}'"),
            KeyVal::Str(s) => format!("name = '{s}'"),
        }
    }
}

fn where_in(table: &str, keys: &[KeyVal]) -> String {
    let cols = key_columns(table);
    let lhs = if cols.len() == 1 {
        cols[0].to_string()
    } else {
        format!("({})", cols.join(","))
    };
    let list: Vec<String> = keys.iter().map(KeyVal::sql_tuple).collect();
    format!("{lhs} IN ({})", list.join(","))
}

/// One committed change of one key: a put (insert or update, `v` = the new version) or a
/// removal (`v` = the version removed: a DELETE, or the old key of a key-changing UPDATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ev {
    pub del: bool,
    pub v: i64,
}

/// (canonical table, key JSON) → its changes in commit order.
pub type History = HashMap<(String, String), Vec<Ev>>;

enum Change {
    Put(&'static str, KeyVal, i64),
    Del(&'static str, KeyVal, i64),
}

/// What a step does: statements in one transaction, and the changes they commit.
struct Plan {
    sql: Vec<String>,
    changes: Vec<Change>,
}

/// (file, offset) in the binlog.
pub type BinlogPos = (String, u64);

/// Flags the writer raises for the scenarios (set once, read by the fault scripts).
#[derive(Debug, Default)]
pub struct Signals {
    pub big_started: AtomicBool,
    pub big_committed: AtomicBool,
    /// The end of the binlog before the large transaction and after its COMMIT: the
    /// transaction lies in between (the writer is the only one writing).
    pub big_span: std::sync::Mutex<Option<(BinlogPos, BinlogPos)>>,
}

async fn binlog_end(conn: &mut Conn) -> Option<(String, u64)> {
    let row: mysql_async::Row = conn.query_first("SHOW MASTER STATUS").await.ok()??;
    Some((row.get(0)?, row.get(1)?))
}

/// A bounded run of the writer.
#[derive(Clone)]
pub struct Phase {
    pub url: String,
    pub steps: u64,
    pub max_time: Duration,
    /// Rows (changes) per second to aim at; 0: as fast as the server takes them.
    pub rows_per_sec: f64,
    /// Largest multi-row INSERT.
    pub batch: usize,
    /// The large transaction: before step `at`, `rows` rows (split over t_int and t_comp
    /// when `multi_table`).
    pub big: Option<BigTx>,
    /// One DDL statement every this many steps.
    pub ddl_every: Option<u64>,
    pub stop: Arc<AtomicBool>,
    pub signals: Arc<Signals>,
}

#[derive(Debug, Clone, Copy)]
pub struct BigTx {
    pub at: u64,
    pub rows: u64,
    pub multi_table: bool,
}

impl Phase {
    pub fn new(url: &str, steps: u64, max_time: Duration) -> Phase {
        Phase {
            url: url.to_string(),
            steps,
            max_time,
            rows_per_sec: 0.0,
            batch: 8,
            big: None,
            ddl_every: None,
            stop: Arc::new(AtomicBool::new(false)),
            signals: Arc::new(Signals::default()),
        }
    }
}

pub struct Writer {
    rng: StdRng,
    next_v: i64,
    next_id: i64,
    rows: HashMap<&'static str, BTreeMap<KeyVal, i64>>,
    pub history: History,
    /// Canonical table → its current name.
    names: HashMap<&'static str, String>,
    /// Every name a table has had → its canonical name.
    pub aliases: HashMap<String, String>,
    payload: HashMap<&'static str, String>,
    /// Keys moved away by a primary-key change, to be inserted again by the next step.
    reuse: Vec<(&'static str, KeyVal)>,
    pub committed_changes: u64,
    pub transactions: u64,
    pub key_changes: u64,
    pub ddl: u64,
    big_index: u64,
    /// The first error that ended a run (a failed statement leaves the step uncommitted or
    /// unknown, so the run stops there).
    pub error: Option<String>,
}

impl Writer {
    /// Creates the schema and tables (as root at `url`) and an empty model.
    pub async fn setup(url: &str, seed: u64) -> anyhow::Result<Writer> {
        let mut conn = Conn::new(Opts::from_url(url)?).await?;
        conn.query_drop(format!(
            "CREATE DATABASE {SCHEMA}; \
             CREATE TABLE {SCHEMA}.{T_INT} (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, payload VARCHAR(64)); \
             CREATE TABLE {SCHEMA}.{T_COMP} (a INT NOT NULL, b VARCHAR(40) COLLATE utf8mb4_bin NOT NULL, \
               v BIGINT NOT NULL, payload VARCHAR(64), PRIMARY KEY (a, b)); \
             CREATE TABLE {SCHEMA}.{T_STR} (name VARCHAR(60) COLLATE utf8mb4_bin PRIMARY KEY, \
               v BIGINT NOT NULL, payload VARCHAR(64))"
        ))
        .await?;
        conn.disconnect().await?;
        let names: HashMap<&'static str, String> =
            TABLES.iter().map(|t| (*t, t.to_string())).collect();
        Ok(Writer {
            rng: StdRng::seed_from_u64(seed),
            next_v: 1,
            next_id: 1,
            rows: TABLES.iter().map(|t| (*t, BTreeMap::new())).collect(),
            history: HashMap::new(),
            aliases: TABLES
                .iter()
                .map(|t| (t.to_string(), t.to_string()))
                .collect(),
            names,
            payload: TABLES.iter().map(|t| (*t, "payload".to_string())).collect(),
            reuse: Vec::new(),
            committed_changes: 0,
            transactions: 0,
            key_changes: 0,
            ddl: 0,
            big_index: 0,
            error: None,
        })
    }

    pub fn current_name(&self, table: &str) -> String {
        self.names
            .get(table)
            .cloned()
            .unwrap_or_else(|| table.to_string())
    }

    fn v(&mut self) -> i64 {
        let v = self.next_v;
        self.next_v += 1;
        v
    }

    /// A key no row holds now (a long run's counter can reach keys moved up by
    /// [`KEY_SHIFT`]; those are skipped). Bounded: each try takes a new counter value.
    fn new_key(&mut self, table: &'static str) -> KeyVal {
        loop {
            let n = self.next_id;
            self.next_id += 1;
            let k = match table {
                T_INT => KeyVal::Int(n),
                T_COMP => KeyVal::Comp(n / 4, format!("B{}", n % 4)),
                _ => KeyVal::Str(format!("k{n:07}")),
            };
            if !self.rows[table].contains_key(&k) {
                return k;
            }
        }
    }

    fn pick(&mut self, table: &'static str, n: usize, avoid: &[KeyVal]) -> Vec<KeyVal> {
        let len = self.rows[table].len();
        let mut out: Vec<KeyVal> = Vec::new();
        for _ in 0..n.min(len) {
            let i = self.rng.gen_range(0..len);
            if let Some(k) = self.rows[table].keys().nth(i) {
                if !out.contains(k) && !avoid.contains(k) {
                    out.push(k.clone());
                }
            }
        }
        out
    }

    fn table(&mut self) -> &'static str {
        TABLES[self.rng.gen_range(0..TABLES.len())]
    }

    fn insert_sql(&mut self, table: &'static str, keys: &[KeyVal], v: i64) -> String {
        let name = self.current_name(table);
        let payload = self.payload[table].clone();
        let cols = key_columns(table).join(", ");
        let values: Vec<String> = keys
            .iter()
            .map(|k| format!("({}, {v}, 'p{v}')", k.sql_values()))
            .collect();
        format!(
            "INSERT INTO {SCHEMA}.{name} ({cols}, v, {payload}) VALUES {}",
            values.join(", ")
        )
    }

    fn plan_insert(&mut self, plan: &mut Plan, table: &'static str, n: usize) {
        let keys: Vec<KeyVal> = (0..n.max(1)).map(|_| self.new_key(table)).collect();
        let v = self.v();
        plan.sql.push(self.insert_sql(table, &keys, v));
        plan.changes
            .extend(keys.into_iter().map(|k| Change::Put(table, k, v)));
    }

    fn plan_update(&mut self, plan: &mut Plan, table: &'static str, n: usize, avoid: &[KeyVal]) {
        let keys = self.pick(table, n, avoid);
        if keys.is_empty() {
            return;
        }
        let v = self.v();
        let name = self.current_name(table);
        let payload = self.payload[table].clone();
        plan.sql.push(format!(
            "UPDATE {SCHEMA}.{name} SET v = {v}, {payload} = 'u{v}' WHERE {}",
            where_in(table, &keys)
        ));
        plan.changes
            .extend(keys.into_iter().map(|k| Change::Put(table, k, v)));
    }

    fn plan_delete(&mut self, plan: &mut Plan, table: &'static str, n: usize, avoid: &[KeyVal]) {
        let keys = self.pick(table, n, avoid);
        if keys.is_empty() {
            return;
        }
        let name = self.current_name(table);
        plan.sql.push(format!(
            "DELETE FROM {SCHEMA}.{name} WHERE {}",
            where_in(table, &keys)
        ));
        for k in keys {
            let old = self.rows[table][&k];
            plan.changes.push(Change::Del(table, k, old));
        }
    }

    /// One key moved to a new value; the old value is inserted again by the next step.
    fn plan_key_change(&mut self, plan: &mut Plan, table: &'static str) {
        let Some(old) = self.pick(table, 1, &[]).pop() else {
            return;
        };
        let new = old.shifted();
        if self.rows[table].contains_key(&new) {
            return;
        }
        let v = self.v();
        let name = self.current_name(table);
        let old_v = self.rows[table][&old];
        plan.sql.push(format!(
            "UPDATE {SCHEMA}.{name} SET {}, v = {v} WHERE {}",
            new.set_clause(),
            where_in(table, std::slice::from_ref(&old))
        ));
        plan.changes.push(Change::Del(table, old.clone(), old_v));
        plan.changes.push(Change::Put(table, new, v));
        self.reuse.push((table, old));
        self.key_changes += 1;
    }

    fn plan_step(&mut self, batch: usize) -> Plan {
        let mut plan = Plan {
            sql: Vec::new(),
            changes: Vec::new(),
        };
        if let Some((table, key)) = self
            .reuse
            .pop()
            .filter(|(t, k)| !self.rows[t].contains_key(k))
        {
            let v = self.v();
            plan.sql
                .push(self.insert_sql(table, std::slice::from_ref(&key), v));
            plan.changes.push(Change::Put(table, key, v));
            return plan;
        }
        let roll: u32 = self.rng.gen_range(0..100);
        let table = self.table();
        match roll {
            0..=39 => {
                let n = self.rng.gen_range(1..=batch.max(1));
                self.plan_insert(&mut plan, table, n);
            }
            40..=64 => self.plan_update(&mut plan, table, 4, &[]),
            65..=79 => self.plan_delete(&mut plan, table, 2, &[]),
            80..=89 => self.plan_key_change(&mut plan, table),
            _ => {
                // A transaction over all three tables.
                self.plan_insert(&mut plan, T_INT, 2);
                self.plan_update(&mut plan, T_COMP, 2, &[]);
                let fresh: Vec<KeyVal> = Vec::new();
                self.plan_delete(&mut plan, T_STR, 1, &fresh);
                self.plan_insert(&mut plan, T_STR, 1);
            }
        }
        plan
    }

    fn plan_big(&mut self, big: BigTx) -> Plan {
        let v = self.v();
        let mut plan = Plan {
            sql: Vec::new(),
            changes: Vec::new(),
        };
        let parts: Vec<(&'static str, u64)> = if big.multi_table {
            vec![(T_INT, big.rows / 2), (T_COMP, big.rows - big.rows / 2)]
        } else {
            vec![(T_INT, big.rows)]
        };
        for (table, rows) in parts {
            if rows == 0 {
                continue;
            }
            self.big_index += 1;
            let base = BIG_BASE * self.big_index as i64;
            let name = self.current_name(table);
            let payload = self.payload[table].clone();
            match table {
                T_INT => {
                    plan.sql.push(format!(
                        "INSERT INTO {SCHEMA}.{name} (id, v, {payload}) \
                         SELECT {base} + seq, {v}, 'big' FROM {SCHEMA}.seq_1_to_{rows}"
                    ));
                    for i in 1..=rows as i64 {
                        plan.changes
                            .push(Change::Put(table, KeyVal::Int(base + i), v));
                    }
                }
                _ => {
                    plan.sql.push(format!(
                        "INSERT INTO {SCHEMA}.{name} (a, b, v, {payload}) \
                         SELECT {base} + seq, 'big', {v}, 'big' FROM {SCHEMA}.seq_1_to_{rows}"
                    ));
                    for i in 1..=rows as i64 {
                        plan.changes.push(Change::Put(
                            table,
                            KeyVal::Comp(base + i, "big".into()),
                            v,
                        ));
                    }
                }
            }
        }
        plan
    }

    /// The next DDL statement of a fixed cycle: a column added in the middle, a column
    /// renamed, the added column dropped, a table renamed, a column added at the end and
    /// dropped again.
    fn ddl_sql(&mut self) -> String {
        let k = self.ddl;
        self.ddl += 1;
        let int = self.current_name(T_INT);
        match k % 6 {
            0 => format!(
                "ALTER TABLE {SCHEMA}.{int} ADD COLUMN extra INT NOT NULL DEFAULT 7 AFTER id"
            ),
            1 => {
                let comp = self.current_name(T_COMP);
                let old = self.payload[T_COMP].clone();
                let new = format!("payload_r{k}");
                self.payload.insert(T_COMP, new.clone());
                format!("ALTER TABLE {SCHEMA}.{comp} RENAME COLUMN {old} TO {new}")
            }
            2 => format!("ALTER TABLE {SCHEMA}.{int} DROP COLUMN extra"),
            3 => {
                let old = self.current_name(T_STR);
                let new = format!("t_str_r{k}");
                self.names.insert(T_STR, new.clone());
                self.aliases.insert(new.clone(), T_STR.to_string());
                format!("RENAME TABLE {SCHEMA}.{old} TO {SCHEMA}.{new}")
            }
            4 => {
                let s = self.current_name(T_STR);
                format!("ALTER TABLE {SCHEMA}.{s} ADD COLUMN note VARCHAR(10) DEFAULT 'n'")
            }
            _ => {
                let s = self.current_name(T_STR);
                format!("ALTER TABLE {SCHEMA}.{s} DROP COLUMN note")
            }
        }
    }

    fn apply(&mut self, changes: Vec<Change>) {
        self.transactions += 1;
        for c in changes {
            self.committed_changes += 1;
            let (table, key, ev) = match c {
                Change::Put(t, k, v) => {
                    self.rows.get_mut(t).map(|m| m.insert(k.clone(), v));
                    (t, k, Ev { del: false, v })
                }
                Change::Del(t, k, v) => {
                    self.rows.get_mut(t).map(|m| m.remove(&k));
                    (t, k, Ev { del: true, v })
                }
            };
            self.history
                .entry((table.to_string(), key.json()))
                .or_default()
                .push(ev);
        }
    }

    async fn execute(conn: &mut Conn, sql: &[String]) -> Result<(), mysql_async::Error> {
        if sql.len() == 1 {
            return conn.query_drop(&sql[0]).await;
        }
        conn.query_drop("START TRANSACTION").await?;
        for s in sql {
            conn.query_drop(s).await?;
        }
        conn.query_drop("COMMIT").await
    }

    /// Runs one phase to its end (steps, time or stop flag) and hands the writer back.
    pub async fn run(mut self, phase: Phase) -> Writer {
        let started = Instant::now();
        let mut conn = match Opts::from_url(&phase.url) {
            Ok(opts) => match Conn::new(opts).await {
                Ok(c) => c,
                Err(e) => {
                    self.error = Some(format!("writer connect: {e}"));
                    return self;
                }
            },
            Err(e) => {
                self.error = Some(format!("writer url: {e}"));
                return self;
            }
        };
        let mut changes_this_phase = 0u64;
        for step in 0..phase.steps {
            if phase.stop.load(Ordering::Relaxed) || started.elapsed() >= phase.max_time {
                break;
            }
            if let Some(every) = phase.ddl_every {
                if step > 0 && step % every == 0 {
                    let sql = self.ddl_sql();
                    if let Err(e) = conn.query_drop(&sql).await {
                        self.error = Some(format!("{sql}: {e}"));
                        break;
                    }
                }
            }
            let big = phase.big.filter(|b| b.at == step);
            let mut big_start = None;
            let plan = match big {
                Some(b) => {
                    big_start = binlog_end(&mut conn).await;
                    phase.signals.big_started.store(true, Ordering::SeqCst);
                    self.plan_big(b)
                }
                None => self.plan_step(phase.batch),
            };
            if plan.sql.is_empty() {
                continue;
            }
            if let Err(e) = Self::execute(&mut conn, &plan.sql).await {
                self.error = Some(format!("{}: {e}", plan.sql.join("; ")));
                break;
            }
            changes_this_phase += plan.changes.len() as u64;
            self.apply(plan.changes);
            if big.is_some() {
                let end = binlog_end(&mut conn).await;
                if let (Some(start), Some(end), Ok(mut span)) =
                    (big_start.take(), end, phase.signals.big_span.lock())
                {
                    *span = Some((start, end));
                }
                phase.signals.big_committed.store(true, Ordering::SeqCst);
            }
            if phase.rows_per_sec > 0.0 {
                let due = Duration::from_secs_f64(changes_this_phase as f64 / phase.rows_per_sec);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                }
            }
        }
        let _ = conn.disconnect().await;
        self
    }

    /// The writer's own model: (canonical table, key JSON) → v.
    pub fn model(&self) -> HashMap<(String, String), i64> {
        let mut out = HashMap::new();
        for (t, rows) in &self.rows {
            for (k, v) in rows {
                out.insert((t.to_string(), k.json()), *v);
            }
        }
        out
    }

    /// What the server holds now: (canonical table, key JSON) → v, read with SELECT.
    pub async fn select_state(&self, url: &str) -> anyhow::Result<HashMap<(String, String), i64>> {
        let mut conn = Conn::new(Opts::from_url(url)?).await?;
        let mut out = HashMap::new();
        for t in TABLES {
            let name = self.current_name(t);
            let cols = key_columns(t).join(", ");
            let rows: Vec<mysql_async::Row> = conn
                .query(format!("SELECT {cols}, v FROM {SCHEMA}.{name}"))
                .await?;
            for r in rows {
                let key = match t {
                    T_INT => KeyVal::Int(r.get(0).unwrap_or_default()),
                    T_COMP => {
                        KeyVal::Comp(r.get(0).unwrap_or_default(), r.get(1).unwrap_or_default())
                    }
                    _ => KeyVal::Str(r.get(0).unwrap_or_default()),
                };
                let v: i64 = r.get(key_columns(t).len()).unwrap_or_default();
                out.insert((t.to_string(), key.json()), v);
            }
        }
        conn.disconnect().await?;
        Ok(out)
    }
}
