//! Records are byte-identical to what the original publisher (python-mysql-replication +
//! json.dumps, in the blog sample's key order) printed for integer and text tables, and
//! JSON-equal where the original escaped non-ASCII.

use binlogstream_tests::{
    capture,
    mariadb::{MariaDb, Metadata},
    python,
};

#[tokio::test]
async fn integer_and_text_tables_match_the_original_byte_for_byte() {
    // python-mysql-replication 1.x names columns only from FULL binlog metadata.
    let db = MariaDb::start(Metadata::Full).await;
    db.exec(
        "CREATE DATABASE kinesistest CHARACTER SET utf8mb4;
         CREATE TABLE kinesistest.Users (idUsers INT PRIMARY KEY, Name VARCHAR(100));
         INSERT INTO kinesistest.Users VALUES (123, 'Foo User');
         INSERT INTO kinesistest.Users VALUES (124, 'Bar user');
         UPDATE kinesistest.Users SET Name = 'Bar User' WHERE idUsers = 123;
         DELETE FROM kinesistest.Users WHERE idUsers = 124;
         CREATE TABLE kinesistest.wide (id BIGINT UNSIGNED PRIMARY KEY, t TINYINT, s SMALLINT UNSIGNED,
           m MEDIUMINT, i INT UNSIGNED, c CHAR(5), tx TEXT, vc VARCHAR(30));
         INSERT INTO kinesistest.wide VALUES (18446744073709551615, -128, 65535, -8388608, 4294967295, 'ab', 'say \"hi\"\\n', 'tab\\there');
         INSERT INTO kinesistest.wide VALUES (1, NULL, 0, 0, 0, '', '', NULL);
         UPDATE kinesistest.wide SET tx = 'changed', m = 8388607 WHERE id = 1;
         INSERT INTO kinesistest.wide VALUES (2, 1, 1, 1, 1, 'é', 'Zoë 🙂', 'ünïcode');
         DELETE FROM kinesistest.wide WHERE id = 18446744073709551615;",
    )
    .await;
    let ours = capture::read_from_start(&db).await.lines();
    let theirs = python::original_records(&db);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "same number of records\nours: {ours:#?}\ntheirs: {theirs:#?}"
    );
    assert_eq!(ours.len(), 9);
    let mut identical = 0;
    for (o, t) in ours.iter().zip(&theirs) {
        let ov: serde_json::Value = serde_json::from_str(o).expect("ours is JSON");
        let tv: serde_json::Value = serde_json::from_str(t).expect("theirs is JSON");
        assert_eq!(ov, tv, "JSON-equal\nours:   {o}\ntheirs: {t}");
        if t.is_ascii() && !o.contains(|c: char| !c.is_ascii()) {
            assert_eq!(o, t, "byte-identical where the text is ASCII");
            identical += 1;
        }
    }
    assert_eq!(identical, 8, "every ASCII record compared byte for byte");
    assert_eq!(
        ours[0],
        r#"{"table": "Users", "row": {"values": {"idUsers": 123, "Name": "Foo User"}}, "type": "WriteRowsEvent", "schema": "kinesistest"}"#
    );
}
