//! MySQL partial JSON updates (binlog_row_value_options=PARTIAL_JSON), from the recorded
//! ../shared/fixtures/mysql-binlogs/json.binlog.000001 (MySQL 8.0.22, table
//! `mysql.t(id INT PRIMARY KEY, json_col JSON, name VARCHAR(100) AS (json_col->>'$.name'),
//! age INT AS (json_col->'$.age'))`, no column-name metadata, so columns are `@1`..`@4`).
//!
//! The file holds six inserts, a full-image UPDATE of the six rows (age + 1), then one
//! PARTIAL_UPDATE_ROWS_EVENT logged with binlog_row_image=MINIMAL: its before images hold only
//! `id`, its after images a diff `REPLACE $.age <age + 1>` per row (read from the event's bytes:
//! op 00, path "$.age", value int16 26 / 34 / 42 ...). Without the before document no full
//! document can be rebuilt, so the real file must stop there with a clear error.
//!
//! To check the applied documents end to end, the tests also rewrite that one event in memory
//! (the fixture is read in place, never copied) as a FULL-image server would have logged it:
//! each row's before image becomes the row as the preceding full UPDATE left it.

use std::path::PathBuf;

use publisher::{
    decode::EncodeOptions,
    filter::TableFilter,
    source::{offline::decode_reader, Item},
};
use serde_json::{json, Value};

const NAME: &str = "json.binlog.000001";
const UPDATE_ROWS: u8 = 31;
const PARTIAL_UPDATE_ROWS: u8 = 39;

fn fixture() -> Option<Vec<u8>> {
    let dir = binlogstream_tests::workspace_root().join("../shared/fixtures/mysql-binlogs");
    let path: PathBuf = dir.join(NAME);
    if path.is_file() {
        Some(std::fs::read(&path).expect("read the fixture"))
    } else {
        println!("skipped: fixture {} is absent", path.display());
        None
    }
}

/// (offset, event bytes) of every event.
fn events(file: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 4;
    while at + 19 <= file.len() {
        let size = u32::from_le_bytes(file[at + 9..at + 13].try_into().expect("4 bytes")) as usize;
        out.push((at, &file[at..at + size]));
        at += size;
    }
    out
}

/// Bytes of one row image of `mysql.t` with all four columns: null bitmap, id, json (u32 length),
/// name (u16 length), age.
fn full_image(b: &[u8]) -> usize {
    assert_eq!(b[0], 0, "no NULLs in these rows");
    let json_len = u32::from_le_bytes(b[5..9].try_into().expect("4 bytes")) as usize;
    let name_at = 9 + json_len;
    let name_len =
        u16::from_le_bytes(b[name_at..name_at + 2].try_into().expect("2 bytes")) as usize;
    name_at + 2 + name_len + 4
}

/// Rows data of a v2 rows event: after the 19-byte header, table id, flags, extra data, column
/// count and the bitmaps, up to the checksum.
fn rows_data(ev: &[u8], bitmaps: usize) -> &[u8] {
    let extra = u16::from_le_bytes(ev[27..29].try_into().expect("2 bytes")) as usize;
    let start = 27 + extra + 1 + bitmaps;
    &ev[start..ev.len() - 4]
}

/// How the synthetic before image of each row is made.
#[derive(Clone, Copy)]
enum Before {
    /// The whole row, as the full UPDATE left it.
    Full,
    /// The whole row, with json_col NULL.
    NullJson,
}

/// The fixture with its partial update event rewritten to carry full before images; `edit`
/// may change the after images' diff bytes.
fn with_full_before_images(file: &[u8], before: Before, edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let evs = events(file);
    let (_, full) = *evs
        .iter()
        .find(|(_, e)| e[4] == UPDATE_ROWS)
        .expect("a full UPDATE_ROWS event");
    let (p_at, partial) = *evs
        .iter()
        .find(|(_, e)| e[4] == PARTIAL_UPDATE_ROWS)
        .expect("a PARTIAL_UPDATE_ROWS event");
    // The full update's after images: the rows as the partial update finds them.
    let mut rows_after_full = Vec::new();
    let mut d = rows_data(full, 2);
    while !d.is_empty() {
        let b = full_image(d);
        let a = full_image(&d[b..]);
        rows_after_full.push(d[b..b + a].to_vec());
        d = &d[b + a..];
    }
    // The partial event's rows: before = null bitmap + id; after = value options, partial
    // bits, null bitmap, json diff (u32 length), name, age.
    // Header, table id, flags and the extra-data length (2: no extra data).
    let prefix_len = 29;
    assert_eq!(&partial[prefix_len..prefix_len + 3], &[4, 0x01, 0x0e]);
    let mut d = &partial[prefix_len + 3..partial.len() - 4];
    let mut body = partial[..prefix_len].to_vec();
    body.extend_from_slice(&[4, 0x0f, 0x0e]);
    for row in &rows_after_full {
        assert_eq!(&d[..5], &row[..5], "same id");
        d = &d[5..];
        let json_len = u32::from_le_bytes(d[3..7].try_into().expect("4 bytes")) as usize;
        let name_at = 7 + json_len;
        let name_len =
            u16::from_le_bytes(d[name_at..name_at + 2].try_into().expect("2 bytes")) as usize;
        let after_len = name_at + 2 + name_len + 4;
        match before {
            Before::Full => body.extend_from_slice(row),
            Before::NullJson => {
                let json_len = u32::from_le_bytes(row[5..9].try_into().expect("4 bytes")) as usize;
                body.push(0b10); // json_col is NULL
                body.extend_from_slice(&row[1..5]);
                body.extend_from_slice(&row[9 + json_len..]);
            }
        }
        let mut after = d[..after_len].to_vec();
        edit(&mut after);
        body.extend_from_slice(&after);
        d = &d[after_len..];
    }
    assert!(d.is_empty(), "six rows in the partial update event");
    let size = (body.len() + 4) as u32;
    body[9..13].copy_from_slice(&size.to_le_bytes());
    body[13..17].copy_from_slice(&(p_at as u32 + size).to_le_bytes());
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());

    let mut out = file[..p_at].to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&file[p_at + partial.len()..]);
    out
}

async fn decode(bytes: &[u8]) -> (Vec<Value>, Result<u64, String>) {
    let (rows, result) = decode_raw(bytes).await;
    let rows = rows
        .iter()
        .map(|r| serde_json::from_str(r).expect("a record is JSON"))
        .collect();
    (rows, result)
}

async fn decode_raw(bytes: &[u8]) -> (Vec<String>, Result<u64, String>) {
    let mut rows = Vec::new();
    let result = decode_reader(
        NAME,
        NAME,
        std::io::Cursor::new(bytes),
        TableFilter::default(),
        EncodeOptions::default(),
        |item| {
            if let Item::Row(r) = item {
                rows.push(String::from_utf8(r.body).expect("a record is UTF-8"));
            }
        },
    )
    .await
    .map_err(|e| e.to_string());
    (rows, result)
}

fn doc(age: i64, data: &str, name: &str) -> Value {
    json!({"age": age, "data": data, "name": name})
}

fn update(id: i64, data: &str, name: &str, age: i64) -> Value {
    json!({"table": "t", "row": {
        "before_values": {"@1": id, "@2": doc(age, data, name), "@3": name, "@4": age},
        "after_values": {"@1": id, "@2": doc(age + 1, data, name), "@3": name, "@4": age + 1}},
        "type": "UpdateRowsEvent", "schema": "mysql"})
}

const PEOPLE: [(i64, &str, &str, i64); 6] = [
    (1, "xxxxxxxxxx", "Joe", 24),
    (2, "yyyyyyyyyy", "Sue", 32),
    (3, "zzzzzzzzzz", "Pete", 40),
    (4, "xxxxxxxxxx", "Joe", 24),
    (5, "yyyyyyyyyy", "Sue", 32),
    (6, "zzzzzzzzzz", "Pete", 40),
];

#[tokio::test]
async fn the_recorded_minimal_image_partial_update_stops_with_a_clear_error() {
    let Some(file) = fixture() else { return };
    let (rows, result) = decode(&file).await;
    // Everything before the partial update comes out whole.
    assert_eq!(rows.len(), 12);
    for (i, &(id, data, name, age)) in PEOPLE.iter().enumerate() {
        assert_eq!(
            rows[i],
            json!({"table": "t", "row": {"values":
                {"@1": id, "@2": doc(age, data, name), "@3": name, "@4": age}},
                "type": "WriteRowsEvent", "schema": "mysql"})
        );
        assert_eq!(rows[6 + i], update(id, data, name, age));
    }
    let e = result.expect_err("the partial update cannot be rebuilt");
    assert!(
        e.ends_with(
            "cannot decode mysql.t column @2 at json.binlog.000001:3750: partial JSON update \
             (binlog_row_value_options=PARTIAL_JSON) but the before image does not hold this \
             column (binlog_row_image is not FULL), so the new document cannot be rebuilt"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn with_full_before_images_every_diff_is_applied() {
    let Some(file) = fixture() else { return };
    let bytes = with_full_before_images(&file, Before::Full, |_| {});
    let (rows, result) = decode(&bytes).await;
    assert_eq!(result, Ok(18), "every row decodes");
    for (i, &(id, data, name, age)) in PEOPLE.iter().enumerate() {
        // The partial update: REPLACE $.age with age + 2 on the row the full update left. Its
        // after image stays as logged (MINIMAL: the changed columns, without `id`).
        let mut expected = update(id, data, name, age + 1);
        expected["row"]["after_values"]
            .as_object_mut()
            .expect("object")
            .shift_remove("@1");
        assert_eq!(rows[12 + i], expected, "row id {id}");
    }
    // The exact bytes too: the rebuilt document is written like any full document.
    let (raw, _) = decode_raw(&bytes).await;
    assert_eq!(
        raw[12],
        r#"{"table": "t", "row": {"before_values": {"@1": 1, "@2": {"age": 25, "data": "xxxxxxxxxx", "name": "Joe"}, "@3": "Joe", "@4": 25}, "after_values": {"@2": {"age": 26, "data": "xxxxxxxxxx", "name": "Joe"}, "@3": "Joe", "@4": 26}}, "type": "UpdateRowsEvent", "schema": "mysql"}"#
    );
}

#[tokio::test]
async fn a_diff_that_does_not_apply_stops_with_the_path_and_reason() {
    let Some(file) = fixture() else { return };
    // Same length path, naming a member the document does not have.
    let bytes = with_full_before_images(&file, Before::Full, |after| {
        let at = after
            .windows(5)
            .position(|w| w == b"$.age")
            .expect("the diff's path");
        after[at + 4] = b'x';
    });
    let (rows, result) = decode(&bytes).await;
    assert_eq!(rows.len(), 12, "nothing of the broken event is emitted");
    let e = result.expect_err("REPLACE of a missing member");
    assert!(
        e.ends_with(
            "cannot decode mysql.t column @2 at json.binlog.000001:3750: partial JSON update \
             (binlog_row_value_options=PARTIAL_JSON) does not apply to the before image: \
             cannot REPLACE at $.agx: no such member"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_diff_on_a_null_document_stops() {
    let Some(file) = fixture() else { return };
    let bytes = with_full_before_images(&file, Before::NullJson, |_| {});
    let (rows, result) = decode(&bytes).await;
    assert_eq!(rows.len(), 12);
    let e = result.expect_err("a diff cannot apply to NULL");
    assert!(
        e.ends_with("column @2 at json.binlog.000001:3750: partial JSON update (binlog_row_value_options=PARTIAL_JSON) of a column whose before value is NULL"),
        "{e}"
    );
}
