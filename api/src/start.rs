//! Start positions (`--start`, `spec.start`) and MariaDB GTIDs: one grammar for the publisher
//! and the operator, so the operator refuses exactly what the publisher would.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::mysql_gtid::MysqlGtidSet;

/// Where to begin when no checkpoint exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The current end of the binlog (only changes made from now on).
    Latest,
    /// The oldest binlog file the server still has.
    Earliest,
    /// A file and the offset of a transaction boundary in it.
    FilePos { file: String, pos: u64 },
    /// A GTID state: the last transaction already seen in each domain (MariaDB `D-S-N` list).
    Gtid(GtidState),
    /// A MySQL executed GTID set (`uuid:1-5,...`): the server sends every transaction not in it.
    MysqlGtid(MysqlGtidSet),
    /// `latest`, and before any change after it, every existing row of the captured tables
    /// (see `snapshot`).
    Snapshot,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid start `{input}`: {reason} (expected latest, earliest, snapshot, FILE:POS or gtid:SET)"
)]
pub struct StartParseError {
    input: String,
    reason: String,
}

impl FromStr for StartFrom {
    type Err = StartParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| StartParseError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        match s.trim() {
            "latest" => Ok(StartFrom::Latest),
            "earliest" => Ok(StartFrom::Earliest),
            "snapshot" => Ok(StartFrom::Snapshot),
            other => {
                if let Some(set) = other.strip_prefix("gtid:") {
                    // A MariaDB GTID (D-S-N) never holds a `:`; a MySQL one always does.
                    if set.contains(':') {
                        return set
                            .parse::<MysqlGtidSet>()
                            .map(StartFrom::MysqlGtid)
                            .map_err(|e| err(&e.to_string()));
                    }
                    return set
                        .parse::<GtidState>()
                        .map(StartFrom::Gtid)
                        .map_err(|e| err(&e.to_string()));
                }
                let (file, pos) = other
                    .rsplit_once(':')
                    .ok_or_else(|| err("no `:` between file and position"))?;
                if file.is_empty() {
                    return Err(err("the binlog file name is empty"));
                }
                let pos: u64 = pos
                    .parse()
                    .map_err(|_| err("the position is not a whole number"))?;
                if pos < 4 {
                    return Err(err("positions start at 4, after the file's magic bytes"));
                }
                Ok(StartFrom::FilePos {
                    file: file.to_string(),
                    pos,
                })
            }
        }
    }
}

impl fmt::Display for StartFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFrom::Latest => f.write_str("latest"),
            StartFrom::Earliest => f.write_str("earliest"),
            StartFrom::Snapshot => f.write_str("snapshot"),
            StartFrom::FilePos { file, pos } => write!(f, "{file}:{pos}"),
            StartFrom::Gtid(g) => write!(f, "gtid:{g}"),
            StartFrom::MysqlGtid(g) => write!(f, "gtid:{g}"),
        }
    }
}

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid GTID `{0}`: expected DOMAIN-SERVER-SEQUENCE, e.g. 0-1-42")]
pub struct GtidParseError(String);

impl FromStr for MariaGtid {
    type Err = GtidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GtidParseError(s.to_string());
        let mut parts = s.trim().splitn(3, '-');
        let domain = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let server = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Ok(MariaGtid {
            domain,
            server,
            seq,
        })
    }
}

/// A MariaDB GTID position: per domain, the last transaction applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(pub BTreeMap<u32, MariaGtid>);

impl GtidState {
    pub fn apply(&mut self, gtid: MariaGtid) {
        self.0.insert(gtid.domain, gtid);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.keys().copied()
    }
}

impl FromStr for GtidState {
    type Err = GtidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut state = GtidState::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: MariaGtid = part.parse()?;
            if state.0.insert(g.domain, g).is_some() {
                return Err(GtidParseError(format!("{s} (domain {} twice)", g.domain)));
            }
        }
        Ok(state)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl Serialize for GtidState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GtidState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_start_form() {
        assert_eq!("latest".parse(), Ok(StartFrom::Latest));
        assert_eq!("earliest".parse(), Ok(StartFrom::Earliest));
        assert_eq!("snapshot".parse(), Ok(StartFrom::Snapshot));
        assert_eq!(StartFrom::Snapshot.to_string(), "snapshot");
        assert_eq!(
            "binlog.000003:1234".parse(),
            Ok(StartFrom::FilePos {
                file: "binlog.000003".into(),
                pos: 1234
            })
        );
        let g: StartFrom = "gtid:0-1-42,2-5-7".parse().expect("gtid");
        assert_eq!(g.to_string(), "gtid:0-1-42,2-5-7");
    }

    #[test]
    fn rejects_bad_starts_with_the_reason() {
        let e = "binlog.000003:abc"
            .parse::<StartFrom>()
            .expect_err("must fail");
        assert!(e.to_string().contains("not a whole number"), "{e}");
        let e = "binlog.000003:2"
            .parse::<StartFrom>()
            .expect_err("must fail");
        assert!(e.to_string().contains("start at 4"), "{e}");
        let e = "gtid:0-1".parse::<StartFrom>().expect_err("must fail");
        assert!(e.to_string().contains("DOMAIN-SERVER-SEQUENCE"), "{e}");
        let e = "gtid:0-1-2,0-1-3"
            .parse::<StartFrom>()
            .expect_err("must fail");
        assert!(e.to_string().contains("domain 0 twice"), "{e}");
    }

    #[test]
    fn gtid_start_picks_the_flavor_from_the_text() {
        let s: StartFrom = "gtid:3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7"
            .parse()
            .expect("mysql");
        assert!(matches!(s, StartFrom::MysqlGtid(_)));
        assert_eq!(
            s.to_string(),
            "gtid:3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7"
        );
        let e = "gtid:nonsense:1".parse::<StartFrom>().expect_err("bad");
        assert!(e.to_string().contains("not a server UUID"), "{e}");
        assert!(matches!(
            "gtid:0-1-5".parse::<StartFrom>(),
            Ok(StartFrom::Gtid(_))
        ));
    }
}
