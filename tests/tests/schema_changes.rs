//! Column names stay right across DDL: from information_schema while following live (NO_LOG,
//! MariaDB's default), from the binlog itself with FULL metadata, and an error rather than a
//! guess when neither can be trusted.

use binlogstream_tests::{
    capture::{config, read_all, Live},
    mariadb::{MariaDb, Metadata},
};
use publisher::position::StartFrom;
use serde_json::json;

async fn ddl_between_rows(db: &MariaDb, live: &mut Live) {
    db.exec("INSERT INTO d.t VALUES (1, 'a')").await;
    assert_eq!(
        live.next().await["row"]["values"],
        json!({"id": 1, "name": "a"})
    );

    db.exec("ALTER TABLE d.t ADD COLUMN extra INT DEFAULT 7; INSERT INTO d.t VALUES (2, 'b', 8)")
        .await;
    assert_eq!(
        live.next().await["row"]["values"],
        json!({"id": 2, "name": "b", "extra": 8})
    );

    db.exec("ALTER TABLE d.t DROP COLUMN name; INSERT INTO d.t VALUES (3, 9)")
        .await;
    assert_eq!(
        live.next().await["row"]["values"],
        json!({"id": 3, "extra": 9})
    );

    db.exec("ALTER TABLE d.t RENAME COLUMN extra TO renamed; INSERT INTO d.t VALUES (4, 10)")
        .await;
    assert_eq!(
        live.next().await["row"]["values"],
        json!({"id": 4, "renamed": 10})
    );

    db.exec(
        "ALTER TABLE d.t MODIFY renamed VARCHAR(10); UPDATE d.t SET renamed = 'x' WHERE id = 4",
    )
    .await;
    let upd = live.next().await;
    assert_eq!(
        upd["row"]["before_values"],
        json!({"id": 4, "renamed": "10"})
    );
    assert_eq!(upd["row"]["after_values"], json!({"id": 4, "renamed": "x"}));

    db.exec("RENAME TABLE d.t TO d.t2; INSERT INTO d.t2 VALUES (5, 'y')")
        .await;
    let row = live.next().await;
    assert_eq!(row["table"], "t2");
    assert_eq!(row["row"]["values"], json!({"id": 5, "renamed": "y"}));
}

#[tokio::test]
async fn ddl_between_rows_while_following_with_information_schema() {
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, name VARCHAR(10))")
        .await;
    let mut live = Live::start(config(&db, StartFrom::Latest))
        .await
        .expect("start");
    ddl_between_rows(&db, &mut live).await;
    live.stop().await.expect("clean stop");
}

#[tokio::test]
async fn full_metadata_decodes_history_across_ddl() {
    let db = MariaDb::start(Metadata::Full).await;
    db.exec("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, name VARCHAR(10))")
        .await;
    let mut live = Live::start(config(&db, StartFrom::Latest))
        .await
        .expect("start");
    ddl_between_rows(&db, &mut live).await;
    live.stop().await.expect("clean stop");
    // Read again from the start, after all the DDL: FULL metadata names each row's columns as
    // they were when it was written.
    let all = read_all(config(&db, StartFrom::Earliest), None)
        .await
        .expect("history");
    let values: Vec<serde_json::Value> = all.json().into_iter().map(|v| v["row"].clone()).collect();
    assert_eq!(values[0]["values"], json!({"id": 1, "name": "a"}));
    assert_eq!(
        values[1]["values"],
        json!({"id": 2, "name": "b", "extra": 8})
    );
    assert_eq!(values[2]["values"], json!({"id": 3, "extra": 9}));
    assert_eq!(values[3]["values"], json!({"id": 4, "renamed": 10}));
}

#[tokio::test]
async fn a_schema_that_no_longer_matches_the_binlog_is_an_error_naming_the_table() {
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, name VARCHAR(10));
         INSERT INTO d.t VALUES (1, 'a');
         ALTER TABLE d.t ADD COLUMN extra INT;",
    )
    .await;
    let err = read_all(config(&db, StartFrom::Earliest), None)
        .await
        .err()
        .expect("mismatch");
    let text = err.to_string();
    assert!(
        text.contains("d.t") && text.contains("2 columns") && text.contains("has 3"),
        "{text}"
    );

    // Same count, other types: also refused (an INT read as VARCHAR would be garbage).
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v INT);
         INSERT INTO d.t VALUES (1, 2);
         ALTER TABLE d.t MODIFY v VARCHAR(10);",
    )
    .await;
    let err = read_all(config(&db, StartFrom::Earliest), None)
        .await
        .err()
        .expect("mismatch");
    let text = err.to_string();
    assert!(
        text.contains("d.t") && text.contains("column v") && text.contains("varchar"),
        "{text}"
    );
}

#[tokio::test]
async fn a_dropped_table_without_binlog_names_is_an_error_with_the_way_out() {
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec("CREATE DATABASE d; CREATE TABLE d.gone (id INT PRIMARY KEY); INSERT INTO d.gone VALUES (1); DROP TABLE d.gone;")
        .await;
    let err = read_all(config(&db, StartFrom::Earliest), None)
        .await
        .err()
        .expect("no schema");
    let text = err.to_string();
    assert!(
        text.contains("d.gone") && text.contains("--exclude 'd.gone'"),
        "{text}"
    );
}
