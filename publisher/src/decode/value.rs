//! One binlog value to its JSON text, per the table in `record-format.md`.

use base64::Engine;
use mysql_common::{
    binlog::{jsonb, value::BinlogValue},
    value::Value,
};

use super::plan::{ColumnPlan, Kind};
use crate::json;

/// Why a value could not be encoded; the caller adds schema, table, column and position.
pub type ValueError = String;

fn int_of(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128),
        Value::UInt(u) => Some(*u as i128),
        _ => None,
    }
}

fn bytes_of<'v>(v: &'v Value, what: &str) -> Result<&'v [u8], ValueError> {
    match v {
        Value::Bytes(b) => Ok(b),
        other => Err(format!("expected {what} bytes, got {other:?}")),
    }
}

fn push_2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn push_fraction(out: &mut Vec<u8>, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    out.push(b'.');
    let digits = format!("{micros:06}");
    out.extend_from_slice(&digits.as_bytes()[..(fsp.min(6)) as usize]);
}

fn push_date(out: &mut Vec<u8>, y: u32, m: u32, d: u32) {
    let mut b = itoa::Buffer::new();
    let ys = b.format(y);
    for _ in ys.len()..4 {
        out.push(b'0');
    }
    out.extend_from_slice(ys.as_bytes());
    out.push(b'-');
    push_2(out, m);
    out.push(b'-');
    push_2(out, d);
}

fn push_hms(out: &mut Vec<u8>, h: u32, m: u32, s: u32) {
    push_2(out, h);
    out.push(b':');
    push_2(out, m);
    out.push(b':');
    push_2(out, s);
}

/// Days since 1970-01-01 to a civil date (proleptic Gregorian), after Howard Hinnant.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn write_timestamp(out: &mut Vec<u8>, secs: i64, micros: u32, fsp: u8) {
    out.push(b'"');
    if secs == 0 && micros == 0 {
        // The zero TIMESTAMP, printed as the server prints it.
        out.extend_from_slice(b"0000-00-00 00:00:00");
    } else {
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400) as u32;
        push_date(out, y as u32, m, d);
        out.push(b' ');
        push_hms(out, rem / 3600, rem / 60 % 60, rem % 60);
    }
    push_fraction(out, micros, fsp);
    out.push(b'"');
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// A binary JSON value as a document. Through mysql_common's DOM, which also reads the opaque
/// scalars MySQL embeds (DECIMAL as a string, DATE/TIME/DATETIME as their text).
pub fn json_document(j: &jsonb::Value<'_>) -> Result<serde_json::Value, ValueError> {
    let dom = j
        .clone()
        .parse()
        .map_err(|e| format!("undecodable binary JSON: {e}"))?;
    Ok(serde_json::Value::from(dom))
}

/// Appends the JSON for `value` (never NULL: the caller writes `null` from the null bitmap).
pub fn write_value(
    out: &mut Vec<u8>,
    col: &ColumnPlan,
    value: &BinlogValue<'_>,
) -> Result<(), ValueError> {
    let v = match value {
        BinlogValue::Value(Value::NULL) => {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            json::write_value(out, &json_document(j)?);
            return Ok(());
        }
        BinlogValue::JsonDiff(_) => {
            // The row decoder applies diffs to the before image; one reaching here had none.
            return Err(format!(
                "{} outside an update's after image",
                super::PARTIAL_JSON
            ));
        }
    };
    write_plain(out, col, v)
}

/// Appends the JSON for a value read by a SELECT over the binary protocol (session time zone
/// `+00:00`, `character_set_results` NULL so text arrives in the column's own charset), the
/// same JSON [`write_value`] writes for the binlog's form of it. Only the types whose
/// protocol form differs from the binlog's are converted here.
pub fn write_protocol_value(
    out: &mut Vec<u8>,
    col: &ColumnPlan,
    v: &Value,
) -> Result<(), ValueError> {
    match (&col.kind, v) {
        (_, Value::NULL) => out.extend_from_slice(b"null"),
        // The binlog holds seconds since the epoch; in UTC the server's text is the same instant.
        (Kind::Timestamp { fsp }, Value::Date(..)) => write_datetime(out, v, *fsp)?,
        // The snapshot selects a SET as `col+0`: the bitmap as a number.
        (Kind::Set(_), Value::Int(_) | Value::UInt(_)) => {
            let bits = int_of(v).unwrap_or(0) as u64;
            write_plain(out, col, &Value::Bytes(bits.to_le_bytes().to_vec()))?
        }
        (Kind::Year, Value::Int(_) | Value::UInt(_)) => {
            json::write_u64(out, int_of(v).unwrap_or(0).max(0) as u64)
        }
        (Kind::Year, Value::Bytes(b)) => {
            // Text protocol fallback: the year as digits.
            let y: u64 = std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("bad YEAR {b:?}"))?;
            json::write_u64(out, y)
        }
        // The snapshot selects an ENUM as `col+0` (its index, as in the binlog); a plain
        // SELECT returns the label.
        (Kind::Enum(_), Value::Bytes(b)) => {
            let text = protocol_text(col, b)?;
            json::write_str(out, &text);
        }
        // SELECT returns `a,b` (labels in definition order, which is bit order), the binlog a
        // bitmap.
        (Kind::Set(_), Value::Bytes(b)) => {
            let text = protocol_text(col, b)?;
            out.push(b'[');
            for (i, label) in text.split(',').filter(|l| !l.is_empty()).enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                json::write_str(out, label);
            }
            out.push(b']');
        }
        // MySQL JSON: SELECT returns the document as text.
        (Kind::JsonBinary, Value::Bytes(b)) => {
            let doc: serde_json::Value = serde_json::from_slice(b)
                .map_err(|e| format!("JSON column holds invalid JSON: {e}"))?;
            json::write_value(out, &doc);
        }
        _ => write_plain(out, col, v)?,
    }
    Ok(())
}

/// ENUM/SET labels arrive in the column's charset; the plan keeps it only for text kinds,
/// so labels are read as UTF-8 (information_schema's form) with a Latin-1 fallback.
fn protocol_text(_col: &ColumnPlan, b: &[u8]) -> Result<String, ValueError> {
    match std::str::from_utf8(b) {
        Ok(t) => Ok(t.to_string()),
        Err(_) => Ok(b.iter().map(|&c| c as char).collect()),
    }
}

fn write_datetime(out: &mut Vec<u8>, v: &Value, fsp: u8) -> Result<(), ValueError> {
    match v {
        Value::Date(y, mo, d, h, mi, s, us) => {
            out.push(b'"');
            push_date(out, u32::from(*y), u32::from(*mo), u32::from(*d));
            out.push(b' ');
            push_hms(out, u32::from(*h), u32::from(*mi), u32::from(*s));
            push_fraction(out, *us, fsp);
            out.push(b'"');
            Ok(())
        }
        other => Err(format!("expected a DATETIME, got {other:?}")),
    }
}

/// [`write_value`] for a plain (non-JSON-binary) value.
fn write_plain(out: &mut Vec<u8>, col: &ColumnPlan, v: &Value) -> Result<(), ValueError> {
    match &col.kind {
        Kind::Int { width } => {
            let raw = int_of(v).ok_or_else(|| format!("expected an integer, got {v:?}"))?;
            // mysql_common's own signedness handling is unreliable (MEDIUMINT is never
            // sign-extended; without metadata every column reads as signed), so reinterpret
            // the column's bytes here from its width and the known signedness.
            let bits = u32::from(*width) * 8;
            let mask: u128 = if bits == 64 {
                u64::MAX as u128
            } else {
                (1u128 << bits) - 1
            };
            let unsigned = (raw as u128) & mask;
            if col.unsigned {
                json::write_u64(out, unsigned as u64);
            } else {
                let shift = 128 - bits;
                json::write_i64(out, (((unsigned << shift) as i128) >> shift) as i64);
            }
        }
        Kind::Float => match v {
            Value::Float(f) => json::write_f32(out, *f),
            Value::Double(f) => json::write_f64(out, *f),
            other => return Err(format!("expected a FLOAT, got {other:?}")),
        },
        Kind::Double => match v {
            Value::Double(f) => json::write_f64(out, *f),
            Value::Float(f) => json::write_f64(out, f64::from(*f)),
            other => return Err(format!("expected a DOUBLE, got {other:?}")),
        },
        Kind::Decimal => {
            let text = bytes_of(v, "DECIMAL")?;
            out.push(b'"');
            out.extend_from_slice(text);
            out.push(b'"');
        }
        Kind::Year => {
            let text = bytes_of(v, "YEAR")?;
            let year: u32 = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("bad YEAR {text:?}"))?;
            // The stored byte is year-1900 with 0 meaning the zero year 0000; mysql_common adds
            // 1900 to it unconditionally.
            json::write_u64(out, if year == 1900 { 0 } else { u64::from(year) });
        }
        Kind::Date => match v {
            Value::Date(y, m, d, ..) => {
                out.push(b'"');
                push_date(out, u32::from(*y), u32::from(*m), u32::from(*d));
                out.push(b'"');
            }
            other => return Err(format!("expected a DATE, got {other:?}")),
        },
        Kind::DateTime { fsp } => write_datetime(out, v, *fsp)?,
        Kind::Timestamp { fsp } => {
            let (secs, micros) = match v {
                Value::Int(s) => (*s, 0),
                Value::Bytes(b) => {
                    let t =
                        std::str::from_utf8(b).map_err(|_| "bad TIMESTAMP bytes".to_string())?;
                    let (s, us) = t.split_once('.').unwrap_or((t, "0"));
                    (
                        s.parse::<i64>().map_err(|_| format!("bad TIMESTAMP {t}"))?,
                        us.parse::<u32>()
                            .map_err(|_| format!("bad TIMESTAMP {t}"))?,
                    )
                }
                other => return Err(format!("expected a TIMESTAMP, got {other:?}")),
            };
            write_timestamp(out, secs, micros, *fsp);
        }
        Kind::Time { fsp } => match v {
            Value::Time(neg, days, h, m, s, us) => {
                out.push(b'"');
                if *neg {
                    out.push(b'-');
                }
                let hours = days * 24 + u32::from(*h);
                if hours >= 100 {
                    json::write_u64(out, u64::from(hours));
                } else {
                    push_2(out, hours);
                }
                out.push(b':');
                push_2(out, u32::from(*m));
                out.push(b':');
                push_2(out, u32::from(*s));
                push_fraction(out, *us, *fsp);
                out.push(b'"');
            }
            other => return Err(format!("expected a TIME, got {other:?}")),
        },
        Kind::Text(cs) => {
            let bytes = bytes_of(v, "text")?;
            let text = cs.decode(bytes).map_err(|e| e.to_string())?;
            json::write_str(out, &text);
        }
        Kind::JsonText(cs) => {
            let bytes = bytes_of(v, "JSON text")?;
            let text = cs.decode(bytes).map_err(|e| e.to_string())?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("JSON column holds invalid JSON: {e}"))?;
            json::write_value(out, &doc);
        }
        Kind::Binary { pad_to } => {
            let bytes = bytes_of(v, "binary")?;
            match pad_to {
                Some(n) if bytes.len() < *n => {
                    let mut padded = bytes.to_vec();
                    padded.resize(*n, 0);
                    write_base64(out, &padded);
                }
                _ => write_base64(out, bytes),
            }
        }
        Kind::Geometry => write_base64(out, bytes_of(v, "GEOMETRY")?),
        Kind::Vector => {
            let bytes = bytes_of(v, "VECTOR")?;
            if bytes.len() % 4 != 0 {
                return Err(format!(
                    "VECTOR of {} bytes is not a list of floats",
                    bytes.len()
                ));
            }
            out.push(b'[');
            for (i, c) in bytes.chunks_exact(4).enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                json::write_f32(out, f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
            out.push(b']');
        }
        Kind::Enum(labels) => {
            let idx = int_of(v).ok_or_else(|| format!("expected an ENUM index, got {v:?}"))?;
            if idx == 0 {
                // The "invalid value" entry MySQL stores for bad input in non-strict mode.
                out.extend_from_slice(b"\"\"");
            } else {
                let label = usize::try_from(idx - 1)
                    .ok()
                    .and_then(|i| labels.get(i))
                    .ok_or_else(|| {
                        format!("ENUM index {idx} beyond the {} known labels", labels.len())
                    })?;
                json::write_str(out, label);
            }
        }
        Kind::Set(labels) => {
            let bytes = bytes_of(v, "SET")?;
            out.push(b'[');
            let mut first = true;
            for (byte_i, byte) in bytes.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        let i = byte_i * 8 + bit;
                        let label = labels.get(i).ok_or_else(|| {
                            format!("SET bit {i} beyond the {} known labels", labels.len())
                        })?;
                        if !first {
                            out.extend_from_slice(b", ");
                        }
                        first = false;
                        json::write_str(out, label);
                    }
                }
            }
            out.push(b']');
        }
        Kind::Bit => {
            let bytes = bytes_of(v, "BIT")?;
            let n = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            json::write_u64(out, n);
        }
        Kind::JsonBinary => return Err(format!("expected binary JSON, got {v:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let mut out = Vec::new();
        write_timestamp(&mut out, 2_147_483_647, 999_999, 6);
        assert_eq!(out, b"\"2038-01-19 03:14:07.999999\"");
        out.clear();
        write_timestamp(&mut out, 0, 0, 2);
        assert_eq!(out, b"\"0000-00-00 00:00:00.00\"");
    }
}
