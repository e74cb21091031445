//! Whether the rows a mid-transaction checkpoint counts as delivered may be skipped on resume.
//! A resume by GTID set starts at the first transaction missing from the set, which is not
//! always the one the checkpoint was inside (a set with gaps, a failover to a server that
//! orders transactions differently): skipping rows of another transaction would drop them.

use std::fmt;

/// The first transaction after a resume is not the one the checkpoint's rows belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongTransaction {
    pub expected: String,
    /// `None`: the transaction carries no GTID (anonymous, or a server without GTIDs).
    pub received: Option<String>,
    pub rows_done: u64,
}

impl fmt::Display for WrongTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.received {
            Some(g) => write!(f, "transaction {g}"),
            None => f.write_str("a transaction without a GTID"),
        }
    }
}

/// Rows of the first transaction to skip: `rows_done` when it is the recorded transaction,
/// 0 when nothing was delivered. A checkpoint without a recorded GTID (written before it was
/// recorded, or a source without GTIDs) is trusted as before: it is only ever resumed by
/// file and offset, where the transaction at that offset is the one it counted.
pub fn rows_to_skip(
    expected: Option<&str>,
    received: Option<&str>,
    rows_done: u64,
) -> Result<u64, WrongTransaction> {
    match expected {
        _ if rows_done == 0 => Ok(0),
        None => Ok(rows_done),
        Some(e) if received == Some(e) => Ok(rows_done),
        Some(e) => Err(WrongTransaction {
            expected: e.to_string(),
            received: received.map(str::to_string),
            rows_done,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562:8";

    #[test]
    fn skips_only_rows_of_the_recorded_transaction() {
        assert_eq!(rows_to_skip(Some(G), Some(G), 3), Ok(3));
        assert_eq!(rows_to_skip(Some("0-1-9"), Some("0-1-9"), 1), Ok(1));
        assert_eq!(
            rows_to_skip(Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:t:8"), Some(G), 3),
            Err(WrongTransaction {
                expected: "3e11fa47-71ca-11e1-9e33-c80aa9429562:t:8".into(),
                received: Some(G.into()),
                rows_done: 3,
            }),
            "the tag is part of the identity"
        );
    }

    #[test]
    fn another_or_anonymous_transaction_is_an_error() {
        let gap = "3e11fa47-71ca-11e1-9e33-c80aa9429562:6";
        let e = rows_to_skip(Some(G), Some(gap), 2).expect_err("wrong transaction");
        assert_eq!((e.expected.as_str(), e.rows_done), (G, 2));
        assert_eq!(e.to_string(), format!("transaction {gap}"));
        let e = rows_to_skip(Some(G), None, 2).expect_err("anonymous");
        assert_eq!(e.to_string(), "a transaction without a GTID");
    }

    #[test]
    fn nothing_delivered_or_nothing_recorded() {
        // At a boundary nothing is skipped, whatever arrives.
        assert_eq!(rows_to_skip(Some(G), Some("x:1"), 0), Ok(0));
        assert_eq!(rows_to_skip(None, Some(G), 0), Ok(0));
        // Older checkpoints (no recorded GTID) keep their file:pos behaviour.
        assert_eq!(rows_to_skip(None, Some(G), 4), Ok(4));
        assert_eq!(rows_to_skip(None, None, 4), Ok(4));
    }
}
