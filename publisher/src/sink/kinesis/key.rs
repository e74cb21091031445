//! Partition keys and what to do with records Kinesis would refuse for their size.

use md5::{Digest, Md5};

use crate::{decode::RowChange, json};

/// Kinesis refuses a record whose data plus partition key exceeds 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
pub use binlogstream_api::output::{Oversize, PartitionKey, MAX_KEY_CHARS};

/// A key over Kinesis's limit becomes a stable digest of itself, never an error.
pub fn limit_key(key: String) -> String {
    if key.chars().count() <= MAX_KEY_CHARS {
        return key;
    }
    let digest = Md5::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("md5:{hex}")
}

pub fn partition_key(mode: &PartitionKey, row: &RowChange) -> String {
    let key = match (mode, &row.primary_key) {
        (PartitionKey::Constant(v), _) => return v.clone(),
        (PartitionKey::PrimaryKey, Some(pk)) => format!("{}.{}:{}", row.schema, row.table, pk),
        _ => format!("{}.{}", row.schema, row.table),
    };
    limit_key(key)
}

/// The marker published in place of an oversize row: the seed's keys, the primary key as an
/// object (null for tables without one), then `oversize` and the size it would have had.
pub fn key_only_marker(row: &RowChange, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"table\": ");
    json::write_str(&mut out, &row.table);
    out.extend_from_slice(b", \"row\": {\"key\": ");
    let values: Option<Vec<serde_json::Value>> = row
        .primary_key
        .as_deref()
        .and_then(|pk| serde_json::from_str(pk).ok());
    match (values, &row.key_names) {
        (Some(values), Some(names)) => {
            let obj: serde_json::Map<String, serde_json::Value> =
                names.iter().cloned().zip(values).collect();
            json::write_value(&mut out, &serde_json::Value::Object(obj));
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}, \"type\": ");
    json::write_str(&mut out, row.kind.type_name());
    out.extend_from_slice(b", \"schema\": ");
    json::write_str(&mut out, &row.schema);
    out.extend_from_slice(b", \"oversize\": true, \"size\": ");
    json::write_u64(&mut out, size as u64);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_become_stable_digests() {
        let short = "s.t:[1]".to_string();
        assert_eq!(limit_key(short.clone()), short);
        let long = "x".repeat(300);
        let a = limit_key(long.clone());
        assert_eq!(a, limit_key(long));
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("md5:"));
        let exactly = "é".repeat(256);
        assert_eq!(
            limit_key(exactly.clone()),
            exactly,
            "256 characters is allowed"
        );
    }
}
