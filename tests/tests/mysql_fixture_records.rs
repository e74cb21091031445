//! One test per decodable fixture in ../shared/fixtures/mysql-binlogs: the records decoded from
//! it (rows per table and type, and exact records), with expectations taken from the SQL that
//! wrote the file (the mysql-test file, the rust_mysql_common commit that added it, or the
//! statements logged in the file itself) and checked against Debian's `mariadb-binlog -v`
//! where it can read the file. Truncated and corrupt files are covered in mysql_fixtures.rs;
//! json.binlog.000001 (partial JSON) is covered there too.

use std::collections::BTreeMap;

use publisher::{
    decode::EncodeOptions,
    filter::TableFilter,
    source::{offline::decode_file, Item},
};
use serde_json::{json, Value};

/// The records of one fixture as the exact lines we publish; None when the folder is absent.
async fn try_lines(name: &str) -> Option<Result<Vec<String>, String>> {
    let path = binlogstream_tests::mysql_fixtures()?.join(name);
    let mut lines = Vec::new();
    let result = decode_file(
        &path,
        TableFilter::default(),
        EncodeOptions::default(),
        |item| {
            if let Item::Row(r) = item {
                lines.push(String::from_utf8(r.body.to_vec()).expect("records are UTF-8"));
            }
        },
    )
    .await;
    Some(result.map(|_| lines).map_err(|e| e.to_string()))
}

async fn lines(name: &str) -> Option<Vec<String>> {
    try_lines(name)
        .await
        .map(|r| r.unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn parse(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a record is JSON"))
        .collect()
}

/// Rows per ("schema.table", type).
fn counts(records: &[Value]) -> BTreeMap<(String, String), usize> {
    let mut c = BTreeMap::new();
    for r in records {
        let table = format!(
            "{}.{}",
            r["schema"].as_str().expect("schema"),
            r["table"].as_str().expect("table")
        );
        let kind = r["type"].as_str().expect("type").to_string();
        *c.entry((table, kind)).or_default() += 1;
    }
    c
}

fn assert_counts(name: &str, records: &[Value], expected: &[(&str, &str, usize)]) {
    let expected: BTreeMap<(String, String), usize> = expected
        .iter()
        .map(|(t, k, n)| ((t.to_string(), k.to_string()), *n))
        .collect();
    assert_eq!(counts(records), expected, "{name}: rows per table and type");
}

/// A whole record, built in the format's key order (table, row, type, schema).
fn write(schema: &str, table: &str, values: Value) -> Value {
    json!({"table": table, "row": {"values": values}, "type": "WriteRowsEvent", "schema": schema})
}

fn update(schema: &str, table: &str, before: Value, after: Value) -> Value {
    json!({"table": table, "row": {"before_values": before, "after_values": after},
           "type": "UpdateRowsEvent", "schema": schema})
}

fn delete(schema: &str, table: &str, values: Value) -> Value {
    json!({"table": table, "row": {"values": values}, "type": "DeleteRowsEvent", "schema": schema})
}

/// Files with no row events at all (statement format, DDL, GTID bookkeeping): nothing to publish.
/// Checked against the file's event types: none is a TABLE_MAP or rows event.
macro_rules! no_rows {
    ($($test:ident: $file:literal, $why:literal;)*) => {$(
        #[tokio::test]
        async fn $test() {
            let Some(lines) = lines($file).await else { return };
            assert_eq!(lines, Vec::<String>::new(), "{}: {}", $file, $why);
        }
    )*};
}

/// bug40482 (mysql-test rpl_incident): the server wrote an INCIDENT event (LOST_EVENTS) at
/// offset 106. A replica stops there, and so does decoding: with the file, the offset, the
/// incident and the position to go on from, never by skipping it in silence (issue 11).
#[tokio::test]
async fn bug40482_incident_stops_decoding_with_file_and_position() {
    let Some(result) = try_lines("bug40482-bin.000001").await else {
        return;
    };
    let e = result.expect_err("an INCIDENT event must stop decoding");
    for part in [
        "INCIDENT event at bug40482-bin.000001:106",
        "incident 66",
        "--start bug40482-bin.000001:128",
    ] {
        assert!(e.contains(part), "`{part}` missing from: {e}");
    }
}

no_rows! {
    binlog_savepoint: "binlog_savepoint.000001", "statement-format INSERTs around SAVEPOINT / ROLLBACK TO";
    binlog_transaction: "binlog_transaction.000001", "statement-format transactions";
    binlog_transaction_previous_gtid_no_tag: "binlog_transaction_previous_GTID_no_tag.000001",
        "only a PREVIOUS_GTIDS event and a rotate";
    binlog_transaction_with_gtid: "binlog_transaction_with_GTID.000001",
        "GTIDs around statement-format CREATE/INSERT/DROP";
    binlog_transaction_with_anonymous_gtid: "binlog_transaction_with_anonymous_GTID.000001",
        "anonymous GTIDs around statement-format queries";
    bug11747887: "bug11747887-bin.000003", "statement format with a user variable";
    bug16266: "bug16266.000001", "statement-format DDL, trigger and INSERT";
    bug27213339: "bug27213339-bin.000001", "46 statement-format queries, each with an anonymous GTID";
    bug33029_slave_relay: "bug33029-slave-relay-bin.000001", "statement format with INTVAR events";
    master_bin: "master-bin.000001", "only a PREVIOUS_GTIDS event";
    rpl_atomic_ddl_rollback_full: "rpl_atomic_ddl_rollback_full.000001", "DDL only";
    rpl_atomic_ddl_rollback_table: "rpl_atomic_ddl_rollback_table.000001", "DDL only";
    rpl_atomic_ddl_rollback_view: "rpl_atomic_ddl_rollback_view.000001", "DDL only";
    rpl_cross_version_default_utf8mb4_collation:
        "rpl_cross_version_default_utf8mb4_collation.000001", "statement format with INTVAR events";
    slave_relay_bin: "slave-relay-bin.000001", "DDL only";
}

/// binlog_old_versions.test (mysql-test/suite/binlog): CREATE TABLE t1 (a int, b char(50));
/// INSERT INTO t1 VALUES (0, 'one'), (1, 'two'); UPDATE t1 SET a=a+1; DELETE FROM t1 WHERE a=2.
/// 5.1 table maps carry no charset, so CHAR(50) comes out as base64 bytes (README).
fn old_versions_rows() -> Vec<Value> {
    let (one, two) = ("b25l", "dHdv"); // base64 of "one" and "two"
    vec![
        write("test", "t1", json!({"@1": 0, "@2": one})),
        write("test", "t1", json!({"@1": 1, "@2": two})),
        update(
            "test",
            "t1",
            json!({"@1": 0, "@2": one}),
            json!({"@1": 1, "@2": one}),
        ),
        update(
            "test",
            "t1",
            json!({"@1": 1, "@2": two}),
            json!({"@1": 2, "@2": two}),
        ),
        delete("test", "t1", json!({"@1": 2, "@2": two})),
    ]
}

#[tokio::test]
async fn ver_5_1_23_v1_rows_events() {
    let name = "ver_5_1_23.001";
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    assert_counts(
        name,
        &records,
        &[
            ("test.t1", "WriteRowsEvent", 2),
            ("test.t1", "UpdateRowsEvent", 2),
            ("test.t1", "DeleteRowsEvent", 1),
        ],
    );
    assert_eq!(records, old_versions_rows());
    assert_eq!(
        lines[2],
        r#"{"table": "t1", "row": {"before_values": {"@1": 0, "@2": "b25l"}, "after_values": {"@1": 1, "@2": "b25l"}}, "type": "UpdateRowsEvent", "schema": "test"}"#
    );
}

#[tokio::test]
async fn ver_trunk_row_v2_rows_events() {
    // Same statements as ver_5_1_23.001, written with v2 rows events.
    let name = "ver_trunk_row_v2.001";
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    assert_counts(
        name,
        &records,
        &[
            ("test.t1", "WriteRowsEvent", 2),
            ("test.t1", "UpdateRowsEvent", 2),
            ("test.t1", "DeleteRowsEvent", 1),
        ],
    );
    assert_eq!(records, old_versions_rows());
    assert_eq!(
        lines[4],
        r#"{"table": "t1", "row": {"values": {"@1": 2, "@2": "dHdv"}}, "type": "DeleteRowsEvent", "schema": "test"}"#
    );
}

#[tokio::test]
async fn ver_5_1_wl2325_rows_file_is_refused_clearly() {
    // The row half of binlog_old_versions' alcatel tree (server 5.2.2-a_drop6p13): the same
    // INSERT/UPDATE/DELETE as ver_5_1_23.001, but that tree numbered events differently
    // (TABLE_MAP 16, WRITE/UPDATE/DELETE rows 17/18/19; MySQL remaps them by server version).
    // mariadb-binlog refuses the file, and so do we, clearly: a pre-GA numbering misread
    // would return no rows (or wrong ones) without a word.
    let name = "ver_5_1-wl2325_r.001";
    let Some(result) = try_lines(name).await else {
        return;
    };
    let e = result.expect_err("a pre-GA 5.1 binlog is refused");
    assert!(
        e.contains(name) && e.contains("5.2.2-a_drop6p13") && e.contains("pre-GA"),
        "the refusal names the file and the server: {e}"
    );
}

#[tokio::test]
async fn ver_5_1_wl2325_stm_is_refused_like_its_row_half() {
    // The statement half of the same tree (no rows, but XID at 20): refused the same way, so
    // no file from that build is half-read.
    let name = "ver_5_1-wl2325_s.001";
    let Some(result) = try_lines(name).await else {
        return;
    };
    let e = result.expect_err("a pre-GA 5.1 binlog is refused");
    assert!(e.contains(name) && e.contains("pre-GA"), "{e}");
}

#[tokio::test]
async fn bug32407_two_identical_rows() {
    // mysql-test/suite/binlog/t/binlog_base64_flag.test: "The binlog contains row events
    // equivalent to: CREATE TABLE t1 (a int) engine = myisam; INSERT INTO t1 VALUES (1), (1)".
    let name = "bug32407.001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(name, &parse(&lines), &[("test.t1", "WriteRowsEvent", 2)]);
    let row = r#"{"table": "t1", "row": {"values": {"@1": 1}}, "type": "WriteRowsEvent", "schema": "test"}"#;
    assert_eq!(lines, vec![row, row]);
}

#[tokio::test]
async fn binlog_invisible_columns_signed_unsigned_text_blob_nulls() {
    // The file's DDL: CREATE TABLE t1 (f1 INT UNSIGNED INVISIBLE, f2 INT UNSIGNED INVISIBLE,
    // f3 INT, f4 TEXT, f5 BLOB, f6 BIGINT UNSIGNED INVISIBLE); the row values (not logged as
    // SQL) as mariadb-binlog prints them: (1, 2, -3, '4', '\x05', 6000000000), then
    // (NULL, NULL, -33, '44', 'U', NULL) updated to (111, 222, -333, '444', 'U', NULL).
    let name = "binlog-invisible-columns.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    assert_counts(
        name,
        &records,
        &[
            ("mysql.t1", "WriteRowsEvent", 2),
            ("mysql.t1", "UpdateRowsEvent", 1),
        ],
    );
    // Invisible columns are published like the others; f5 is a BLOB, so base64.
    assert_eq!(
        lines[0],
        r#"{"table": "t1", "row": {"values": {"f1": 1, "f2": 2, "f3": -3, "f4": "4", "f5": "BQ==", "f6": 6000000000}}, "type": "WriteRowsEvent", "schema": "mysql"}"#
    );
    let before = json!({"f1": null, "f2": null, "f3": -33, "f4": "44", "f5": "VQ==", "f6": null});
    assert_eq!(records[1], write("mysql", "t1", before.clone()));
    assert_eq!(
        records[2],
        update(
            "mysql",
            "t1",
            before,
            json!({"f1": 111, "f2": 222, "f3": -333, "f4": "444", "f5": "VQ==", "f6": null})
        )
    );
}

#[tokio::test]
async fn binlog_56_gtid_reserved_word_table_named_generated() {
    // A table named with the reserved word GENERATED. The file's own statements (CREATE TABLE
    // GENERATED LIKE test.t1; INSERT INTO GENERATED VALUES (1), (2), (3)) are statement-format;
    // the one rows event's SQL is not in the file and its mysql-test source was not found:
    // expectation from mariadb-binlog (@1=65).
    let name = "binlog_56_gtid_reserved_word.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(
        name,
        &parse(&lines),
        &[("test.GENERATED", "WriteRowsEvent", 1)],
    );
    assert_eq!(
        lines[0],
        r#"{"table": "GENERATED", "row": {"values": {"@1": 65}}, "type": "WriteRowsEvent", "schema": "test"}"#
    );
}

#[tokio::test]
async fn binlog_transaction_with_gtid_tag_decimal() {
    // MySQL 9.6, tagged GTID (rust_mysql_common a67c6bf, no SQL given); mariadb-binlog cannot
    // read it. Checked by hand against the rows event: INT 3, INT 100, DECIMAL(10,2) bytes
    // 80 00 00 fa 00 = 250.00.
    let name = "binlog_transaction_with_GTID_TAG.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(
        name,
        &parse(&lines),
        &[("test.orders", "WriteRowsEvent", 1)],
    );
    assert_eq!(
        lines[0],
        r#"{"table": "orders", "row": {"values": {"@1": 3, "@2": 100, "@3": "250.00"}}, "type": "WriteRowsEvent", "schema": "test"}"#
    );
}

#[tokio::test]
async fn transaction_compression_row_inside_zstd_payload() {
    // MySQL 8.0.32 with binlog_transaction_compression (rust_mysql_common 22f0a55, no SQL
    // given; its test checks the payload holds QUERY, TABLE_MAP, WRITE_ROWS, XID). mariadb-binlog
    // refuses the payload event, so the value rests on our decoding alone.
    let name = "transaction_compression.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(name, &parse(&lines), &[("test.tb1", "WriteRowsEvent", 1)]);
    assert_eq!(
        lines[0],
        r#"{"table": "tb1", "row": {"values": {"@1": 1}}, "type": "WriteRowsEvent", "schema": "test"}"#
    );
}

#[tokio::test]
async fn json_opaque_scalars_inside_json_documents() {
    // CREATE TABLE test (a json) (in the file); one document per insert holding an opaque
    // scalar. Values as MySQL prints them and as rust_mysql_common's own test (ec8c2ae)
    // expects: a binary string as "base64:type15:…", DATETIME with 6 fraction digits, TIME,
    // DECIMAL as a string keeping its scale. mariadb-binlog cannot read MySQL's binary JSON.
    let name = "json-opaque.binlog";
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    assert_counts(name, &records, &[("foo.test", "WriteRowsEvent", 8)]);
    let docs = [
        json!({"a": "base64:type15:VQ=="}),
        json!({"b": "2012-03-18"}),
        json!({"c": "2012-03-18 11:30:45.000000"}),
        json!({"c": "87:31:46.654321"}),
        json!({"d": "123.456"}),
        json!({"e": "9.00"}),
        json!({"e": [0, 1, true, false]}),
        json!({"e": null}),
    ];
    let expected: Vec<Value> = docs
        .into_iter()
        .map(|d| write("foo", "test", json!({ "a": d })))
        .collect();
    assert_eq!(records, expected);
    // The document is JSON itself, not a string holding JSON.
    assert_eq!(
        lines[5],
        r#"{"table": "test", "row": {"values": {"a": {"e": "9.00"}}}, "type": "WriteRowsEvent", "schema": "foo"}"#
    );
}

#[tokio::test]
async fn mariadb_outbox_enum_blob_timestamp() {
    // mysql_async#189 (rust_mysql_common 95c1cb4), MariaDB with binlog_row_metadata=FULL. The
    // annotate events carry the SQL: insert into outbox (topic, event_type, event) values
    // ('foo', 'JSON', '{"foo":1}'), twice; id is AUTO_INCREMENT (62, 63), created a TIMESTAMP
    // default (1650493084 and 1650493195 per mariadb-binlog = 2022-04-20 22:18:04 / 22:19:55
    // UTC), event_type an ENUM (index 2 = 'JSON'), event binary (rust_mysql_common's test
    // asserts collation BINARY), so base64 of {"foo":1}.
    let name = "mariadb-bin.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    assert_counts(
        name,
        &records,
        &[("toddy_test.outbox", "WriteRowsEvent", 2)],
    );
    assert_eq!(
        lines[0],
        r#"{"table": "outbox", "row": {"values": {"id": 62, "topic": "foo", "event_type": "JSON", "event": "eyJmb28iOjF9", "created": "2022-04-20 22:18:04"}}, "type": "WriteRowsEvent", "schema": "toddy_test"}"#
    );
    assert_eq!(
        records[1],
        write(
            "toddy_test",
            "outbox",
            json!({"id": 63, "topic": "foo", "event_type": "JSON", "event": "eyJmb28iOjF9",
                   "created": "2022-04-20 22:19:55"})
        )
    );
}

#[tokio::test]
async fn minimal_row_image_carries_only_set_columns() {
    // rust_mysql_common f6efa3a: binlog_row_image=minimal; CREATE TABLE t1 (col_1 int NOT NULL,
    // col_2 blob, col_3 char(2), col_4 int, col_5 int unsigned, PRIMARY KEY (col_1));
    // INSERT INTO t1 (col_1, col_3, col_5) VALUES (1, 'a', '3230202323').
    // No column names in the table map, so positional; the unsigned INT stays positive.
    let name = "minimal_row_metadata.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(name, &parse(&lines), &[("noria.t1", "WriteRowsEvent", 1)]);
    assert_eq!(
        lines[0],
        r#"{"table": "t1", "row": {"values": {"@1": 1, "@3": "a", "@5": 3230202323}}, "type": "WriteRowsEvent", "schema": "noria"}"#
    );
}

#[tokio::test]
async fn mysql_enum_string_set_write_update_delete() {
    // The file's DDL: CREATE TABLE t(f1 CHAR(128), f2 VARCHAR(300), f3 ENUM('var1', 'variant2',
    // 'foo'), f4 SET('one', 'two', 'three', 'four'), f5 TEXT). Row values as in
    // rust_mysql_common's test (cec1a77) and mariadb-binlog: ENUM index 1 then 2, SET bits
    // 0b0101 then 0b1010; f2 and f5 swap their long and short strings in the update.
    let name = "mysql-enum-string-set.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    assert_counts(
        name,
        &records,
        &[
            ("mysql.t", "WriteRowsEvent", 1),
            ("mysql.t", "UpdateRowsEvent", 1),
            ("mysql.t", "DeleteRowsEvent", 1),
        ],
    );
    let digits = "0123456789";
    let short = digits.to_string();
    let f1 = digits.repeat(10);
    let long = format!(
        "{}{}",
        format!("{}012345678", digits.repeat(12)).repeat(2),
        digits.repeat(4)
    );
    let first = json!({"f1": f1, "f2": long, "f3": "var1", "f4": ["one", "three"], "f5": short});
    let second = json!({"f1": "field1", "f2": "field_2", "f3": "variant2", "f4": ["two", "four"], "f5": long});
    assert_eq!(
        records,
        vec![
            write("mysql", "t", first.clone()),
            update("mysql", "t", first, second.clone()),
            delete("mysql", "t", second),
        ]
    );
}

#[tokio::test]
async fn mysql_type_bit_values() {
    // The file's DDL: CREATE TABLE foo(a BIT(3), b TEXT, c BIT(8)); values b'100', 'foo',
    // b'00100000' (rust_mysql_common 7cb2501 and mariadb-binlog).
    let name = "mysql_type_bit.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(name, &parse(&lines), &[("mysql.foo", "WriteRowsEvent", 1)]);
    assert_eq!(
        lines[0],
        r#"{"table": "foo", "row": {"values": {"a": 4, "b": "foo", "c": 32}}, "type": "WriteRowsEvent", "schema": "mysql"}"#
    );
}

#[tokio::test]
async fn rpl_unfiltered_hidden_gcol_skips_the_hidden_column() {
    // The file's DDL: CREATE TABLE t (a INT, INDEX i((a+1))); ALTER TABLE t ADD COLUMN b TEXT.
    // The functional index adds a hidden generated column (@2) that the row image leaves out.
    // The INSERT itself is not in the file and its mysql-test source was not found: values
    // from mariadb-binlog (@1=1, @3='1').
    let name = "rpl_unfiltered_hidden_gcol.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(name, &parse(&lines), &[("test.t", "WriteRowsEvent", 1)]);
    assert_eq!(
        lines[0],
        r#"{"table": "t", "row": {"values": {"@1": 1, "@3": "1"}}, "type": "WriteRowsEvent", "schema": "test"}"#
    );
}

#[tokio::test]
async fn time_issue_negative_time_over_24_hours() {
    // rust_mysql_common 76161b6: CREATE TABLE t (c TIME); INSERT INTO t VALUES ('-507:48:27').
    let name = "time_issue.000001";
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_counts(name, &parse(&lines), &[("noria.t", "WriteRowsEvent", 1)]);
    assert_eq!(
        lines[0],
        r#"{"table": "t", "row": {"values": {"@1": "-507:48:27"}}, "type": "WriteRowsEvent", "schema": "noria"}"#
    );
}

#[tokio::test]
async fn vector_columns_and_text_between_them() {
    // MySQL 9.0 (rust_mysql_common 88edfdd). The file's DDL: CREATE DATABASE dtb CHARSET
    // utf8mb4; CREATE TABLE foo(id SERIAL, vector_column VECTOR(3) NOT NULL); CREATE TABLE
    // bar(id SERIAL, vector_column VECTOR(2) NOT NULL, foo TEXT, vector_column2 VECTOR(4) NOT
    // NULL). rust_mysql_common's test pins foo's vectors as the float32 bytes of [1.1, 2.2, 3.3]
    // and [1, -1, 0]. The table map's charset metadata gives bar.foo utf8mb4 (MySQL counts
    // VECTOR columns among the character columns it numbers), so the TEXT 'bar' is text.
    // The file creates and fills both tables twice, hence the doubled counts.
    let name = "vector.binlog";
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    assert_counts(
        name,
        &records,
        &[
            ("dtb.foo", "WriteRowsEvent", 4),
            ("dtb.bar", "WriteRowsEvent", 5),
            ("dtb.bar", "DeleteRowsEvent", 1),
        ],
    );
    assert_eq!(
        lines[0],
        r#"{"table": "foo", "row": {"values": {"id": 1, "vector_column": [1.1, 2.2, 3.3]}}, "type": "WriteRowsEvent", "schema": "dtb"}"#
    );
    assert_eq!(
        records[1],
        write(
            "dtb",
            "foo",
            json!({"id": 2, "vector_column": [1.0, -1.0, 0.0]})
        )
    );
    assert_eq!(
        records[2],
        write(
            "dtb",
            "bar",
            json!({"id": 1, "vector_column": [1.1, 2.2], "foo": null,
                   "vector_column2": [1.1, 2.2, 3.3, 4.4]})
        )
    );
    assert_eq!(
        records[8],
        delete(
            "dtb",
            "bar",
            json!({"id": 2, "vector_column": [1.01, -1.01], "foo": "bar",
                   "vector_column2": [42.0, 43.0, 44.0, 45.0]})
        ),
        "bar.foo is a utf8mb4 TEXT: text, not base64"
    );
}

/// The four NDB files (mysql-5.1-telco, one ndb_apply_status row then test.ba changes). Their
/// SQL was not found (not in mysql-server's mysql-test); expectations from mariadb-binlog:
/// ba(@1 PK, @2, @3) gets (3,3,3), (1,1,1), (2,2,2), (4,4,4); then @3 of row 4 becomes 40;
/// then row 2 is deleted (the delete image carries the key only).
fn ndb_rows(apply_status_server: i64) -> Vec<Value> {
    vec![
        write(
            "mysql",
            "ndb_apply_status",
            json!({"@1": apply_status_server, "@2": 25769803786_i64, "@3": "", "@4": 0, "@5": 0}),
        ),
        write("test", "ba", json!({"@1": 3, "@2": 3, "@3": 3})),
        write("test", "ba", json!({"@1": 1, "@2": 1, "@3": 1})),
        write("test", "ba", json!({"@1": 2, "@2": 2, "@3": 2})),
        write("test", "ba", json!({"@1": 4, "@2": 4, "@3": 4})),
    ]
}

async fn ndb_file(name: &str, server: i64, change: Value, change_kind: &str) {
    let Some(lines) = lines(name).await else {
        return;
    };
    let records = parse(&lines);
    let writes = if change_kind == "WriteRowsEvent" {
        5
    } else {
        4
    };
    let mut expected_counts = vec![
        ("mysql.ndb_apply_status", "WriteRowsEvent", 1),
        ("test.ba", "WriteRowsEvent", writes),
        ("test.ba", "DeleteRowsEvent", 1),
    ];
    if change_kind == "UpdateRowsEvent" {
        expected_counts.push(("test.ba", "UpdateRowsEvent", 1));
    }
    assert_counts(name, &records, &expected_counts);
    let mut expected = ndb_rows(server);
    expected.push(change);
    expected.push(delete("test", "ba", json!({"@1": 2})));
    assert_eq!(records, expected, "{name}");
}

#[tokio::test]
async fn ndb_write_full_row() {
    // NDB logs the update as a write of the full new row.
    ndb_file(
        "write-full-row.binlog",
        2,
        write("test", "ba", json!({"@1": 4, "@2": 4, "@3": 40})),
        "WriteRowsEvent",
    )
    .await;
}

#[tokio::test]
async fn ndb_write_partial_row() {
    // The update as a write of the key and the changed column only.
    ndb_file(
        "write-partial-row.binlog",
        1,
        write("test", "ba", json!({"@1": 4, "@3": 40})),
        "WriteRowsEvent",
    )
    .await;
}

#[tokio::test]
async fn ndb_update_full_row() {
    ndb_file(
        "update-full-row.binlog",
        4,
        update(
            "test",
            "ba",
            json!({"@1": 4, "@2": 4, "@3": 4}),
            json!({"@1": 4, "@2": 4, "@3": 40}),
        ),
        "UpdateRowsEvent",
    )
    .await;
}

#[tokio::test]
async fn ndb_update_partial_row() {
    // Before and after images carry the key and the changed column only.
    let name = "update-partial-row.binlog";
    ndb_file(
        name,
        3,
        update(
            "test",
            "ba",
            json!({"@1": 4, "@3": 4}),
            json!({"@1": 4, "@3": 40}),
        ),
        "UpdateRowsEvent",
    )
    .await;
    let Some(lines) = lines(name).await else {
        return;
    };
    assert_eq!(
        lines[5],
        r#"{"table": "ba", "row": {"before_values": {"@1": 4, "@3": 4}, "after_values": {"@1": 4, "@3": 40}}, "type": "UpdateRowsEvent", "schema": "test"}"#
    );
}
