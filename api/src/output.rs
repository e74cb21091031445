//! What the Kinesis target does with keys and oversize rows (`--partition-key`,
//! `--oversize`, `spec.target.partitionKey`, `spec.output.oversize`).

/// Kinesis partition keys are 1 to 256 Unicode characters.
pub const MAX_KEY_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    /// `schema.table:[pk values]`: each row's changes stay in one shard, in order. Tables
    /// without a primary key fall back to `schema.table`.
    PrimaryKey,
    Table,
    Constant(String),
}

impl std::str::FromStr for PartitionKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "primary-key" => Ok(PartitionKey::PrimaryKey),
            "table" => Ok(PartitionKey::Table),
            other => match other.strip_prefix("constant:") {
                Some(v) if !v.is_empty() && v.chars().count() <= MAX_KEY_CHARS => Ok(PartitionKey::Constant(v.to_string())),
                _ => Err(format!(
                    "`{s}` is not primary-key, table or constant:VALUE (VALUE 1 to {MAX_KEY_CHARS} characters)"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Stop with an error naming table, key and size.
    Fail,
    /// Log and count the row, publish nothing for it.
    Skip,
    /// Publish a small marker (table, type, key, `oversize`, size) in its place.
    KeyOnly,
}

impl std::str::FromStr for Oversize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(Oversize::Fail),
            "skip" => Ok(Oversize::Skip),
            "key-only" => Ok(Oversize::KeyOnly),
            _ => Err(format!("`{s}` is not fail, skip or key-only")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("primary-key".parse(), Ok(PartitionKey::PrimaryKey));
        assert_eq!(
            "constant:default".parse(),
            Ok(PartitionKey::Constant("default".into()))
        );
        assert!("constant:".parse::<PartitionKey>().is_err());
        assert_eq!("key-only".parse(), Ok(Oversize::KeyOnly));
        assert!("drop".parse::<Oversize>().is_err());
    }
}
