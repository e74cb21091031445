//! Source events with their own rules, against a real MariaDB: XA transactions (published at
//! XA COMMIT, never at XA PREPARE or XA ROLLBACK), INCIDENT events, the GTID state carried
//! across a restart, and a restart with another table filter in the middle of a transaction.

use binlogstream_tests::{
    capture::{self, config, read_all, MemorySink},
    mariadb::{MariaDb, Metadata},
};
use publisher::{
    filter::TableFilter,
    position::{Checkpoint, StartFrom},
};

fn ids(sink: &MemorySink) -> Vec<i64> {
    sink.json()
        .iter()
        .map(|v| v["row"]["values"]["id"].as_i64().expect("id"))
        .collect()
}

async fn xa_table(db: &MariaDb) {
    db.exec("CREATE DATABASE x; CREATE TABLE x.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await;
}

#[tokio::test]
async fn a_rolled_back_xa_transaction_publishes_nothing() {
    let db = MariaDb::start(Metadata::NoLog).await;
    xa_table(&db).await;
    db.exec(
        "XA START 'a'; INSERT INTO x.t VALUES (1), (2); XA END 'a'; XA PREPARE 'a';
         XA ROLLBACK 'a';",
    )
    .await;
    db.exec("INSERT INTO x.t VALUES (3)").await;
    let sink = capture::read_from_start(&db).await;
    assert_eq!(ids(&sink), vec![3]);
}

#[tokio::test]
async fn an_xa_transaction_is_published_at_its_commit() {
    let db = MariaDb::start(Metadata::NoLog).await;
    xa_table(&db).await;
    // Prepared in one session; a normal transaction commits before the XA COMMIT.
    db.exec("XA START 'b','q',7; INSERT INTO x.t VALUES (10), (11); XA END 'b','q',7; XA PREPARE 'b','q',7")
        .await;
    db.exec("INSERT INTO x.t VALUES (20)").await;

    // Before the commit: nothing of the XA transaction, and the checkpoint stays before its
    // PREPARE so a restart reads it again.
    let before = capture::read_from_start(&db).await;
    assert_eq!(ids(&before), vec![20]);
    let held = before.boundaries.last().expect("a boundary").clone();

    db.exec("XA COMMIT 'b','q',7").await;
    // One phase: logged as an ordinary transaction.
    db.exec("XA START 'c'; INSERT INTO x.t VALUES (30); XA END 'c'; XA COMMIT 'c' ONE PHASE")
        .await;
    let all = capture::read_from_start(&db).await;
    assert_eq!(ids(&all), vec![20, 10, 11, 30]);

    // A restart between PREPARE and COMMIT still yields the XA rows (the normal transaction
    // after the PREPARE comes again: at-least-once).
    let resumed = read_all(config(&db, StartFrom::Earliest), Some(held.clone()))
        .await
        .expect("resume");
    assert_eq!(ids(&resumed), vec![20, 10, 11, 30], "from {held:?}");
}

#[tokio::test]
async fn a_restart_with_another_filter_mid_transaction_skips_no_row() {
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE m; CREATE TABLE m.a (id INT PRIMARY KEY); CREATE TABLE m.b (id INT PRIMARY KEY);
         CREATE TABLE m.c (id INT PRIMARY KEY);
         BEGIN; INSERT INTO m.a VALUES (1), (2); INSERT INTO m.b VALUES (101), (102);
         INSERT INTO m.c VALUES (201); INSERT INTO m.a VALUES (3); INSERT INTO m.b VALUES (103);
         INSERT INTO m.c VALUES (202); COMMIT;",
    )
    .await;
    let filter = |tables: &[&str]| TableFilter {
        include: tables.iter().map(|t| t.parse().expect("pattern")).collect(),
        exclude: Vec::new(),
    };
    let names = |sink: &MemorySink| -> Vec<String> {
        sink.rows
            .iter()
            .zip(ids(sink))
            .map(|(r, id)| format!("{}:{id}", r.table))
            .collect()
    };
    // Filter A captures a and b; the publisher delivered the first 3 of its rows (a:1, a:2,
    // b:101) and stopped: the checkpoint a sink's tracker writes for that.
    let mut cfg = config(&db, StartFrom::Earliest);
    cfg.filter = filter(&["m.a", "m.b"]);
    let under_a = read_all(cfg, None).await.expect("read under A");
    assert_eq!(
        names(&under_a),
        ["a:1", "a:2", "b:101", "b:102", "a:3", "b:103"]
    );
    let third = &under_a.rows[2].position;
    let mut tracker = publisher::sink::ack::AckTracker::default();
    tracker.push_boundary(
        under_a
            .boundaries
            .iter()
            .rfind(|b| b.pos <= third.tx_pos)
            .expect("boundary before the transaction")
            .clone(),
    );
    for row in &under_a.rows[..3] {
        let seq = tracker.push_row(&row.position);
        tracker.ack(seq);
    }
    let mid: Checkpoint = tracker.take_durable().expect("mid-transaction checkpoint");
    assert_eq!(mid.rows_done, 3, "{mid:?}");

    // Restarted under filter B (b and c): b:101 was delivered, b:102 and b:103 were not; c
    // was not captured before, so its rows count from the resume point on.
    let mut cfg = config(&db, StartFrom::Earliest);
    cfg.filter = filter(&["m.b", "m.c"]);
    let under_b = read_all(cfg, Some(mid.clone()))
        .await
        .expect("resume under B");
    let got = names(&under_b);
    for want in ["b:102", "b:103"] {
        assert!(
            got.contains(&want.to_string()),
            "{want} skipped: {got:?} from {mid:?}"
        );
    }
    assert_eq!(got, ["b:102", "c:201", "b:103", "c:202"]);

    // A checkpoint written before event marks existed still resumes by its row count.
    let old = Checkpoint {
        event_mark: None,
        ..mid
    };
    let mut cfg = config(&db, StartFrom::Earliest);
    cfg.filter = filter(&["m.a", "m.b"]);
    let again = read_all(cfg, Some(old))
        .await
        .expect("resume, old checkpoint");
    assert_eq!(names(&again), ["b:102", "a:3", "b:103"]);
}

/// A correctly framed INCIDENT event (LOST_EVENTS) to append at `offset`, with a CRC32 as the
/// file's other events have (MariaDB's default binlog_checksum).
fn incident_event(offset: u64, message: &str) -> Vec<u8> {
    let mut body = 1u16.to_le_bytes().to_vec();
    body.push(message.len() as u8);
    body.extend(message.as_bytes());
    let size = 19 + body.len() as u32 + 4;
    let mut ev = Vec::new();
    ev.extend(1_700_000_000u32.to_le_bytes());
    ev.push(26);
    ev.extend(1u32.to_le_bytes());
    ev.extend(size.to_le_bytes());
    ev.extend((offset as u32 + size).to_le_bytes());
    ev.extend(0u16.to_le_bytes());
    ev.extend(body);
    let crc = crc32fast::hash(&ev);
    ev.extend(crc.to_le_bytes());
    ev
}

#[tokio::test]
async fn an_incident_event_stops_decoding_with_its_file_and_position() {
    use publisher::{decode::EncodeOptions, source::offline::decode_file, source::Item};
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE i; CREATE TABLE i.t (id INT PRIMARY KEY); INSERT INTO i.t VALUES (1), (2)",
    )
    .await;
    let (file, _) = db.binlog_end().await;
    let mut bytes = std::fs::read(db.datadir().join(&file)).expect("binlog");
    let at = bytes.len() as u64;
    bytes.extend(incident_event(at, "the server lost events"));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join(&file);
    std::fs::write(&path, &bytes).expect("write");

    let mut rows = 0;
    let err = decode_file(
        &path,
        TableFilter::default(),
        EncodeOptions::default(),
        |item| {
            if let Item::Row(_) = item {
                rows += 1;
            }
        },
    )
    .await
    .expect_err("an INCIDENT event stops the decoder");
    let text = err.to_string();
    assert!(
        text.contains(&format!("INCIDENT event at {file}:{at}"))
            && text.contains("incident 1: the server lost events"),
        "{text}"
    );
    assert_eq!(rows, 2, "the rows before it are decoded");
}

#[tokio::test]
async fn a_resumed_checkpoint_keeps_the_gtid_domains_seen_before() {
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE g; CREATE TABLE g.t (id INT PRIMARY KEY);
         SET SESSION gtid_domain_id = 5; INSERT INTO g.t VALUES (1);
         SET SESSION gtid_domain_id = 0; INSERT INTO g.t VALUES (2);",
    )
    .await;
    let first = capture::read_from_start(&db).await;
    let cp = first.boundaries.last().expect("boundary").clone();
    let state = cp.gtid_state.clone().expect("gtid state").to_string();
    assert!(
        state.starts_with("0-1-") && state.contains(",5-1-"),
        "{state}"
    );

    db.exec("INSERT INTO g.t VALUES (3)").await;
    let later = read_all(config(&db, StartFrom::Earliest), Some(cp))
        .await
        .expect("resume");
    assert_eq!(ids(&later), vec![3]);
    let after = later.boundaries.last().expect("boundary").clone();
    let state = after.gtid_state.expect("gtid state").to_string();
    assert!(state.contains(",5-1-"), "domain 5 dropped out: {state}");
}
