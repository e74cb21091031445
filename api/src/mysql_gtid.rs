//! MySQL GTID sets (`uuid:1-5:7,uuid2:tag:1-3`): the executed set a replica sends with
//! COM_BINLOG_DUMP_GTID so the server starts at the first transaction not in it, whichever
//! binlog file (or server, after a failover) that is in.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Per (server UUID, tag) the transaction numbers executed, as sorted, disjoint, non-adjacent
/// inclusive ranges. The empty tag is an untagged GTID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet(BTreeMap<SidKey, Vec<(u64, u64)>>);

/// Server UUID and tag ("" when untagged).
type SidKey = ([u8; 16], String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MySQL GTID set `{input}`: {reason} (expected UUID:N[-M][:N[-M]...][:TAG:N[-M]...], comma-separated)")]
pub struct MysqlGtidParseError {
    input: String,
    reason: String,
}

pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let dashes_ok = s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-');
    if hex.len() != 32 || !(dashes_ok || s.len() == 32) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn uuid_text(sid: &[u8; 16]) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl MysqlGtidSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one committed transaction.
    pub fn add(&mut self, uuid: [u8; 16], tag: &str, gno: u64) {
        self.add_range(uuid, tag, gno, gno);
    }

    /// Adds `start..=end`, merging with overlapping or adjacent ranges.
    pub fn add_range(&mut self, uuid: [u8; 16], tag: &str, start: u64, end: u64) {
        if start == 0 || end < start {
            return;
        }
        let ranges = self.0.entry((uuid, tag.to_string())).or_default();
        let i = ranges.partition_point(|&(_, e)| e.saturating_add(1) < start);
        let (mut s, mut e) = (start, end);
        let mut j = i;
        while j < ranges.len() && ranges[j].0 <= e.saturating_add(1) {
            s = s.min(ranges[j].0);
            e = e.max(ranges[j].1);
            j += 1;
        }
        ranges.splice(i..j, [(s, e)]);
    }

    /// Adds every transaction of `other` (e.g. a PREVIOUS_GTIDS event).
    pub fn union(&mut self, other: &MysqlGtidSet) {
        for ((uuid, tag), ranges) in &other.0 {
            for &(s, e) in ranges {
                self.add_range(*uuid, tag, s, e);
            }
        }
    }

    /// True when every transaction of `self` is in `other`.
    pub fn is_subset(&self, other: &MysqlGtidSet) -> bool {
        self.0.iter().all(|(key, ranges)| {
            other.0.get(key).is_some_and(|have| {
                ranges
                    .iter()
                    .all(|&(s, e)| have.iter().any(|&(hs, he)| hs <= s && e <= he))
            })
        })
    }

    pub fn contains(&self, uuid: [u8; 16], tag: &str, gno: u64) -> bool {
        self.0
            .get(&(uuid, tag.to_string()))
            .is_some_and(|r| r.iter().any(|&(s, e)| s <= gno && gno <= e))
    }

    /// Per (server UUID, tag), the executed ranges (inclusive, sorted, disjoint).
    pub fn ranges(&self) -> impl Iterator<Item = (&[u8; 16], &str, &[(u64, u64)])> {
        self.0
            .iter()
            .map(|((uuid, tag), r)| (uuid, tag.as_str(), r.as_slice()))
    }
}

fn is_tag(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl FromStr for MysqlGtidSet {
    type Err = MysqlGtidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| MysqlGtidParseError {
            input: s.to_string(),
            reason,
        };
        let mut set = MysqlGtidSet::default();
        // MySQL prints long sets with `,\n`; tolerate any whitespace.
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        for entry in compact.split(',').filter(|e| !e.is_empty()) {
            let mut parts = entry.split(':');
            let uuid_text = parts.next().unwrap_or_default();
            let uuid = parse_uuid(uuid_text)
                .ok_or_else(|| err(format!("`{uuid_text}` is not a server UUID")))?;
            let mut tag = String::new();
            let mut any = false;
            for part in parts {
                if part.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let num = |t: &str| {
                        t.parse::<u64>()
                            .map_err(|_| err(format!("`{part}` is not N or N-M")))
                    };
                    let (a, b) = (num(a)?, num(b)?);
                    if a == 0 || b < a {
                        return Err(err(format!(
                            "`{part}`: transaction numbers start at 1 and ranges go upwards"
                        )));
                    }
                    set.add_range(uuid, &tag, a, b);
                    any = true;
                } else {
                    // Tags are case-insensitive; MySQL stores them lowercased.
                    let t = part.to_ascii_lowercase();
                    if !is_tag(&t) {
                        return Err(err(format!(
                            "`{part}` is neither a range nor a tag ([a-z_][a-z0-9_]{{0,31}})"
                        )));
                    }
                    tag = t;
                }
            }
            if !any {
                return Err(err(format!("`{entry}` names no transactions")));
            }
        }
        Ok(set)
    }
}

/// MySQL's own text form: lowercase UUIDs, untagged ranges first, then each tag with its
/// ranges (`uuid:1-5:7:tag:1-3`), entries comma-separated in UUID order.
impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last_uuid: Option<[u8; 16]> = None;
        for ((uuid, tag), ranges) in &self.0 {
            if last_uuid != Some(*uuid) {
                if last_uuid.is_some() {
                    f.write_str(",")?;
                }
                f.write_str(&uuid_text(uuid))?;
                last_uuid = Some(*uuid);
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for &(s, e) in ranges {
                if s == e {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{e}")?;
                }
            }
        }
        Ok(())
    }
}

impl Serialize for MysqlGtidSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MysqlGtidSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4f22fa47-71ca-11e1-9e33-c80aa9429562";

    fn uuid(s: &str) -> [u8; 16] {
        parse_uuid(s).expect("uuid")
    }

    #[test]
    fn parses_normalises_and_displays() {
        let s: MysqlGtidSet = format!("{}:7:1-3:4-5, {B}:Tag_1:1-3,\n{A}:9", A.to_uppercase())
            .parse()
            .expect("set");
        assert_eq!(s.to_string(), format!("{A}:1-5:7:9,{B}:tag_1:1-3"));
        // MySQL's grouped form for tags reads back the same.
        let grouped: MysqlGtidSet = format!("{A}:1-2:alpha:5:beta:1-2")
            .parse()
            .expect("grouped");
        assert_eq!(grouped.to_string(), format!("{A}:1-2:alpha:5:beta:1-2"));
        assert!(grouped.contains(uuid(A), "alpha", 5));
        assert!(!grouped.contains(uuid(A), "", 5));
        assert_eq!("".parse(), Ok(MysqlGtidSet::default()));
    }

    #[test]
    fn rejects_bad_sets_with_the_reason() {
        for (text, reason) in [
            ("nonsense:1", "not a server UUID"),
            (&format!("{A}:0-3"), "start at 1"),
            (&format!("{A}:5-3"), "start at 1"),
            (&format!("{A}:1-x"), "not N or N-M"),
            (&format!("{A}:Bad-Tag:1"), "neither a range nor a tag"),
            (&format!("{A}:tag"), "names no transactions"),
            (A, "names no transactions"),
        ] {
            let e = text.parse::<MysqlGtidSet>().expect_err(text).to_string();
            assert!(e.contains(reason), "{text}: {e}");
        }
    }

    #[test]
    fn adding_merges_adjacent_and_overlapping_ranges() {
        let u = uuid(A);
        let mut s = MysqlGtidSet::default();
        for g in [5, 1, 3, 2, 9] {
            s.add(u, "", g);
        }
        assert_eq!(s.to_string(), format!("{A}:1-3:5:9"));
        s.add(u, "", 4);
        assert_eq!(s.to_string(), format!("{A}:1-5:9"));
        s.add_range(u, "", 6, 8);
        assert_eq!(s.to_string(), format!("{A}:1-9"));
        s.add(u, "", 3);
        assert_eq!(s.to_string(), format!("{A}:1-9"));
        s.add(u, "t", 1);
        s.add_range(u, "", 20, 30);
        s.add_range(u, "", 11, 25);
        assert_eq!(s.to_string(), format!("{A}:1-9:11-30:t:1"));

        let mut other: MysqlGtidSet = format!("{A}:10,{B}:1-2").parse().expect("other");
        other.union(&s);
        assert_eq!(other.to_string(), format!("{A}:1-30:t:1,{B}:1-2"));
    }

    #[test]
    fn serde_round_trip_is_the_text_form() {
        let s: MysqlGtidSet = format!("{A}:1-5,{B}:x:1").parse().expect("set");
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(json, format!("\"{A}:1-5,{B}:x:1\""));
        assert_eq!(
            serde_json::from_str::<MysqlGtidSet>(&json).expect("back"),
            s
        );
        assert!(serde_json::from_str::<MysqlGtidSet>("\"junk\"").is_err());
    }
}
