//! Counts what a consumer got against what the writer committed.
//!
//! Every record is turned into changes of keys: a WriteRowsEvent or an UpdateRowsEvent that
//! keeps the key is a put of (key, v after); a DeleteRowsEvent a removal of (key, v). An
//! UpdateRowsEvent that changes the key is a put of the new key and, when no DeleteRowsEvent
//! of the old key at that version is on the stream (publishers that do not publish one), also
//! the removal of the old key, delivered where that record was. Each change is matched to its
//! place in the key's committed history by (kind, v), unique per key since `v` only grows.
//!
//! - committed: changes in the history (a key-changing UPDATE is two: removal and put);
//! - consumed: distinct committed changes seen; lost = committed − consumed;
//! - duplicates: deliveries of a change already seen;
//! - order violations, per key: (a) the first delivery of a change comes after the first
//!   delivery of a later change of the same key, in reading order (a replay after a restart
//!   repeats changes already seen, which counts as duplicates, not as a violation); (b) a
//!   key's changes arrive on shards that are not one lineage (neither is the other's
//!   ancestor), which a consumer reading shards in parallel may apply in either order: every
//!   first delivery outside the shard holding most of them counts. Both are judged among
//!   the records carrying the same table name: after a RENAME TABLE the partition key (which
//!   holds the table name) sends a key's rows elsewhere by design; keys so split over
//!   unrelated shards are reported apart (`rename_unordered`);
//! - state: the tables rebuilt by applying every record in reading order (put = upsert,
//!   removal = delete) compared with SELECT of every table.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{
    stream::ReadBack,
    writer::{key_columns, Ev, History, SCHEMA},
};

#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub committed: u64,
    pub consumed: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    /// Changes on the stream that were never committed (an uncommitted transaction).
    pub phantom: u64,
    /// Records of our schema that do not parse into key and `v`.
    pub malformed: u64,
    /// Keys whose rebuilt state differs from SELECT (None: not checked).
    pub state_mismatches: Option<u64>,
    pub kcl_dropped: u64,
    /// Keys whose changes before and after a RENAME TABLE are on unrelated shards (the
    /// partition key holds the table name; reported, not counted as violations).
    pub rename_unordered: u64,
    pub examples: Vec<String>,
}

impl Counts {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.order_violations == 0
            && self.phantom == 0
            && self.malformed == 0
            && self.state_mismatches.unwrap_or(0) == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < 4 {
            self.examples.push(s);
        }
    }
}

/// What to check: `expected` must all be consumed; `all` is everything committed (a change
/// outside it is a phantom); `tables` limits the check to these canonical tables;
/// `state` is SELECT's (table, key) → v, or None to skip the state comparison.
pub struct Expect<'a> {
    pub expected: &'a History,
    pub all: &'a History,
    pub aliases: &'a HashMap<String, String>,
    pub tables: Option<&'a HashSet<String>>,
    pub state: Option<&'a HashMap<(String, String), i64>>,
}

struct KeyChange {
    /// The table's name as the record carries it (differs from `table` after a rename).
    published: String,
    table: String,
    key: String,
    ev: Ev,
}

fn key_and_v(table: &str, values: &Value) -> Option<(String, i64)> {
    let mut key = Vec::new();
    for col in key_columns(table) {
        key.push(values.get(*col)?.clone());
    }
    let v = values.get("v")?.as_i64()?;
    Some((Value::Array(key).to_string(), v))
}

/// A record's changes, and the removal of the old key an UPDATE that changes the key implies
/// (used only when no DeleteRowsEvent of its own carries it).
type Parsed = (Vec<KeyChange>, Option<KeyChange>);

/// Deliveries of one key: (index in its history, record index, table name as published).
type Deliveries = Vec<(usize, usize, String)>;

/// The changes one record carries (before deciding on implicit removals).
fn parse(data: &[u8], aliases: &HashMap<String, String>) -> Result<Option<Parsed>, ()> {
    let Ok(rec) = serde_json::from_slice::<Value>(data) else {
        return Err(());
    };
    if rec["schema"].as_str() != Some(SCHEMA) {
        return Ok(None);
    }
    let published = rec["table"].as_str().unwrap_or_default();
    let Some(table) = aliases.get(published) else {
        return Ok(None);
    };
    let row = &rec["row"];
    let change = |values: &Value, del: bool| {
        key_and_v(table, values).map(|(key, v)| KeyChange {
            published: published.to_string(),
            table: table.clone(),
            key,
            ev: Ev { del, v },
        })
    };
    match rec["type"].as_str() {
        Some("WriteRowsEvent") => Ok(Some((vec![change(&row["values"], false).ok_or(())?], None))),
        Some("DeleteRowsEvent") => Ok(Some((vec![change(&row["values"], true).ok_or(())?], None))),
        Some("UpdateRowsEvent") => {
            let after = change(&row["after_values"], false).ok_or(())?;
            let before = change(&row["before_values"], true).ok_or(())?;
            if before.key == after.key {
                Ok(Some((vec![after], None)))
            } else {
                Ok(Some((vec![after], Some(before))))
            }
        }
        _ => Err(()),
    }
}

pub fn verify(back: &ReadBack, want: &Expect) -> Counts {
    let mut c = Counts {
        kcl_dropped: back.kcl_dropped,
        ..Counts::default()
    };
    let in_scope = |t: &str| want.tables.is_none_or(|s| s.contains(t));
    // Pass 1: parse, and note every removal published as a DeleteRowsEvent of its own.
    let mut parsed: Vec<(usize, Vec<KeyChange>, Option<KeyChange>)> = Vec::new();
    let mut explicit: HashSet<(String, String, i64)> = HashSet::new();
    for (i, r) in back.records.iter().enumerate() {
        match parse(&r.data, want.aliases) {
            Err(()) => {
                c.malformed += 1;
                let text = String::from_utf8_lossy(&r.data);
                c.example(format!(
                    "malformed: {}",
                    text.chars().take(160).collect::<String>()
                ));
            }
            Ok(None) => {}
            Ok(Some((changes, implicit))) => {
                for ch in &changes {
                    if ch.ev.del {
                        explicit.insert((ch.table.clone(), ch.key.clone(), ch.ev.v));
                    }
                }
                parsed.push((i, changes, implicit));
            }
        }
    }
    // Pass 2: every change in reading order, per key.
    let mut index: HashMap<(String, String), HashMap<Ev, usize>> = HashMap::new();
    let mut per_key: HashMap<(String, String), Deliveries> = HashMap::new();
    let mut state: HashMap<(String, String), i64> = HashMap::new();
    for (i, changes, implicit) in parsed {
        let implicit =
            implicit.filter(|d| !explicit.contains(&(d.table.clone(), d.key.clone(), d.ev.v)));
        for ch in implicit.into_iter().chain(changes) {
            if !in_scope(&ch.table) {
                continue;
            }
            let id = (ch.table.clone(), ch.key.clone());
            if ch.ev.del {
                state.remove(&id);
            } else {
                state.insert(id.clone(), ch.ev.v);
            }
            let idx = index.entry(id.clone()).or_insert_with(|| {
                want.all
                    .get(&id)
                    .map(|h| h.iter().enumerate().map(|(n, e)| (*e, n)).collect())
                    .unwrap_or_default()
            });
            match idx.get(&ch.ev) {
                Some(n) => per_key.entry(id).or_default().push((*n, i, ch.published)),
                None => {
                    c.phantom += 1;
                    c.example(format!(
                        "phantom: {}.{} {:?} v={}",
                        ch.table,
                        ch.key,
                        if ch.ev.del { "del" } else { "put" },
                        ch.ev.v
                    ));
                }
            }
        }
    }
    // Counting against what was expected.
    let mut rename_split: HashSet<(String, String)> = HashSet::new();
    for (id, hist) in want.expected {
        if !in_scope(&id.0) {
            continue;
        }
        c.committed += hist.len() as u64;
        let seen: &[(usize, usize, String)] = per_key.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let mut first: HashSet<usize> = HashSet::new();
        // First deliveries, grouped by the table name the record carried: the partition key
        // holds it, so a renamed table's rows move to other shards by design (counted apart).
        let mut groups: Vec<(&str, Vec<(usize, &str)>)> = Vec::new();
        for (n, rec, name) in seen {
            if !first.insert(*n) {
                c.duplicates += 1;
                continue;
            }
            let shard = back.records[*rec].shard.as_str();
            match groups.iter_mut().find(|g| g.0 == name) {
                Some(g) => g.1.push((*n, shard)),
                None => groups.push((name, vec![(*n, shard)])),
            }
        }
        let mut all_shards: Vec<&str> = Vec::new();
        for (_, group) in &groups {
            let mut shards: HashMap<&str, u64> = HashMap::new();
            for (_, sh) in group {
                *shards.entry(sh).or_default() += 1;
            }
            let list: Vec<&str> = shards.keys().copied().collect();
            all_shards.extend(&list);
            let unordered = list
                .iter()
                .enumerate()
                .any(|(i, a)| list[i + 1..].iter().any(|b| !back.ordered(a, b)));
            if unordered {
                let most = shards.values().max().copied().unwrap_or(0);
                let total: u64 = shards.values().sum();
                c.order_violations += total - most;
                c.example(format!(
                    "order: {}.{} changes on unrelated shards {:?}",
                    id.0, id.1, shards
                ));
                continue;
            }
            let mut max_first: Option<usize> = None;
            for (n, _) in group {
                if max_first.is_some_and(|m| *n < m) {
                    c.order_violations += 1;
                    c.example(format!(
                        "order: {}.{} change #{n} first seen after #{}",
                        id.0,
                        id.1,
                        max_first.unwrap_or(0)
                    ));
                }
                max_first = max_first.max(Some(*n));
            }
        }
        if groups.len() > 1
            && all_shards
                .iter()
                .enumerate()
                .any(|(i, a)| all_shards[i + 1..].iter().any(|b| !back.ordered(a, b)))
        {
            c.rename_unordered += 1;
            rename_split.insert(id.clone());
        }
        let expected_here = hist.len();
        let got = (0..expected_here).filter(|n| first.contains(n)).count();
        if got < expected_here {
            c.lost += (expected_here - got) as u64;
            let missing = (0..expected_here).find(|n| !first.contains(n)).unwrap_or(0);
            c.example(format!(
                "lost: {}.{} change #{missing} {:?} ({} of {} consumed)",
                id.0, id.1, hist[missing], got, expected_here
            ));
        }
        c.consumed += got as u64;
        // Duplicates of changes outside `expected` (published after the expected set ends)
        // are not counted; they are reported by the scenario.
    }
    if let Some(select) = want.state {
        let mut bad = 0u64;
        let keys: HashSet<&(String, String)> = select
            .keys()
            .chain(state.keys())
            .filter(|k| in_scope(&k.0) && !rename_split.contains(*k))
            .collect();
        for k in keys {
            if select.get(k) != state.get(k) {
                bad += 1;
                if bad <= 2 {
                    c.example(format!(
                        "state: {}.{} SELECT v={:?}, rebuilt v={:?}",
                        k.0,
                        k.1,
                        select.get(k),
                        state.get(k)
                    ));
                }
            }
        }
        c.state_mismatches = Some(bad);
    }
    c
}

/// Changes on the stream that are in `all` but not in `expected` (for the purge scenario:
/// published although they lie beyond a gap).
pub fn beyond(
    back: &ReadBack,
    expected: &History,
    all: &History,
    aliases: &HashMap<String, String>,
) -> u64 {
    let mut n = 0;
    for r in &back.records {
        if let Ok(Some((changes, _))) = parse(&r.data, aliases) {
            for ch in changes {
                let id = (ch.table.clone(), ch.key.clone());
                let in_expected = expected.get(&id).is_some_and(|h| h.contains(&ch.ev));
                let in_all = all.get(&id).is_some_and(|h| h.contains(&ch.ev));
                if in_all && !in_expected {
                    n += 1;
                }
            }
        }
    }
    n
}
