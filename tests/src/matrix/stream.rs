//! Reads a stream back as a KCL consumer would: every shard, open or closed, from
//! TRIM_HORIZON to its end, parents before children; KPL aggregates de-aggregated (written
//! here from the format, not borrowed from the publisher, so a bug there is not copied), and
//! sub-records whose hash key falls outside the receiving shard's range dropped, as the KCL
//! and the Lambda de-aggregators drop them.

use std::collections::{HashMap, HashSet};

use aws_sdk_kinesis::{types::ShardIteratorType, Client};
use md5::{Digest, Md5};
use prost::Message;

const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<SubRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct SubRecord {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
}

/// One shard as ListShards reports it.
#[derive(Debug, Clone)]
pub struct Shard {
    pub id: String,
    pub parents: Vec<String>,
    pub start: u128,
    pub end: u128,
}

/// A user record as the consumer's application sees it, in reading order.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub shard: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct ReadBack {
    pub shards: Vec<Shard>,
    pub records: Vec<UserRecord>,
    /// Kinesis records read (aggregates count once).
    pub kinesis_records: u64,
    pub aggregates: u64,
    /// Sub-records dropped because their hash key is outside the shard's range.
    pub kcl_dropped: u64,
    /// Aggregates whose MD5 trailer did not match (the KCL then passes them on whole).
    pub bad_checksums: u64,
}

impl ReadBack {
    /// `shard` is `other` or one of its ancestors, or the other way round: the consumer
    /// reads them one after the other, so their records have an order.
    pub fn ordered(&self, a: &str, b: &str) -> bool {
        a == b || self.ancestors(a).contains(b) || self.ancestors(b).contains(a)
    }

    pub fn ancestors(&self, id: &str) -> HashSet<String> {
        let by_id: HashMap<&str, &Shard> = self.shards.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut out = HashSet::new();
        let mut todo = vec![id.to_string()];
        // Bounded by the number of shards: each is visited once.
        while let Some(s) = todo.pop() {
            if let Some(sh) = by_id.get(s.as_str()) {
                for p in &sh.parents {
                    if out.insert(p.clone()) {
                        todo.push(p.clone());
                    }
                }
            }
        }
        out
    }
}

fn hash_of(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

pub async fn list_shards(client: &Client, stream: &str) -> anyhow::Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let page = req.send().await?;
        for s in page.shards() {
            let range = s.hash_key_range();
            let parse = |v: Option<&str>| v.and_then(|v| v.parse::<u128>().ok());
            shards.push(Shard {
                id: s.shard_id().to_string(),
                parents: s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_string)
                    .collect(),
                start: parse(range.map(|r| r.starting_hash_key())).unwrap_or(0),
                end: parse(range.map(|r| r.ending_hash_key())).unwrap_or(u128::MAX),
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(shards)
}

/// Parents before children: a shard is read once every parent has been.
fn topological(shards: &[Shard]) -> Vec<Shard> {
    let ids: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut rest: Vec<Shard> = shards.to_vec();
    rest.sort_by(|a, b| a.id.cmp(&b.id));
    for _ in 0..=shards.len() {
        let (ready, wait): (Vec<Shard>, Vec<Shard>) = rest.into_iter().partition(|s| {
            s.parents
                .iter()
                .all(|p| done.contains(p) || !ids.contains(p.as_str()))
        });
        for s in ready {
            done.insert(s.id.clone());
            out.push(s);
        }
        rest = wait;
        if rest.is_empty() {
            break;
        }
    }
    out.extend(rest);
    out
}

/// Every record of the stream, de-aggregated and filtered as the KCL does.
pub async fn read_stream(client: &Client, stream: &str) -> anyhow::Result<ReadBack> {
    let shards = topological(&list_shards(client, stream).await?);
    let mut back = ReadBack {
        shards: shards.clone(),
        ..ReadBack::default()
    };
    for shard in &shards {
        let mut iter = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard.id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_string);
        // Bounded: a page holds at least one record unless the shard's end is reached.
        for _ in 0..1_000_000 {
            let Some(it) = iter.take() else { break };
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await?;
            for r in page.records() {
                back.kinesis_records += 1;
                accept(
                    &mut back,
                    shard,
                    r.partition_key().unwrap_or_default(),
                    r.data().as_ref(),
                );
            }
            if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
                break;
            }
            iter = page.next_shard_iterator().map(str::to_string);
        }
    }
    Ok(back)
}

fn accept(back: &mut ReadBack, shard: &Shard, key: &str, data: &[u8]) {
    let whole = |back: &mut ReadBack| {
        back.records.push(UserRecord {
            shard: shard.id.clone(),
            partition_key: key.to_string(),
            data: data.to_vec(),
        })
    };
    if data.len() < MAGIC.len() + 16 || data[..4] != MAGIC {
        return whole(back);
    }
    let body = &data[4..data.len() - 16];
    if Md5::digest(body).as_slice() != &data[data.len() - 16..] {
        back.bad_checksums += 1;
        return whole(back);
    }
    let Ok(agg) = AggregatedRecord::decode(body) else {
        back.bad_checksums += 1;
        return whole(back);
    };
    back.aggregates += 1;
    for sub in agg.records {
        let pk = agg
            .partition_key_table
            .get(sub.partition_key_index as usize)
            .cloned()
            .unwrap_or_default();
        let hash = match sub
            .explicit_hash_key_index
            .and_then(|i| agg.explicit_hash_key_table.get(i as usize))
        {
            Some(ehk) => ehk.parse::<u128>().unwrap_or(0),
            None => hash_of(&pk),
        };
        if hash < shard.start || hash > shard.end {
            back.kcl_dropped += 1;
            continue;
        }
        back.records.push(UserRecord {
            shard: shard.id.clone(),
            partition_key: pk,
            data: sub.data,
        });
    }
}
