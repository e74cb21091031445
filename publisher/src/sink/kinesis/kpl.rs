//! KPL aggregation: many user records in one Kinesis record, in the format the Kinesis
//! Producer Library writes and the KCL, the Lambda de-aggregation libraries and Firehose
//! read: magic `F3 89 9A C2`, a protobuf `AggregatedRecord`, then the MD5 of the protobuf
//! bytes. The messages are declared here with prost's derive (no protoc needed).

use md5::{Digest, Md5};
use prost::Message;

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Record {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
}

/// The 128-bit hash Kinesis routes a partition key by.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Index of the shard whose hash-key range holds `key` (ranges sorted by start).
pub fn shard_of(ranges: &[(u128, u128)], key: &str) -> usize {
    let h = hash_key(key);
    ranges
        .iter()
        .position(|(lo, hi)| (*lo..=*hi).contains(&h))
        .unwrap_or(0)
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Builds one aggregate, tracking its exact encoded size as records are added.
#[derive(Default)]
pub struct Aggregator {
    agg: AggregatedRecord,
    keys: std::collections::HashMap<String, u64>,
    size: usize,
}

impl Aggregator {
    pub fn is_empty(&self) -> bool {
        self.agg.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.agg.records.len()
    }

    /// Size of the Kinesis record this aggregate would become (data + partition key).
    pub fn record_size(&self) -> usize {
        MAGIC.len() + self.size + 16 + self.agg.partition_key_table.first().map_or(0, String::len)
    }

    /// The size after adding a record, without adding it.
    pub fn size_with(&self, key: &str, data_len: usize) -> usize {
        let mut size = self.size;
        let idx = match self.keys.get(key) {
            Some(i) => *i,
            None => {
                size += field_len(key.len());
                self.keys.len() as u64
            }
        };
        let inner = 1 + varint_len(idx) + field_len(data_len);
        size += field_len(inner);
        let first_key = self
            .agg
            .partition_key_table
            .first()
            .map_or(key.len(), String::len);
        MAGIC.len() + size + 16 + first_key
    }

    pub fn push(&mut self, key: &str, data: Vec<u8>) {
        let idx = match self.keys.get(key) {
            Some(i) => *i,
            None => {
                let i = self.agg.partition_key_table.len() as u64;
                self.size += field_len(key.len());
                self.agg.partition_key_table.push(key.to_string());
                self.keys.insert(key.to_string(), i);
                i
            }
        };
        let inner = 1 + varint_len(idx) + field_len(data.len());
        self.size += field_len(inner);
        self.agg.records.push(Record {
            partition_key_index: idx,
            explicit_hash_key_index: None,
            data,
        });
    }

    /// The aggregate's partition key (its first record's, so it routes to their shard) and
    /// its bytes; the aggregator is empty again afterwards.
    pub fn finish(&mut self) -> (String, Vec<u8>) {
        let agg = std::mem::take(&mut self.agg);
        self.keys.clear();
        self.size = 0;
        let key = agg.partition_key_table.first().cloned().unwrap_or_default();
        let body = agg.encode_to_vec();
        let mut out = Vec::with_capacity(MAGIC.len() + body.len() + 16);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        (key, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_the_format_round_trips() {
        let mut a = Aggregator::default();
        let inputs = [
            ("k1", vec![1u8; 10]),
            ("k2", vec![2u8; 300]),
            ("k1", vec![3u8; 70_000]),
        ];
        for (k, d) in &inputs {
            let predicted = a.size_with(k, d.len());
            a.push(k, d.clone());
            assert_eq!(a.record_size(), predicted);
        }
        let predicted = a.record_size();
        let (key, bytes) = a.finish();
        assert_eq!(key, "k1");
        assert_eq!(bytes.len() + key.len(), predicted);
        assert_eq!(&bytes[..4], &MAGIC);
        let body = &bytes[4..bytes.len() - 16];
        assert_eq!(&bytes[bytes.len() - 16..], Md5::digest(body).as_slice());
        let back = AggregatedRecord::decode(body).expect("decode");
        assert_eq!(back.partition_key_table, vec!["k1", "k2"]);
        assert_eq!(back.records.len(), 3);
        assert_eq!(back.records[2].partition_key_index, 0);
        assert_eq!(back.records[1].data, vec![2u8; 300]);
        assert!(a.is_empty());
    }

    #[test]
    fn shards_by_md5_range() {
        let ranges = [(0u128, u128::MAX / 2), (u128::MAX / 2 + 1, u128::MAX)];
        let k = "shop.orders:[1]";
        let expected = if hash_key(k) <= u128::MAX / 2 { 0 } else { 1 };
        assert_eq!(shard_of(&ranges, k), expected);
    }
}
