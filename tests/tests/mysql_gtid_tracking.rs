//! The reader's MySQL executed-GTID tracking on binlogs recorded from real servers
//! (../shared/fixtures/mysql-binlogs), decoded offline through the same `Reader::handle` as a
//! live dump. After each file the set must be its PREVIOUS_GTIDS plus every GTID of a
//! committed transaction in it; anonymous GTIDs never enter it.
//!
//! Expected sets are checked against an independent reading of the event bytes: untagged
//! GTID (type 33) and PREVIOUS_GTIDS (type 35) events are parsed here from their fixed
//! layouts. `mariadb-binlog` cannot help: it prints MySQL GTID events as "Ignorable" without
//! their content and stops at the tagged GTID event (type 42). The tagged file's values were
//! decoded by hand from its bytes (see `tagged_gtid_file`).

use std::path::Path;

use publisher::{
    decode::EncodeOptions,
    filter::TableFilter,
    mysql_gtid::MysqlGtidSet,
    source::{offline::decode_file_to_end, Item},
};

/// The executed set in each Commit checkpoint, in order, and the final resume point's set.
async fn ours(path: &Path) -> (Vec<Option<String>>, Option<String>) {
    let mut commits = Vec::new();
    let decoded = decode_file_to_end(
        path,
        TableFilter::default(),
        EncodeOptions::default(),
        |item| {
            if let Item::Commit(cp) = item {
                commits.push(cp.mysql_gtid_set.map(|s| s.to_string()));
            }
        },
    )
    .await
    .expect("the file decodes");
    (commits, decoded.end.mysql_gtid_set.map(|s| s.to_string()))
}

/// Independent reading of the untagged GTID events: the PREVIOUS_GTIDS set, the GTIDs of
/// GTID events in file order, and how many ANONYMOUS_GTID events there are.
struct Raw {
    previous: MysqlGtidSet,
    gtids: Vec<([u8; 16], u64)>,
    anonymous: usize,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn raw(path: &Path) -> Raw {
    let bytes = std::fs::read(path).expect("read");
    assert_eq!(&bytes[..4], b"\xfebin");
    let mut out = Raw {
        previous: MysqlGtidSet::default(),
        gtids: Vec::new(),
        anonymous: 0,
    };
    let mut off = 4;
    while off + 19 <= bytes.len() {
        let ty = bytes[off + 4];
        let size =
            u32::from_le_bytes(bytes[off + 9..off + 13].try_into().expect("4 bytes")) as usize;
        let body = &bytes[off + 19..off + size];
        match ty {
            // PREVIOUS_GTIDS: n_sids (u64), then per sid: uuid, n_intervals (u64), intervals
            // as [start, end) u64 pairs. A tagged-format set sets the low byte to 1.
            35 => {
                let n = le_u64(body, 0);
                assert_eq!(n & 0xff, n, "tagged PREVIOUS_GTIDS: decode by hand");
                let mut at = 8;
                for _ in 0..n {
                    let uuid: [u8; 16] = body[at..at + 16].try_into().expect("uuid");
                    let intervals = le_u64(body, at + 16);
                    at += 24;
                    for _ in 0..intervals {
                        let (s, e) = (le_u64(body, at), le_u64(body, at + 8));
                        out.previous.add_range(uuid, "", s, e - 1);
                        at += 16;
                    }
                }
            }
            // GTID: flags (1 byte), uuid (16), gno (8).
            33 => out
                .gtids
                .push((body[1..17].try_into().expect("uuid"), le_u64(body, 17))),
            34 => out.anonymous += 1,
            42 => panic!("tagged GTID event: decode by hand"),
            _ => {}
        }
        off += size;
    }
    out
}

#[tokio::test]
async fn untagged_gtids_are_added_on_each_commit() {
    let Some(dir) = binlogstream_tests::mysql_fixtures() else {
        return;
    };
    let path = dir.join("binlog_transaction_with_GTID.000001");
    let u = "006c2cf2-b1ea-11e4-9057-8c705a3d3e78";

    // Independently: an empty PREVIOUS_GTIDS, then three GTID transactions (CREATE TABLE;
    // BEGIN, INSERT, COMMIT; DROP TABLE), all committed.
    let r = raw(&path);
    assert!(r.previous.is_empty());
    let mut expected = r.previous.clone();
    for (uuid, gno) in &r.gtids {
        expected.add(*uuid, "", *gno);
    }
    assert_eq!(expected.to_string(), format!("{u}:1-3"));
    assert_eq!(r.anonymous, 0);

    let (commits, end) = ours(&path).await;
    assert_eq!(
        commits,
        vec![
            Some(format!("{u}:1")),
            Some(format!("{u}:1-2")),
            Some(format!("{u}:1-3")),
        ],
        "each commit adds its own transaction, and only after it committed"
    );
    assert_eq!(end, Some(expected.to_string()));
}

#[tokio::test]
async fn tagged_gtid_file() {
    let Some(dir) = binlogstream_tests::mysql_fixtures() else {
        return;
    };
    let path = dir.join("binlog_transaction_with_GTID_TAG.000001");
    // MySQL 8.4, decoded by hand from the bytes:
    // - PREVIOUS_GTIDS at 127, tagged format (n = 0x01..0201: 2 sids): 55778904-...-feb with
    //   no tag and [1, 14), then the same UUID with tag "mytag" (length 0x0a >> 1 = 5) and
    //   [1, 3).
    // - GTID_TAGGED at 245 (serialization-library varlen fields): uuid 55778904-...-feb
    //   (field 1), gno 0x0c (field 2, zigzag: 3), tag "mytag" (field 3); committed by the
    //   XID at 510.
    let u = "55778904-0299-11f1-b1b8-4ef0c4956feb";
    let previous: MysqlGtidSet = format!("{u}:1-13:mytag:1-2").parse().expect("set");
    let mut expected = previous.clone();
    expected.union(&format!("{u}:mytag:3").parse().expect("gtid"));
    assert_eq!(expected.to_string(), format!("{u}:1-13:mytag:1-3"));

    let (commits, end) = ours(&path).await;
    assert_eq!(commits, vec![Some(expected.to_string())]);
    assert_eq!(end, Some(expected.to_string()));
}

#[tokio::test]
async fn previous_gtids_alone_are_the_executed_set() {
    let Some(dir) = binlogstream_tests::mysql_fixtures() else {
        return;
    };
    let path = dir.join("binlog_transaction_previous_GTID_no_tag.000001");
    let r = raw(&path);
    assert!(r.gtids.is_empty() && r.anonymous == 0, "no transactions");
    assert_eq!(
        r.previous.to_string(),
        "b9b88c66-0755-11f1-9899-4a9da94c4d71:1-2"
    );

    let (commits, end) = ours(&path).await;
    assert!(commits.is_empty());
    assert_eq!(end, Some(r.previous.to_string()));
}

#[tokio::test]
async fn anonymous_gtids_never_enter_the_set() {
    let Some(dir) = binlogstream_tests::mysql_fixtures() else {
        return;
    };
    for (name, anonymous) in [
        ("binlog_transaction_with_anonymous_GTID.000001", 2),
        ("bug27213339-bin.000001", 46),
    ] {
        let path = dir.join(name);
        let r = raw(&path);
        assert!(r.previous.is_empty(), "{name}");
        assert!(r.gtids.is_empty(), "{name}");
        assert_eq!(r.anonymous, anonymous, "{name}");

        let (commits, end) = ours(&path).await;
        assert!(!commits.is_empty(), "{name}: its transactions commit");
        // An empty executed set is stored as none.
        assert!(commits.iter().all(Option::is_none), "{name}: {commits:?}");
        assert_eq!(end, None, "{name}");
    }
}
