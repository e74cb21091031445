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

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited protobuf field (`tag` already holds the wire type).
fn put_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `AggregatedRecord.partition_key_table` (field 1, length-delimited).
const KEY_TABLE_TAG: u8 = 0x0A;
/// `AggregatedRecord.records` (field 3, length-delimited).
const RECORDS_TAG: u8 = 0x1A;
/// `Record.partition_key_index` (field 1, varint).
const KEY_INDEX_TAG: u8 = 0x08;
/// `Record.data` (field 3, length-delimited).
const DATA_TAG: u8 = 0x1A;

/// Builds one aggregate, tracking its exact encoded size as records are added. Records are
/// encoded as they arrive rather than kept as messages: an aggregate holds thousands of rows,
/// and a row costs its encoded bytes instead of a struct, a buffer and two key copies.
#[derive(Default)]
pub struct Aggregator {
    /// Encoded `partition_key_table` entries, in index order.
    key_table: Vec<u8>,
    keys: std::collections::HashMap<Box<str>, u64>,
    first_key: String,
    /// Encoded `records` entries.
    records: Vec<u8>,
    count: usize,
}

impl Aggregator {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn body_len(&self) -> usize {
        self.key_table.len() + self.records.len()
    }

    /// Size of the Kinesis record this aggregate would become (data + partition key).
    pub fn record_size(&self) -> usize {
        MAGIC.len() + self.body_len() + 16 + self.first_key.len()
    }

    /// The size after adding a record, without adding it.
    pub fn size_with(&self, key: &str, data_len: usize) -> usize {
        let mut size = self.body_len();
        let idx = match self.keys.get(key) {
            Some(i) => *i,
            None => {
                size += field_len(key.len());
                self.keys.len() as u64
            }
        };
        let inner = 1 + varint_len(idx) + field_len(data_len);
        size += field_len(inner);
        let first_key = if self.is_empty() {
            key.len()
        } else {
            self.first_key.len()
        };
        MAGIC.len() + size + 16 + first_key
    }

    pub fn push(&mut self, key: &str, data: Vec<u8>) {
        let idx = match self.keys.get(key) {
            Some(i) => *i,
            None => {
                let i = self.keys.len() as u64;
                put_field(&mut self.key_table, KEY_TABLE_TAG, key.as_bytes());
                self.keys.insert(key.into(), i);
                i
            }
        };
        if self.count == 0 {
            self.first_key = key.to_string();
        }
        let inner = 1 + varint_len(idx) + field_len(data.len());
        self.records.push(RECORDS_TAG);
        put_varint(&mut self.records, inner as u64);
        self.records.push(KEY_INDEX_TAG);
        put_varint(&mut self.records, idx);
        put_field(&mut self.records, DATA_TAG, &data);
        self.count += 1;
    }

    /// The aggregate's partition key (its first record's, so it routes to their shard) and
    /// its bytes; the aggregator is empty again afterwards.
    pub fn finish(&mut self) -> (String, Vec<u8>) {
        let key = std::mem::take(&mut self.first_key);
        let mut out = Vec::with_capacity(MAGIC.len() + self.body_len() + 16);
        out.extend_from_slice(&MAGIC);
        // Key table first, then records: the field order protobuf encoders write.
        out.extend_from_slice(&self.key_table);
        out.extend_from_slice(&self.records);
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        // Keep the buffers' capacity for the next aggregate: growing them again by doubling
        // for every aggregate is most of what the allocator would otherwise hand back and forth.
        self.key_table.clear();
        self.keys.clear();
        self.records.clear();
        self.count = 0;
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

        // The next aggregate reuses the buffers and starts its key table afresh.
        let predicted = a.size_with("k2", 5);
        a.push("k2", vec![9u8; 5]);
        let (key, bytes) = a.finish();
        assert_eq!((key.as_str(), bytes.len() + 2), ("k2", predicted));
        let back = AggregatedRecord::decode(&bytes[4..bytes.len() - 16]).expect("decode");
        assert_eq!(back.partition_key_table, vec!["k2"]);
        assert_eq!(back.records.len(), 1);
        assert_eq!(back.records[0].partition_key_index, 0);
    }

    #[test]
    fn incremental_encoding_is_byte_identical_to_prost() {
        let mut a = Aggregator::default();
        let mut msg = AggregatedRecord::default();
        for (i, key) in ["a.t:[1]", "a.t:[2]", "a.t:[1]", "b.u:[300]"]
            .iter()
            .enumerate()
        {
            let data = vec![i as u8; 130 * (i + 1)];
            a.push(key, data.clone());
            let idx = match msg.partition_key_table.iter().position(|k| k == key) {
                Some(p) => p,
                None => {
                    msg.partition_key_table.push(key.to_string());
                    msg.partition_key_table.len() - 1
                }
            };
            msg.records.push(Record {
                partition_key_index: idx as u64,
                explicit_hash_key_index: None,
                data,
            });
        }
        let (_, bytes) = a.finish();
        assert_eq!(&bytes[4..bytes.len() - 16], msg.encode_to_vec().as_slice());
    }

    #[test]
    fn shards_by_md5_range() {
        let ranges = [(0u128, u128::MAX / 2), (u128::MAX / 2 + 1, u128::MAX)];
        let k = "shop.orders:[1]";
        let expected = if hash_key(k) <= u128::MAX / 2 { 0 } else { 1 };
        assert_eq!(shard_of(&ranges, k), expected);
    }
}
