//! MySQL GTID sets: the type and its grammar live in the shared API crate; here is only the
//! wire form the publisher sends (COM_BINLOG_DUMP_GTID's SID block).

use mysql_common::packets::{GnoInterval, Sid, Tag};

pub use binlogstream_api::mysql_gtid::{uuid_text, MysqlGtidParseError, MysqlGtidSet};

/// The SID block of COM_BINLOG_DUMP_GTID (intervals there are end-exclusive).
pub fn to_sids(set: &MysqlGtidSet) -> Vec<Sid<'static>> {
    set.ranges()
        .map(|(uuid, tag, ranges)| {
            let sid = Sid::new(*uuid).with_intervals(
                ranges
                    .iter()
                    .map(|&(s, e)| GnoInterval::new(s, e.saturating_add(1)))
                    .collect(),
            );
            match Tag::new(tag.to_string()) {
                Ok(t) if !tag.is_empty() => sid.with_tag(t),
                _ => sid,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use binlogstream_api::mysql_gtid::parse_uuid;
    use mysql_common::{packets::ComBinlogDumpGtid, proto::MySerialize};

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn uuid(s: &str) -> [u8; 16] {
        parse_uuid(s).expect("uuid")
    }

    #[test]
    fn builds_the_com_binlog_dump_gtid_sid_block() {
        let s: MysqlGtidSet = format!("{A}:1-5:7").parse().expect("set");
        let sids = to_sids(&s);
        assert_eq!(sids.len(), 1);
        assert_eq!(sids[0].uuid(), uuid(A));
        let iv: Vec<(u64, u64)> = sids[0]
            .intervals()
            .iter()
            .map(|i| (i.start(), i.end()))
            .collect();
        assert_eq!(iv, vec![(1, 6), (7, 8)]);

        let mut buf = Vec::new();
        ComBinlogDumpGtid::new(77)
            .with_pos(4)
            .with_sids(sids)
            .serialize(&mut buf);
        let mut want = vec![0x1e]; // COM_BINLOG_DUMP_GTID
        want.extend_from_slice(&4u16.to_le_bytes()); // BINLOG_THROUGH_GTID
        want.extend_from_slice(&77u32.to_le_bytes()); // server id
        want.extend_from_slice(&0u32.to_le_bytes()); // empty file name: auto-position
        want.extend_from_slice(&4u64.to_le_bytes()); // pos
        want.extend_from_slice(&(8u32 + 16 + 8 + 2 * 16).to_le_bytes()); // sid block length
        want.extend_from_slice(&1u64.to_le_bytes()); // one sid
        want.extend_from_slice(&uuid(A));
        want.extend_from_slice(&2u64.to_le_bytes());
        for v in [1u64, 6, 7, 8] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(buf, want);

        // Tagged sets switch the whole block to MySQL 8.4's tagged format.
        let tagged: MysqlGtidSet = format!("{A}:t:3").parse().expect("tagged");
        let sids = to_sids(&tagged);
        assert_eq!(sids[0].tag().map(|t| t.as_str()), Some("t"));
        let mut buf = Vec::new();
        ComBinlogDumpGtid::new(77)
            .with_sids(sids)
            .serialize(&mut buf);
        let block = &buf[1 + 2 + 4 + 4 + 8 + 4..];
        assert_eq!(&block[..8], &((1u64 << 8) | (1u64 << 56)).to_le_bytes());
        assert_eq!(&block[8..24], &uuid(A));
        // Tag length in MySQL's serialization-library varlen (1 byte: value << 1).
        assert_eq!(&block[24..26], &[2, b't']);
    }
}
