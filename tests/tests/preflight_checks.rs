//! A misconfigured source fails before streaming, with a message naming the setting and fix.

use binlogstream_tests::{
    capture::{config, read_all},
    mariadb::{MariaDb, Metadata},
};
use publisher::{
    position::StartFrom,
    source::{Reader, SourceAddr, SourceError},
};
use serde_json::json;

#[tokio::test]
async fn credentials_reachability_and_privileges() {
    let db = MariaDb::start(Metadata::NoLog).await;
    let mut cfg = config(&db, StartFrom::Latest);
    cfg.addr = SourceAddr::new(&db.repl_url(), Some("wrong")).expect("addr");
    let err = Reader::open(cfg, None).await.err().expect("denied");
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("refused the credentials of user `repl`"),
        "{err}"
    );

    let mut cfg = config(&db, StartFrom::Latest);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    cfg.addr =
        SourceAddr::new(&format!("mysql://repl@127.0.0.1:{closed}"), Some("x")).expect("addr");
    let err = Reader::open(cfg, None).await.err().expect("unreachable");
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());

    db.exec(
        "CREATE USER 'noslave'@'%' IDENTIFIED BY 'p'; GRANT BINLOG MONITOR, SELECT ON *.* TO 'noslave'@'%';
         CREATE USER 'nomon'@'%' IDENTIFIED BY 'p'; GRANT REPLICATION SLAVE, SELECT ON *.* TO 'nomon'@'%';",
    )
    .await;
    let mut cfg = config(&db, StartFrom::Latest);
    cfg.addr = SourceAddr::new(&format!("mysql://noslave@127.0.0.1:{}", db.port), Some("p"))
        .expect("addr");
    let err = Reader::open(cfg, None)
        .await
        .err()
        .expect("no REPLICATION SLAVE");
    assert!(
        err.to_string()
            .contains("lacks the REPLICATION SLAVE privilege"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("GRANT REPLICATION SLAVE ON *.* TO 'noslave'"),
        "{err}"
    );

    let mut cfg = config(&db, StartFrom::Latest);
    cfg.addr =
        SourceAddr::new(&format!("mysql://nomon@127.0.0.1:{}", db.port), Some("p")).expect("addr");
    let err = Reader::open(cfg, None)
        .await
        .err()
        .expect("no BINLOG MONITOR");
    assert!(err.to_string().contains("BINLOG MONITOR"), "{err}");
}

#[tokio::test]
async fn binlog_settings() {
    let db = MariaDb::start_with(Metadata::NoLog, &["--skip-log-bin"]).await;
    let err = Reader::open(config(&db, StartFrom::Latest), None)
        .await
        .err()
        .expect("no binlog");
    assert!(err.to_string().contains("log_bin"), "{err}");
    drop(db);

    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec("SET GLOBAL binlog_format = 'STATEMENT'").await;
    let err = Reader::open(config(&db, StartFrom::Latest), None)
        .await
        .err()
        .expect("statement");
    assert!(
        err.to_string().contains("binlog_format is `STATEMENT`"),
        "{err}"
    );
    assert!(err.to_string().contains("binlog_format=ROW"), "{err}");
}

#[tokio::test]
async fn minimal_row_image_is_a_warning_and_records_carry_what_the_binlog_has() {
    let db = MariaDb::start_with(Metadata::NoLog, &["--binlog-row-image=MINIMAL"]).await;
    db.exec(
        "CREATE DATABASE m; CREATE TABLE m.t (id INT PRIMARY KEY, a INT, b INT);
         INSERT INTO m.t VALUES (1, 2, 3); UPDATE m.t SET b = 4 WHERE id = 1; DELETE FROM m.t;",
    )
    .await;
    let reader = Reader::open(config(&db, StartFrom::Earliest), None)
        .await
        .expect("opens");
    let warnings = reader.server().warnings.join(" ");
    assert!(
        warnings.contains("binlog_row_image is `MINIMAL`"),
        "{warnings}"
    );
    drop(reader);
    let rows = read_all(config(&db, StartFrom::Earliest), None)
        .await
        .expect("read")
        .json();
    assert_eq!(rows[0]["row"]["values"], json!({"id": 1, "a": 2, "b": 3}));
    assert_eq!(rows[1]["row"]["before_values"], json!({"id": 1}));
    assert_eq!(rows[1]["row"]["after_values"], json!({"b": 4}));
    assert_eq!(rows[2]["row"]["values"], json!({"id": 1}));
}
