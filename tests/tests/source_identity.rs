//! A checkpoint names the server it was read from (issue 12): on another server a bare
//! `file:pos` is refused with a message saying why and what to do, and a checkpoint with
//! GTIDs resumes there by GTID, exactly after the last delivered transaction.

use std::time::Duration;

use binlogstream_tests::{
    capture::{config, read_all},
    mariadb::{MariaDb, Metadata},
};
use publisher::{
    position::{Checkpoint, StartFrom},
    source::{Reader, SourceError},
};

async fn end_checkpoint(db: &MariaDb) -> Checkpoint {
    let reader = Reader::open(config(db, StartFrom::Latest), None)
        .await
        .expect("open");
    reader.resume_point()
}

fn ids(rows: &[serde_json::Value]) -> Vec<i64> {
    rows.iter()
        .filter(|r| r["type"] == "WriteRowsEvent")
        .map(|r| r["row"]["values"]["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn a_file_position_from_another_server_is_refused() {
    let a = MariaDb::start_with(Metadata::Full, &["--server-id=11"]).await;
    let b = MariaDb::start_with(Metadata::Full, &["--server-id=12"]).await;
    for db in [&a, &b] {
        db.exec(
            "CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY); INSERT INTO s.t VALUES (1)",
        )
        .await;
    }
    let mut cp = end_checkpoint(&a).await;
    let from = cp.server.clone().expect("the checkpoint names its server");
    assert_eq!(from.server_id, 11);
    assert!(from.host.contains(&a.port.to_string()), "{from:?}");
    // A file:pos only (as a checkpoint of a source without GTIDs would be).
    cp.gtid_state = None;
    let err = Reader::open(config(&b, StartFrom::Latest), Some(cp.clone()))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, SourceError::ServerChanged { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("server_id 11"), "{text}");
    assert!(text.contains("server_id 12"), "{text}");
    assert!(text.contains("mean nothing on another server"), "{text}");

    // The same checkpoint on its own server resumes as before.
    a.exec("INSERT INTO s.t VALUES (2)").await;
    let rows = read_all(config(&a, StartFrom::Latest), Some(cp.clone()))
        .await
        .expect("same server")
        .json();
    assert_eq!(ids(&rows), vec![2]);

    // Checkpoints written before they named a server resume as they always did.
    cp.server = None;
    assert!(Reader::open(config(&b, StartFrom::Latest), Some(cp))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_checkpoint_with_gtids_moves_to_the_replica_by_gtid() {
    let mut primary =
        MariaDb::start_with(Metadata::Full, &["--server-id=21", "--log-slave-updates"]).await;
    let replica =
        MariaDb::start_with(Metadata::Full, &["--server-id=22", "--log-slave-updates"]).await;
    replica.replicate_from(&primary).await;
    primary
        .exec("CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY, pad VARCHAR(200))")
        .await;
    // The replica's binlog holds its own events too (different offsets under the same file
    // names): a file:pos from the primary would land elsewhere there.
    replica
        .exec("CREATE DATABASE local_only; CREATE TABLE local_only.x (id INT PRIMARY KEY); INSERT INTO local_only.x VALUES (1), (2), (3)")
        .await;
    for i in 1..=5 {
        primary
            .exec(&format!("INSERT INTO s.t VALUES ({i}, REPEAT('p', 150))"))
            .await;
    }
    let cp = end_checkpoint(&primary).await;
    let mut cp = cp;
    cp.gtid_state = Some(
        primary
            .variable("gtid_binlog_pos")
            .await
            .parse()
            .expect("gtid"),
    );
    for i in 6..=9 {
        primary
            .exec(&format!("INSERT INTO s.t VALUES ({i}, 'q')"))
            .await;
    }
    assert!(
        replica
            .caught_up_with(&primary, Duration::from_secs(60))
            .await
    );
    primary.stop();
    replica.exec("STOP SLAVE; RESET SLAVE ALL").await;

    let mut cfg = config(&replica, StartFrom::Latest);
    cfg.filter = "s.*"
        .parse::<publisher::filter::Pattern>()
        .map(|p| publisher::filter::TableFilter {
            include: vec![p],
            exclude: vec![],
        })
        .expect("filter");
    let sink = read_all(cfg, Some(cp))
        .await
        .expect("resumes on the replica");
    assert_eq!(
        ids(&sink.json()),
        vec![6, 7, 8, 9],
        "exactly the rows after the checkpoint"
    );
}
