//! Pure decoding: TABLE_MAP + ROWS events to records. No I/O here.

pub mod charset;
pub mod json_diff;
pub mod plan;
pub mod value;

use std::sync::Arc;

use mysql_common::{
    binlog::events::RowsEventData,
    binlog::jsondiff::{JsonDiff, JsonDiffOperation},
    binlog::value::BinlogValue,
    io::ParseBuf,
};

pub use plan::{ColumnInfo, Kind, PlanError, TableInfo, TablePlan};

use crate::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    /// The record's `type`, named after python-mysql-replication's event classes.
    pub fn type_name(self) -> &'static str {
        match self {
            ChangeKind::Insert => "WriteRowsEvent",
            ChangeKind::Update => "UpdateRowsEvent",
            ChangeKind::Delete => "DeleteRowsEvent",
        }
    }
}

/// Where one row change sits in the binlog. `(file, pos, row)` is unique per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPosition {
    pub file: Arc<str>,
    /// Offset of the ROWS event holding the row.
    pub pos: u64,
    /// Index of the row inside its transaction, from 0 (rows of captured tables only).
    pub row: u64,
    /// Offset of the transaction's first event (GTID or BEGIN) in `file`: a resume point.
    pub tx_pos: u64,
    pub gtid: Option<Arc<str>>,
    /// Event timestamp, seconds since the epoch.
    pub ts: u32,
    /// Number of the ROWS event in its transaction (every ROWS event counts, whatever the
    /// filter) and the row's index in it: a filter-independent resume point. Set by the reader.
    pub rows_event: u32,
    pub event_row: u32,
    /// False when a checkpoint inside this row's transaction would move past rows held back
    /// (a prepared XA transaction): the ack tracker then keeps the last boundary. Set by the
    /// reader.
    pub resumable: bool,
    /// The delete half of an UPDATE that changes the primary key: published (under the old
    /// key) right before the update, at the same position; the row is not done until the
    /// update is.
    pub key_change: bool,
}

/// One decoded row change: the record body and what sinks need to route it.
#[derive(Debug, Clone)]
pub struct RowChange {
    pub schema: Arc<str>,
    pub table: Arc<str>,
    pub kind: ChangeKind,
    /// The record, exactly as consumers receive it.
    pub body: Vec<u8>,
    /// JSON array of the primary-key values (after image; before image for deletes), or
    /// `None` when the table has no primary key.
    pub primary_key: Option<String>,
    /// Names of the primary-key columns, in key order (shared with the table plan).
    pub key_names: Option<Arc<[String]>>,
    pub position: RowPosition,
}

impl RowChange {
    /// A change of `plan`'s table: its names and key columns come from the plan.
    fn of(
        plan: &TablePlan,
        kind: ChangeKind,
        body: Vec<u8>,
        primary_key: Option<String>,
        position: RowPosition,
    ) -> RowChange {
        RowChange {
            schema: plan.schema.clone(),
            table: plan.table.clone(),
            kind,
            body,
            primary_key,
            key_names: plan.key_names.clone(),
            position,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Append the optional `position` key.
    pub position: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot decode {schema}.{table} column {column} at {file}:{pos}: {reason}")]
pub struct DecodeError {
    pub schema: String,
    pub table: String,
    pub column: String,
    pub file: String,
    pub pos: u64,
    pub reason: String,
}

/// How every reason about a partial JSON update that was not applied begins.
const PARTIAL_JSON: &str = "partial JSON update (binlog_row_value_options=PARTIAL_JSON)";

impl DecodeError {
    /// A partial JSON update whose full document could not be rebuilt.
    pub fn is_unapplied_partial_json(&self) -> bool {
        self.reason.starts_with(PARTIAL_JSON)
    }
}

struct ImageError {
    column: String,
    reason: String,
}

fn bit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// A JSON column's value in an update's before image, kept to rebuild the after image's
/// document from a partial JSON update.
#[derive(Debug, Default)]
enum BeforeDoc {
    /// The before image does not hold the column (binlog_row_image=MINIMAL or NOBLOB).
    #[default]
    Absent,
    Null,
    Doc(serde_json::Value),
}

/// What `read_image` does with binary JSON documents, indexed by column.
enum JsonDocs<'a> {
    Ignore,
    /// Before image of a partial update: keep every JSON column's document.
    Keep(&'a mut [BeforeDoc]),
    /// After image of a partial update: apply diffs to the kept documents.
    Apply(&'a mut [BeforeDoc]),
}

/// The full document of a partially updated JSON column, or why it cannot be had exactly.
fn apply_diffs(before: BeforeDoc, diffs: &[JsonDiff<'_>]) -> Result<serde_json::Value, String> {
    const WHAT: &str = PARTIAL_JSON;
    let mut doc = match before {
        BeforeDoc::Doc(d) => d,
        BeforeDoc::Absent => {
            return Err(format!(
                "{WHAT} but the before image does not hold this column (binlog_row_image is not \
                 FULL), so the new document cannot be rebuilt"
            ))
        }
        BeforeDoc::Null => return Err(format!("{WHAT} of a column whose before value is NULL")),
    };
    for diff in diffs {
        let path = std::str::from_utf8(diff.path())
            .map_err(|_| format!("{WHAT} with a path that is not UTF-8"))?;
        let op = match diff.operation() {
            JsonDiffOperation::REPLACE => json_diff::Op::Replace,
            JsonDiffOperation::INSERT => json_diff::Op::Insert,
            JsonDiffOperation::REMOVE => json_diff::Op::Remove,
        };
        let value = diff
            .value()
            .map(value::json_document)
            .transpose()
            .map_err(|e| format!("{WHAT} at {path}: {e}"))?;
        json_diff::apply(&mut doc, op, path, value)
            .map_err(|e| format!("{WHAT} does not apply to the before image: {e}"))?;
    }
    Ok(doc)
}

/// Reads one row image and writes it as a JSON object of the present columns.
fn read_image(
    buf: &mut ParseBuf<'_>,
    plan: &TablePlan,
    present: &[bool],
    partial_after: bool,
    out: &mut Vec<u8>,
    mut key: Option<&mut Vec<Option<(usize, usize)>>>,
    mut docs: JsonDocs<'_>,
) -> Result<(), ImageError> {
    let short = |what: &str| ImageError {
        column: "*".into(),
        reason: format!("row data ends inside {what}"),
    };
    let mut partial_bits: &[u8] = &[];
    if partial_after {
        let options = buf
            .checked_eat_lenenc_int()
            .ok_or_else(|| short("the value options"))?;
        if options & 1 != 0 {
            partial_bits = buf
                .checked_eat(plan.json_columns.div_ceil(8))
                .ok_or_else(|| short("the partial JSON bitmap"))?;
        }
    }
    let present_count = present.iter().filter(|p| **p).count();
    let nulls = buf
        .checked_eat(present_count.div_ceil(8))
        .ok_or_else(|| short("the null bitmap"))?;

    out.push(b'{');
    let mut image_idx = 0;
    let mut json_idx = 0;
    for (i, col) in plan.columns.iter().enumerate() {
        let is_json = col.kind == Kind::JsonBinary;
        if !present[i] {
            json_idx += usize::from(is_json);
            continue;
        }
        if image_idx > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(&col.key);
        let start = out.len();
        if bit(nulls, image_idx) {
            out.extend_from_slice(b"null");
            if let (JsonDocs::Keep(d), true) = (&mut docs, is_json) {
                if let Some(slot) = d.get_mut(i) {
                    *slot = BeforeDoc::Null;
                }
            }
        } else {
            let is_partial = is_json && bit(partial_bits, json_idx);
            // The value parser ties its context's lifetime to the buffer's, so parse from a
            // short-lived view and advance the real buffer by what it consumed.
            let mut view = ParseBuf(buf.0);
            let value: BinlogValue<'_> = view
                .parse((
                    col.column_type,
                    col.meta.as_slice(),
                    col.unsigned,
                    is_partial,
                ))
                .map_err(|e| ImageError {
                    column: col.name.clone(),
                    reason: format!("malformed value: {e}"),
                })?;
            let consumed = buf.0.len() - view.0.len();
            let img_err = |reason: String| ImageError {
                column: col.name.clone(),
                reason,
            };
            match (&mut docs, &value) {
                (JsonDocs::Keep(d), BinlogValue::Jsonb(j)) => {
                    // Parsed once: written now, kept for the after image's diffs.
                    let doc = value::json_document(j).map_err(img_err)?;
                    json::write_value(out, &doc);
                    if let Some(slot) = d.get_mut(i) {
                        *slot = BeforeDoc::Doc(doc);
                    }
                }
                (JsonDocs::Apply(d), BinlogValue::JsonDiff(diffs)) => {
                    let before = d.get_mut(i).map(std::mem::take).unwrap_or_default();
                    let doc = apply_diffs(before, diffs).map_err(img_err)?;
                    json::write_value(out, &doc);
                }
                _ => value::write_value(out, col, &value).map_err(img_err)?,
            }
            buf.skip(consumed);
        }
        if let Some(k) = key.as_deref_mut() {
            k[i] = Some((start, out.len()));
        }
        json_idx += usize::from(is_json);
        image_idx += 1;
    }
    out.push(b'}');
    Ok(())
}

/// Appends what follows a record's images: its type, schema and (optionally) position.
/// Shared by binlog rows, the delete half of a key change and snapshot rows, so all are
/// written alike; `snapshot` marks the last.
pub(crate) fn finish_record(
    body: &mut Vec<u8>,
    kind: ChangeKind,
    plan: &TablePlan,
    opts: EncodeOptions,
    p: &RowPosition,
    snapshot: bool,
) {
    body.extend_from_slice(b"}, \"type\": \"");
    body.extend_from_slice(kind.type_name().as_bytes());
    body.extend_from_slice(b"\", ");
    body.extend_from_slice(&plan.schema_field);
    if opts.position {
        write_position(body, p, snapshot);
    }
    body.push(b'}');
}

/// The primary-key values as a JSON array, from their spans in `body`.
fn key_text(plan: &TablePlan, spans: &[Option<(usize, usize)>], body: &[u8]) -> String {
    let len: usize = plan
        .primary_key
        .iter()
        .map(|&ci| spans.get(ci).copied().flatten().map_or(4, |(s, e)| e - s) + 2)
        .sum();
    let mut k = String::with_capacity(len + 2);
    k.push('[');
    for (j, &ci) in plan.primary_key.iter().enumerate() {
        if j > 0 {
            k.push_str(", ");
        }
        match spans.get(ci).copied().flatten() {
            Some((s, e)) => k.push_str(&String::from_utf8_lossy(&body[s..e])),
            None => k.push_str("null"),
        }
    }
    k.push(']');
    k
}

/// The optional `position` key (docs/record-format.md).
fn write_position(out: &mut Vec<u8>, p: &RowPosition, snapshot: bool) {
    out.extend_from_slice(b", \"position\": {\"file\": ");
    json::write_str(out, &p.file);
    out.extend_from_slice(b", \"pos\": ");
    json::write_u64(out, p.pos);
    out.extend_from_slice(b", \"row\": ");
    json::write_u64(out, p.row);
    out.extend_from_slice(b", \"gtid\": ");
    match &p.gtid {
        Some(g) => json::write_str(out, g),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b", \"ts\": ");
    json::write_u64(out, u64::from(p.ts));
    if p.key_change {
        out.extend_from_slice(b", \"key_change\": true");
    }
    if snapshot {
        out.extend_from_slice(b", \"snapshot\": true");
    }
    out.push(b'}');
}

/// Where a snapshot row was read: the binlog position its read view corresponds to.
#[derive(Debug, Clone)]
pub struct SnapshotAt {
    pub file: Arc<str>,
    pub pos: u64,
    pub ts: u32,
}

/// Encodes rows read by a SELECT (binary protocol, session time zone UTC, results in the
/// columns' own character sets) as the `WriteRowsEvent` records the binlog path writes for
/// inserts of the same rows. Reused for every row of a read, so a row costs one allocation
/// for its body (sized by the largest row so far) and one for its key, nothing else.
#[derive(Debug, Default)]
pub struct SnapshotEncoder {
    /// Where each primary-key value sits in the body being written.
    key_spans: Vec<Option<(usize, usize)>>,
    /// The largest body so far: the next one starts with that capacity.
    body_hint: usize,
}

impl SnapshotEncoder {
    /// Encodes one row; `values` are in plan column order. With `position` on, the
    /// position names the snapshot's binlog position and carries `"snapshot": true`.
    pub fn encode(
        &mut self,
        plan: &TablePlan,
        values: &[mysql_common::value::Value],
        opts: EncodeOptions,
        at: &SnapshotAt,
        row: u64,
    ) -> Result<RowChange, Box<DecodeError>> {
        let err = |column: &str, reason: String| {
            Box::new(DecodeError {
                schema: plan.schema.to_string(),
                table: plan.table.to_string(),
                column: column.to_string(),
                file: at.file.to_string(),
                pos: at.pos,
                reason: format!("snapshot row: {reason}"),
            })
        };
        if values.len() != plan.columns.len() {
            return Err(err(
                "*",
                format!("{} values for {} columns", values.len(), plan.columns.len()),
            ));
        }
        let estimate = plan.head.len() + 64 + 16 * values.len();
        let mut body = Vec::with_capacity(self.body_hint.max(estimate));
        body.extend_from_slice(&plan.head);
        body.extend_from_slice(b"\"values\": {");
        let want_key = !plan.primary_key.is_empty();
        let spans = &mut self.key_spans;
        spans.clear();
        spans.resize(values.len(), None);
        for (i, (col, v)) in plan.columns.iter().zip(values).enumerate() {
            if i > 0 {
                body.extend_from_slice(b", ");
            }
            body.extend_from_slice(&col.key);
            let start = body.len();
            value::write_protocol_value(&mut body, col, v).map_err(|e| err(&col.name, e))?;
            spans[i] = Some((start, body.len()));
        }
        body.push(b'}');
        let kind = ChangeKind::Insert;
        let position = RowPosition {
            file: at.file.clone(),
            pos: at.pos,
            row,
            tx_pos: at.pos,
            gtid: None,
            ts: at.ts,
            rows_event: 0,
            event_row: 0,
            // A snapshot chunk is acknowledged as a whole, by the boundary that follows it.
            resumable: false,
            key_change: false,
        };
        finish_record(&mut body, kind, plan, opts, &position, true);
        self.body_hint = self.body_hint.max(body.len());
        let primary_key = want_key.then(|| key_text(plan, spans, &body));
        Ok(RowChange::of(plan, kind, body, primary_key, position))
    }
}

/// Decodes every row of a ROWS event. `first_row` is the transaction-relative index of its
/// first row; rows are handed to `emit` in binlog order.
#[allow(clippy::too_many_arguments)]
pub fn decode_rows(
    plan: &TablePlan,
    event: &RowsEventData<'_>,
    kind: ChangeKind,
    partial: bool,
    opts: EncodeOptions,
    file: &Arc<str>,
    pos: u64,
    tx_pos: u64,
    gtid: Option<&Arc<str>>,
    ts: u32,
    first_row: u64,
    mut emit: impl FnMut(RowChange),
) -> Result<u64, Box<DecodeError>> {
    let err = |column: String, reason: String| {
        Box::new(DecodeError {
            schema: plan.schema.to_string(),
            table: plan.table.to_string(),
            column,
            file: file.to_string(),
            pos,
            reason,
        })
    };
    let n = plan.columns.len();
    if event.num_columns() as usize != n {
        return Err(err(
            "*".into(),
            format!(
                "rows event has {} columns, table map has {n}",
                event.num_columns()
            ),
        ));
    }
    let before = event.columns_before_image().map(|b| {
        (0..n)
            .map(|i| b.get(i).as_deref().copied().unwrap_or(false))
            .collect::<Vec<bool>>()
    });
    let after = event.columns_after_image().map(|b| {
        (0..n)
            .map(|i| b.get(i).as_deref().copied().unwrap_or(false))
            .collect::<Vec<bool>>()
    });
    let mut buf = ParseBuf(event.rows_data());
    let mut row = first_row;
    let mut key_spans: Vec<Option<(usize, usize)>> = vec![None; n];
    let want_key = !plan.primary_key.is_empty();
    let mut before_docs: Vec<BeforeDoc> = Vec::new();
    if partial {
        before_docs.resize_with(n, BeforeDoc::default);
    }

    // Rows of one event are alike: sized from the largest so far, a row's buffer is
    // allocated once instead of regrown (two reallocations per narrow row in the profile).
    let mut size_hint = plan.head.len() + 64 + 16 * n;
    while !buf.is_empty() {
        let remaining = buf.len();
        let mut body = Vec::with_capacity(size_hint);
        body.extend_from_slice(&plan.head);
        key_spans.iter_mut().for_each(|s| *s = None);
        // An update's before image (its span in `body`) and key, to tell a key change.
        let mut before_key: Option<((usize, usize), String)> = None;
        let map_img = |e: ImageError| err(e.column, e.reason);
        match kind {
            ChangeKind::Insert | ChangeKind::Delete => {
                let present = if kind == ChangeKind::Insert {
                    &after
                } else {
                    &before
                };
                let present = present
                    .as_ref()
                    .ok_or_else(|| err("*".into(), "rows event without a column bitmap".into()))?;
                body.extend_from_slice(b"\"values\": ");
                read_image(
                    &mut buf,
                    plan,
                    present,
                    false,
                    &mut body,
                    want_key.then_some(&mut key_spans),
                    JsonDocs::Ignore,
                )
                .map_err(map_img)?;
            }
            ChangeKind::Update => {
                let (Some(b), Some(a)) = (&before, &after) else {
                    return Err(err(
                        "*".into(),
                        "update event without both column bitmaps".into(),
                    ));
                };
                // Documents of this row only: a diff never applies to another row's document.
                before_docs.iter_mut().for_each(|d| *d = BeforeDoc::Absent);
                body.extend_from_slice(b"\"before_values\": ");
                let image_start = body.len();
                read_image(
                    &mut buf,
                    plan,
                    b,
                    false,
                    &mut body,
                    want_key.then_some(&mut key_spans),
                    if partial {
                        JsonDocs::Keep(&mut before_docs)
                    } else {
                        JsonDocs::Ignore
                    },
                )
                .map_err(map_img)?;
                if want_key {
                    before_key =
                        Some(((image_start, body.len()), key_text(plan, &key_spans, &body)));
                }
                body.extend_from_slice(b", \"after_values\": ");
                // The after image's key wins: with a MINIMAL image it may hold only changed columns,
                // so before-image spans stay for the key columns it lacks.
                let mut after_spans = vec![None; n];
                read_image(
                    &mut buf,
                    plan,
                    a,
                    partial,
                    &mut body,
                    want_key.then_some(&mut after_spans),
                    if partial {
                        JsonDocs::Apply(&mut before_docs)
                    } else {
                        JsonDocs::Ignore
                    },
                )
                .map_err(map_img)?;
                for (k, s) in key_spans.iter_mut().zip(after_spans) {
                    if s.is_some() {
                        *k = s;
                    }
                }
            }
        }
        if buf.len() == remaining {
            // Every real row image takes at least its null bitmap; one that takes nothing
            // would repeat for ever.
            return Err(err(
                "*".into(),
                "malformed rows event: a row image holds no bytes".into(),
            ));
        }
        let position = RowPosition {
            file: file.clone(),
            pos,
            row,
            tx_pos,
            gtid: gtid.cloned(),
            ts,
            // Filled in by the reader, which knows the event's number.
            rows_event: 0,
            event_row: 0,
            resumable: true,
            key_change: false,
        };
        finish_record(&mut body, kind, plan, opts, &position, false);

        let primary_key = want_key.then(|| key_text(plan, &key_spans, &body));
        if let (Some(((s, e), old_key)), Some(new_key)) = (before_key.take(), &primary_key) {
            if old_key != *new_key {
                // The old key value goes away: a delete of the before image under its own
                // partition key, so it stays in order with that key's earlier and later changes.
                let mut del = Vec::with_capacity(plan.head.len() + (e - s) + 128);
                del.extend_from_slice(&plan.head);
                del.extend_from_slice(b"\"values\": ");
                del.extend_from_slice(&body[s..e]);
                let position = RowPosition {
                    key_change: true,
                    ..position.clone()
                };
                finish_record(&mut del, ChangeKind::Delete, plan, opts, &position, false);
                emit(RowChange::of(
                    plan,
                    ChangeKind::Delete,
                    del,
                    Some(old_key),
                    position,
                ));
            }
        }

        size_hint = size_hint.max(body.len());
        emit(RowChange::of(plan, kind, body, primary_key, position));
        row += 1;
    }
    Ok(row - first_row)
}
