//! The stream's shard map, and making sure every row of a KPL aggregate is in a shard whose
//! hash-key range holds its key: the KCL and the Lambda de-aggregators drop sub-records that
//! hash outside the shard they are read from. An aggregate is routed by its first row's key,
//! so after a reshard (SplitShard, MergeShards, UpdateShardCount, on-demand scaling) one built
//! for an old shard can land on a child that covers only part of its keys.
//!
//! PutRecords answers the shard each record landed on. When that shard is not in the map, or
//! its range does not cover every row of the aggregate, the map is read again and the rows
//! outside the receiving shard's range are sent again, aggregated for the shards that hold
//! them, before the lane's next request: a key's rows stay in order. The rows to re-send are
//! read back from the aggregate's own bytes, so nothing is kept beside it.

use std::{collections::HashMap, sync::Arc};

use aws_sdk_kinesis::{primitives::Blob, Client};
use prost::Message;
use tracing::{info, warn};

use super::{
    deliver::{deliver, Delivery, Record},
    key::MAX_RECORD_BYTES,
    kpl,
};
use crate::sink::SinkError;

/// Open shards (for routing) and every shard's range (to check where a record landed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMap {
    /// Open shards' hash-key ranges, sorted by start, and their ids in the same order.
    ranges: Vec<(u128, u128)>,
    ids: Vec<String>,
    /// Every shard ListShards named, closed ones included.
    all: HashMap<String, (u128, u128)>,
}

impl ShardMap {
    /// From `(shard id, range, open)` triples.
    pub fn new(shards: impl IntoIterator<Item = (String, (u128, u128), bool)>) -> ShardMap {
        let mut all = HashMap::new();
        let mut open = Vec::new();
        for (id, range, is_open) in shards {
            if is_open {
                open.push((range, id.clone()));
            }
            all.insert(id, range);
        }
        open.sort();
        let (ranges, ids) = open.into_iter().unzip();
        ShardMap { ranges, ids, all }
    }

    /// Open shards.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    /// Index of the open shard that holds `hash`.
    pub fn route(&self, hash: u128) -> usize {
        self.ranges
            .iter()
            .position(|(lo, hi)| (*lo..=*hi).contains(&hash))
            .unwrap_or(0)
    }

    /// The same open shards (what routing depends on).
    pub fn routes_like(&self, other: &ShardMap) -> bool {
        self.ids == other.ids && self.ranges == other.ranges
    }

    fn range_of(&self, shard: &str) -> Option<(u128, u128)> {
        self.all.get(shard).copied()
    }

    fn is_open(&self, shard: &str) -> bool {
        self.ids.iter().any(|id| id == shard)
    }
}

/// Reads the stream's shards with ListShards.
pub async fn list_shards(client: &Client, stream: &str) -> Result<ShardMap, SinkError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client.list_shards();
        req = match &token {
            Some(t) => req.next_token(t),
            None => req.stream_name(stream),
        };
        let out = req.send().await.map_err(|e| {
            SinkError::Fatal(format!(
                "ListShards of {stream}: {}",
                aws_sdk_kinesis::error::DisplayErrorContext(&e)
            ))
        })?;
        for s in out.shards() {
            let open = s
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none();
            if let Some(r) = s.hash_key_range() {
                let lo = r.starting_hash_key().parse::<u128>().unwrap_or(0);
                let hi = r.ending_hash_key().parse::<u128>().unwrap_or(u128::MAX);
                shards.push((s.shard_id().to_string(), (lo, hi), open));
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let map = ShardMap::new(shards);
    if map.is_empty() {
        return Err(SinkError::Fatal(format!(
            "stream {stream} has no open shards"
        )));
    }
    Ok(map)
}

/// The sub-records of an aggregate (key, data), in order.
fn sub_records(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, SinkError> {
    let body = data
        .get(kpl::MAGIC.len()..data.len().saturating_sub(16))
        .ok_or_else(|| SinkError::Fatal("an aggregate shorter than its framing".into()))?;
    let agg = kpl::AggregatedRecord::decode(body)
        .map_err(|e| SinkError::Fatal(format!("reading back our own aggregate: {e}")))?;
    let keys = agg.partition_key_table;
    agg.records
        .into_iter()
        .map(|r| {
            let key = keys
                .get(r.partition_key_index as usize)
                .cloned()
                .ok_or_else(|| SinkError::Fatal("aggregate key index out of range".into()))?;
            Ok((key, r.data))
        })
        .collect()
}

/// A row to place: key, record body, hash of the key.
type Row = (String, Vec<u8>, u128);

/// One request's worth of the queue: for each shard of `map`, one aggregate of the next rows
/// that hash to it (at most 1 MiB). One aggregate per shard, so no key is in two records of a
/// request (PutRecords does not promise order inside a request). Returns the records and the
/// rows left, in their order.
fn take_round(
    map: &ShardMap,
    queue: std::collections::VecDeque<Row>,
) -> (Vec<Record>, std::collections::VecDeque<Row>) {
    // Per shard: the aggregate, its key-hash bounds, and whether it is full for this round.
    type Building = (kpl::Aggregator, Option<(u128, u128)>, bool);
    let mut building: Vec<Building> = (0..map.len().max(1)).map(|_| Default::default()).collect();
    let mut rest = std::collections::VecDeque::new();
    for (key, data, hash) in queue {
        let (agg, hashes, full) = &mut building[map.route(hash)];
        if *full || (!agg.is_empty() && agg.size_with(&key, data.len()) > MAX_RECORD_BYTES) {
            // Everything after it for this shard waits too, so the rows stay in order.
            *full = true;
            rest.push_back((key, data, hash));
            continue;
        }
        agg.push(&key, data);
        *hashes = Some(match *hashes {
            Some((lo, hi)) => (lo.min(hash), hi.max(hash)),
            None => (hash, hash),
        });
    }
    let round = building
        .into_iter()
        .filter(|(agg, _, _)| !agg.is_empty())
        .map(|(mut agg, hashes, _)| {
            let (key, data) = agg.finish();
            Record {
                seqs: Vec::new(),
                key,
                row_key: false,
                data: Blob::new(data),
                ts: 0,
                sub_hashes: hashes,
                shard: None,
            }
        })
        .collect();
    (round, rest)
}

/// How often the map is read again when a record landed on a shard it does not name as open
/// (ListShards is eventually consistent), before giving up.
const MAP_ATTEMPTS: u32 = 20;

/// Checks where `records` landed: the rows of each aggregate that the receiving shard's range
/// does not hold, in order. Reads the map again when a shard is not open in it (a reshard we
/// did not know of), and until it names every receiving shard.
async fn misplaced(
    d: &Delivery,
    map: &mut Arc<ShardMap>,
    refreshed: &mut Option<Arc<ShardMap>>,
    records: &[Record],
) -> Result<Vec<Row>, SinkError> {
    let aggregates: Vec<&Record> = records.iter().filter(|r| r.sub_hashes.is_some()).collect();
    let shard = |r: &Record| r.shard.clone().unwrap_or_default();
    let mut stale = aggregates.iter().any(|r| !map.is_open(&shard(r)));
    let mut attempts = 0u32;
    // Once for a shard not open in the map; again while one is not in it at all (a shard that
    // closed since it took the record is still listed, with its range).
    while stale || aggregates.iter().any(|r| map.range_of(&shard(r)).is_none()) {
        stale = false;
        attempts += 1;
        if attempts > MAP_ATTEMPTS {
            return Err(SinkError::Fatal(format!(
                "Kinesis stream {}: records landed on shard(s) {:?} that ListShards does not list after {MAP_ATTEMPTS} reads",
                d.stream,
                aggregates.iter().map(|r| shard(r)).collect::<Vec<_>>()
            )));
        }
        if attempts > 1 {
            tokio::time::sleep(d.backoff.delay(attempts - 2)).await;
        }
        match list_shards(&d.client, &d.stream).await {
            Ok(fresh) => {
                info!(stream = %d.stream, open_shards = fresh.len(), "a record landed on a shard not in the shard map; read the map again");
                let fresh = Arc::new(fresh);
                *map = fresh.clone();
                *refreshed = Some(fresh);
            }
            Err(e) => warn!(stream = %d.stream, error = %e, "cannot read the shard map; retrying"),
        }
    }
    let mut rows = Vec::new();
    for r in aggregates {
        let Some((lo, hi)) = map.range_of(&shard(r)) else {
            continue;
        };
        if r.sub_hashes
            .is_some_and(|(min, max)| lo <= min && max <= hi)
        {
            continue;
        }
        for (key, data) in sub_records(r.data.as_ref())? {
            let h = kpl::hash_key(&key);
            if !(lo..=hi).contains(&h) {
                rows.push((key, data, h));
            }
        }
    }
    Ok(rows)
}

/// Delivers `batch` (aggregation mode), then makes sure each aggregate's rows are in a shard
/// that holds their keys, re-sending the others until they are. Returns the batch as
/// acknowledged and the shard map when it had to be read again.
pub async fn deliver_placed(
    d: &Delivery,
    batch: Vec<Record>,
    map: Arc<ShardMap>,
) -> Result<(Vec<Record>, Option<Arc<ShardMap>>), SinkError> {
    let acked = deliver(d, batch).await?;
    let mut map = map;
    let mut refreshed = None;
    let mut queue: std::collections::VecDeque<Row> =
        misplaced(d, &mut map, &mut refreshed, &acked).await?.into();
    while !queue.is_empty() {
        let queued = queue.len();
        let (round, rest) = take_round(&map, std::mem::take(&mut queue));
        let rows = queued - rest.len();
        d.metrics.reshard_resent.inc_by(rows as u64);
        info!(stream = %d.stream, rows, "aggregated rows landed on a shard whose hash range does not hold their keys (after a reshard); re-sending them to the shards that do");
        let sent = deliver(d, round).await?;
        // Rows that missed again go before the rest: a key's rows stay in order.
        queue = misplaced(d, &mut map, &mut refreshed, &sent).await?.into();
        queue.extend(rest);
    }
    Ok((acked, refreshed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        let half = u128::MAX / 2;
        ShardMap::new([
            ("shard-0".to_string(), (0, u128::MAX), false),
            ("shard-1".to_string(), (0, half), true),
            ("shard-2".to_string(), (half + 1, u128::MAX), true),
        ])
    }

    #[test]
    fn routes_over_open_shards_and_knows_closed_ones() {
        let m = map();
        assert_eq!(m.len(), 2);
        assert_eq!(m.route(5), 0);
        assert_eq!(m.route(u128::MAX), 1);
        assert_eq!(m.range_of("shard-0"), Some((0, u128::MAX)));
        assert!(!m.is_open("shard-0"));
    }

    #[test]
    fn rounds_keep_row_order_and_hold_one_aggregate_per_shard() {
        let m = map();
        let rows: Vec<Row> = (0..200)
            .map(|i| {
                let key = format!("s.t:[{}]", i % 17);
                let h = kpl::hash_key(&key);
                (key, vec![i as u8; 9_000], h)
            })
            .collect();
        let mut queue: std::collections::VecDeque<Row> = rows.clone().into();
        let mut back: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        let mut rounds = 0;
        while !queue.is_empty() {
            let (round, rest) = take_round(&m, std::mem::take(&mut queue));
            queue = rest;
            rounds += 1;
            let mut shards = std::collections::HashSet::new();
            for r in &round {
                assert!(r.size() <= MAX_RECORD_BYTES);
                let (lo, hi) = r.sub_hashes.expect("hashes");
                let s = m.route(lo);
                assert_eq!(s, m.route(hi), "one aggregate, one shard");
                assert!(shards.insert(s), "one aggregate per shard per round");
                for (k, d) in sub_records(r.data.as_ref()).expect("decode") {
                    back.entry(k).or_default().push(d);
                }
            }
        }
        assert!(rounds > 1, "1.8 MB of rows over two shards: several rounds");
        let mut want: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for (k, d, _) in rows {
            want.entry(k).or_default().push(d);
        }
        assert_eq!(back, want);
    }
}
