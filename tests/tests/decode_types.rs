//! Every value type of the record format, with edge values, against a real MariaDB: the same
//! records whether names and types come from information_schema (NO_LOG, MariaDB's default),
//! from MINIMAL metadata, or from FULL binlog metadata.

use binlogstream_tests::{
    capture,
    mariadb::{MariaDb, Metadata},
};
use mysql_async::prelude::Queryable;

const EXPECTED: &str = include_str!("expected/types.jsonl");

async fn workload(db: &MariaDb) {
    db.exec(include_str!("common_types.sql")).await;
    let blob: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
    let mut conn = db.root().await;
    conn.query_drop(format!("UPDATE t.strs SET b = 0x{blob} WHERE id = 1"))
        .await
        .expect("update blob");
}

async fn check(meta: Metadata) {
    let db = MariaDb::start(meta).await;
    workload(&db).await;
    let got = capture::read_from_start(&db).await.lines();
    let want: Vec<&str> = EXPECTED.lines().collect();
    assert_eq!(got.len(), want.len(), "record count under {meta:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "under {meta:?}");
    }
    use base64::Engine;
    let last: serde_json::Value = serde_json::from_str(got.last().expect("update")).expect("json");
    let b64 = last["row"]["after_values"]["b"].as_str().expect("blob");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    assert_eq!(
        bytes,
        (0..=255u8).collect::<Vec<_>>(),
        "all 256 byte values under {meta:?}"
    );
}

#[tokio::test]
async fn types_from_information_schema() {
    check(Metadata::NoLog).await;
}

#[tokio::test]
async fn types_from_minimal_binlog_metadata() {
    check(Metadata::Minimal).await;
}

#[tokio::test]
async fn types_from_full_binlog_metadata() {
    check(Metadata::Full).await;
}
