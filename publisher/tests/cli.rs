//! The `publisher` binary as users run it: flags, environment, config file, stdout, signals.

use std::process::{Command, Stdio};

use binlogstream_tests::mariadb::{MariaDb, Metadata};

const BIN: &str = env!("CARGO_BIN_EXE_publisher");

async fn source() -> MariaDb {
    let db = MariaDb::start(Metadata::NoLog).await;
    db.exec(
        "CREATE DATABASE kinesistest CHARACTER SET utf8mb4;
         CREATE TABLE kinesistest.Users (idUsers INT PRIMARY KEY, Name VARCHAR(100));
         CREATE TABLE kinesistest.tmp_x (id INT PRIMARY KEY);
         INSERT INTO kinesistest.Users VALUES (123, 'Foo User');
         INSERT INTO kinesistest.tmp_x VALUES (1);
         UPDATE kinesistest.Users SET Name = 'Bar User' WHERE idUsers = 123;",
    )
    .await;
    db
}

const EXPECTED: [&str; 2] = [
    r#"{"table": "Users", "row": {"values": {"idUsers": 123, "Name": "Foo User"}}, "type": "WriteRowsEvent", "schema": "kinesistest"}"#,
    r#"{"table": "Users", "row": {"before_values": {"idUsers": 123, "Name": "Foo User"}, "after_values": {"idUsers": 123, "Name": "Bar User"}}, "type": "UpdateRowsEvent", "schema": "kinesistest"}"#,
];

#[tokio::test]
async fn flags_and_password_file_to_stdout() {
    let db = source().await;
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", db.repl_password)).expect("pw");
    let cp = dir.path().join("checkpoint.json");
    let out = Command::new(BIN)
        .args(["run", "--source", &db.repl_url(), "--password-file"])
        .arg(&pw)
        .args([
            "--server-id",
            "4242",
            "--start",
            "earliest",
            "--include",
            "kinesistest.*",
        ])
        .args([
            "--exclude",
            "kinesistest.tmp_*",
            "--sink",
            "stdout",
            "--stop-at-end",
            "true",
            "--checkpoint-file",
        ])
        .arg(&cp)
        .env_remove("BINLOGSTREAM_PASSWORD")
        .output()
        .expect("run publisher");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        EXPECTED,
        "stdout carries records only"
    );
    // The checkpoint file names the end: a second run resumes there and prints nothing.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cp).expect("checkpoint")).expect("json");
    assert_eq!(saved["file"], "binlog.000001");
    let again = Command::new(BIN)
        .args(["run", "--source", &db.repl_url(), "--password-file"])
        .arg(&pw)
        .args([
            "--server-id",
            "4242",
            "--start",
            "earliest",
            "--stop-at-end",
            "true",
            "--checkpoint-file",
        ])
        .arg(&cp)
        .output()
        .expect("run again");
    assert!(again.status.success());
    assert!(
        again.stdout.is_empty(),
        "resumed after the last row: {}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[tokio::test]
async fn config_file_and_environment() {
    let db = source().await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("publisher.toml");
    let out_file = dir.path().join("records.jsonl");
    std::fs::write(
        &cfg,
        format!(
            "source = \"{}\"\nserver-id = 4343\nstart = \"earliest\"\nexclude = [\"kinesistest.tmp_*\"]\nsink = \"file:{}\"\nstop-at-end = true\n",
            db.repl_url(),
            out_file.display()
        ),
    )
    .expect("cfg");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("BINLOGSTREAM_PASSWORD", &db.repl_password)
        .output()
        .expect("run publisher");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&out_file).expect("records file");
    assert_eq!(written.lines().collect::<Vec<_>>(), EXPECTED);

    // A bad value in the file is named.
    std::fs::write(&cfg, "source = \"mysql://u@h:1\"\nstart = \"sometime\"\n").expect("cfg");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("start:") && stderr.contains("sometime"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly_with_a_final_checkpoint() {
    let db = source().await;
    let dir = tempfile::tempdir().expect("tmp");
    let cp = dir.path().join("cp.json");
    let child = Command::new(BIN)
        .args([
            "run",
            "--source",
            &db.repl_url(),
            "--server-id",
            "4444",
            "--start",
            "earliest",
            "--checkpoint-file",
        ])
        .arg(&cp)
        .env("BINLOGSTREAM_PASSWORD", &db.repl_password)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cp.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "exit 0 on SIGTERM: {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}
