//! MySQL partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`): a rows event then carries,
//! for a JSON column, a list of operations on the before-image document instead of the new
//! document. This module parses the operations' paths and applies them to a `serde_json::Value`
//! exactly as the server replays them on a replica (`apply_json_diffs` in MySQL's json_diff.cc);
//! whatever the server would reject is an error here too, never a best guess.

use serde_json::{Map, Value};

/// What a partial update does at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The value at the path is replaced; it must exist.
    Replace,
    /// A member or array element is added; the parent must exist.
    Insert,
    /// The value at the path is removed; it must exist.
    Remove,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Replace => "REPLACE",
            Op::Insert => "INSERT",
            Op::Remove => "REMOVE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonDiffError {
    #[error("bad JSON path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("cannot {op} at {path}: {reason}")]
    NotApplicable {
        op: &'static str,
        path: String,
        reason: String,
    },
}

/// An array cell as the server writes it: `[3]`, `[last]` or `[last-2]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    FromStart(usize),
    FromEnd(usize),
}

impl Cell {
    /// Position and whether it lies inside an array of `len` elements, as MySQL's
    /// `Json_array_index` computes them (a position past the end is clamped to `len`).
    fn resolve(self, len: usize) -> (usize, bool) {
        match self {
            Cell::FromStart(i) => (i.min(len), i < len),
            Cell::FromEnd(i) => {
                if i < len {
                    (len - 1 - i, true)
                } else {
                    (0, false)
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leg {
    Member(String),
    Cell(Cell),
}

/// Parses a path in the syntax of MySQL's `Json_path` (the server writes the canonical form:
/// `$`, `.key`, `."quoted key"`, `[3]`, `[last-1]`). Wildcards and ranges never appear in a
/// diff and are refused.
pub fn parse_path(path: &str) -> Result<Vec<Leg>, JsonDiffError> {
    let bad = |reason: &str| JsonDiffError::BadPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let s = path.trim_start();
    let mut rest = s
        .strip_prefix('$')
        .ok_or_else(|| bad("does not start with `$`"))?;
    let mut legs = Vec::new();
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else { break };
        match c {
            '.' => {
                rest = rest[1..].trim_start();
                if rest.starts_with('"') {
                    let end = quoted_end(rest).ok_or_else(|| bad("unterminated quoted key"))?;
                    let name: String = serde_json::from_str(&rest[..end])
                        .map_err(|_| bad("malformed quoted key"))?;
                    legs.push(Leg::Member(name));
                    rest = &rest[end..];
                } else {
                    let end = rest
                        .find(|c: char| c == '.' || c == '[' || c.is_whitespace())
                        .unwrap_or(rest.len());
                    let name = &rest[..end];
                    if name.is_empty() {
                        return Err(bad("empty key"));
                    }
                    if name.contains('*') || name.contains('"') {
                        return Err(bad("wildcards are not allowed in a partial update"));
                    }
                    legs.push(Leg::Member(name.to_string()));
                    rest = &rest[end..];
                }
            }
            '[' => {
                let close = rest.find(']').ok_or_else(|| bad("unterminated `[`"))?;
                let inner = rest[1..close].trim();
                legs.push(Leg::Cell(parse_cell(inner).ok_or_else(|| {
                    bad("array cell is not a number, `last` or `last-N`")
                })?));
                rest = &rest[close + 1..];
            }
            _ => return Err(bad("expected `.` or `[`")),
        }
    }
    Ok(legs)
}

/// Byte index just past the closing quote of the JSON string at the start of `s`.
fn quoted_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_cell(inner: &str) -> Option<Cell> {
    if let Some(from_end) = inner.strip_prefix("last") {
        let from_end = from_end.trim_start();
        if from_end.is_empty() {
            return Some(Cell::FromEnd(0));
        }
        return parse_index(from_end.strip_prefix('-')?.trim_start()).map(Cell::FromEnd);
    }
    parse_index(inner).map(Cell::FromStart)
}

/// Follows `legs` without auto-wrapping, as MySQL's `seek_exact_path` does.
fn seek<'v>(mut v: &'v mut Value, legs: &[Leg]) -> Option<&'v mut Value> {
    for leg in legs {
        v = match (v, leg) {
            (Value::Object(o), Leg::Member(name)) => o.get_mut(name)?,
            (Value::Array(a), Leg::Cell(cell)) => {
                let (pos, inside) = cell.resolve(a.len());
                if !inside {
                    return None;
                }
                &mut a[pos]
            }
            _ => return None,
        };
    }
    Some(v)
}

/// Adds a member where a document decoded from a full image would have it: mysql_common's DOM
/// orders an object's keys by their bytes, so an inserted key goes to its sorted place.
fn insert_sorted(o: &mut Map<String, Value>, name: &str, value: Value) {
    let at = o.keys().take_while(|k| k.as_str() < name).count();
    o.shift_insert(at, name.to_string(), value);
}

/// Applies one operation to `doc`. `value` is the new value for REPLACE and INSERT, `None` for
/// REMOVE. On error `doc` is unchanged.
pub fn apply(
    doc: &mut Value,
    op: Op,
    path: &str,
    value: Option<Value>,
) -> Result<(), JsonDiffError> {
    let fail = |reason: &str| JsonDiffError::NotApplicable {
        op: op.name(),
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let legs = parse_path(path)?;
    let Some((last, parent_legs)) = legs.split_last() else {
        // The server never diffs the root (it logs the whole document then) and rejects it.
        return Err(fail(
            "the document root cannot be the target of a partial update",
        ));
    };
    let value = match (op, value) {
        (Op::Remove, None) => Value::Null,
        (Op::Remove, Some(_)) => return Err(fail("a REMOVE carries a value")),
        (_, Some(v)) => v,
        (_, None) => return Err(fail("the operation carries no value")),
    };
    let parent = seek(doc, parent_legs).ok_or_else(|| fail("the parent path does not exist"))?;
    match (parent, last) {
        (Value::Object(o), Leg::Member(name)) => match op {
            Op::Replace => {
                let slot = o.get_mut(name).ok_or_else(|| fail("no such member"))?;
                *slot = value;
            }
            Op::Insert => {
                if o.contains_key(name) {
                    return Err(fail("the member already exists"));
                }
                insert_sorted(o, name, value);
            }
            Op::Remove => {
                o.shift_remove(name).ok_or_else(|| fail("no such member"))?;
            }
        },
        (Value::Array(a), Leg::Cell(cell)) => {
            let (pos, inside) = cell.resolve(a.len());
            match op {
                Op::Replace if inside => a[pos] = value,
                // Like the server: a position past the end appends.
                Op::Insert => a.insert(pos, value),
                Op::Remove if inside => {
                    a.remove(pos);
                }
                _ => return Err(fail("array index out of range")),
            }
        }
        (Value::Object(_), Leg::Cell(_)) => {
            return Err(fail("an array index on an object"));
        }
        (Value::Array(_), Leg::Member(_)) => {
            return Err(fail("a member name on an array"));
        }
        _ => return Err(fail("the parent is a scalar, not an object or array")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"a": 1, "b": [10, 20, 30], "c": {"d": true}, "key with space": "s"})
    }

    fn applied(op: Op, path: &str, value: Option<Value>) -> Value {
        let mut d = doc();
        apply(&mut d, op, path, value).expect("applies");
        d
    }

    fn refused(op: Op, path: &str, value: Option<Value>) -> String {
        let mut d = doc();
        let e = apply(&mut d, op, path, value).expect_err("refused");
        assert_eq!(d, doc(), "a refused operation leaves the document alone");
        e.to_string()
    }

    #[test]
    fn paths() {
        use Leg::*;
        assert_eq!(parse_path("$").expect("root"), vec![]);
        assert_eq!(
            parse_path("$.a[3].\"x y\"[last-2][last]").expect("nested"),
            vec![
                Member("a".into()),
                Cell(super::Cell::FromStart(3)),
                Member("x y".into()),
                Cell(super::Cell::FromEnd(2)),
                Cell(super::Cell::FromEnd(0)),
            ]
        );
        assert_eq!(
            parse_path(r#"$."q\"uo\\te\u00e9".b"#).expect("escapes"),
            vec![Member("q\"uo\\teé".into()), Member("b".into())]
        );
        assert_eq!(
            parse_path("$ . a [ 1 ]").expect("spaces"),
            vec![Member("a".into()), Cell(super::Cell::FromStart(1))]
        );
    }

    #[test]
    fn bad_paths() {
        for p in [
            "",
            "a",
            "$.",
            "$..a",
            "$.*",
            "$[*]",
            "$**.a",
            "$[1 to 2]",
            "$[x]",
            "$[-1]",
            "$[1",
            "$.\"open",
            "$a",
        ] {
            let e = parse_path(p).expect_err(p);
            assert!(
                matches!(e, JsonDiffError::BadPath { ref path, .. } if path == p),
                "{p}: {e}"
            );
        }
    }

    #[test]
    fn replace() {
        let d = applied(Op::Replace, "$.a", Some(json!("x")));
        assert_eq!(d["a"], "x");
        let d = applied(Op::Replace, "$.b[1]", Some(json!({"n": null})));
        assert_eq!(d["b"], json!([10, {"n": null}, 30]));
        let d = applied(Op::Replace, "$.b[last]", Some(json!(0)));
        assert_eq!(d["b"], json!([10, 20, 0]));
        let d = applied(Op::Replace, "$.\"key with space\"", Some(json!(2)));
        assert_eq!(d["key with space"], 2);
        let d = applied(Op::Replace, "$.c.d", Some(json!(false)));
        assert_eq!(d["c"], json!({"d": false}));
        // A replaced member keeps its place.
        let keys: Vec<_> = d.as_object().expect("object").keys().cloned().collect();
        assert_eq!(keys, ["a", "b", "c", "key with space"]);
    }

    #[test]
    fn replace_errors() {
        let e = refused(Op::Replace, "$.zz", Some(json!(1)));
        assert_eq!(e, "cannot REPLACE at $.zz: no such member");
        let e = refused(Op::Replace, "$.b[3]", Some(json!(1)));
        assert_eq!(e, "cannot REPLACE at $.b[3]: array index out of range");
        let e = refused(Op::Replace, "$.b[last-3]", Some(json!(1)));
        assert!(e.contains("out of range"), "{e}");
        let e = refused(Op::Replace, "$", Some(json!(1)));
        assert!(e.contains("root"), "{e}");
        let e = refused(Op::Replace, "$.a", None);
        assert!(e.contains("no value"), "{e}");
    }

    #[test]
    fn insert() {
        // Keys land in byte order, as a document decoded from a full image has them.
        let d = applied(Op::Insert, "$.bb", Some(json!(5)));
        let keys: Vec<_> = d.as_object().expect("object").keys().cloned().collect();
        assert_eq!(keys, ["a", "b", "bb", "c", "key with space"]);
        let d = applied(Op::Insert, "$.c.e", Some(json!([1])));
        assert_eq!(d["c"], json!({"d": true, "e": [1]}));
        let d = applied(Op::Insert, "$.b[0]", Some(json!(5)));
        assert_eq!(d["b"], json!([5, 10, 20, 30]));
        let d = applied(Op::Insert, "$.b[3]", Some(json!(5)));
        assert_eq!(d["b"], json!([10, 20, 30, 5]));
        // Past the end appends, as the server does when it replays the diff.
        let d = applied(Op::Insert, "$.b[9]", Some(json!(5)));
        assert_eq!(d["b"], json!([10, 20, 30, 5]));
        let d = applied(Op::Insert, "$.b[last]", Some(json!(5)));
        assert_eq!(d["b"], json!([10, 20, 5, 30]));
    }

    #[test]
    fn insert_errors() {
        let e = refused(Op::Insert, "$.a", Some(json!(1)));
        assert_eq!(e, "cannot INSERT at $.a: the member already exists");
        let e = refused(Op::Insert, "$.x.y", Some(json!(1)));
        assert_eq!(e, "cannot INSERT at $.x.y: the parent path does not exist");
        let e = refused(Op::Insert, "$.a.y", Some(json!(1)));
        assert_eq!(
            e,
            "cannot INSERT at $.a.y: the parent is a scalar, not an object or array"
        );
        let e = refused(Op::Insert, "$.c[0]", Some(json!(1)));
        assert_eq!(e, "cannot INSERT at $.c[0]: an array index on an object");
        let e = refused(Op::Insert, "$.b.k", Some(json!(1)));
        assert_eq!(e, "cannot INSERT at $.b.k: a member name on an array");
        let e = refused(Op::Insert, "$.b[9].k", Some(json!(1)));
        assert!(e.contains("parent path does not exist"), "{e}");
    }

    #[test]
    fn remove() {
        let d = applied(Op::Remove, "$.b", None);
        // The remaining members keep their order.
        let keys: Vec<_> = d.as_object().expect("object").keys().cloned().collect();
        assert_eq!(keys, ["a", "c", "key with space"]);
        let d = applied(Op::Remove, "$.b[0]", None);
        assert_eq!(d["b"], json!([20, 30]));
        let d = applied(Op::Remove, "$.b[last]", None);
        assert_eq!(d["b"], json!([10, 20]));
        let d = applied(Op::Remove, "$.c.d", None);
        assert_eq!(d["c"], json!({}));
    }

    #[test]
    fn remove_errors() {
        let e = refused(Op::Remove, "$.zz", None);
        assert_eq!(e, "cannot REMOVE at $.zz: no such member");
        let e = refused(Op::Remove, "$.b[3]", None);
        assert_eq!(e, "cannot REMOVE at $.b[3]: array index out of range");
        let e = refused(Op::Remove, "$.b.x", None);
        assert!(e.contains("member name on an array"), "{e}");
        let e = refused(Op::Remove, "$", None);
        assert!(e.contains("root"), "{e}");
        let e = refused(Op::Remove, "$.a", Some(json!(1)));
        assert!(e.contains("carries a value"), "{e}");
        let e = refused(Op::Remove, "$[", None);
        assert!(e.starts_with("bad JSON path"), "{e}");
    }

    #[test]
    fn a_sequence_applies_in_order() {
        let mut d = doc();
        apply(&mut d, Op::Insert, "$.b[3]", Some(json!(40))).expect("insert");
        apply(&mut d, Op::Replace, "$.b[3]", Some(json!(41))).expect("replace");
        apply(&mut d, Op::Remove, "$.b[0]", None).expect("remove");
        assert_eq!(d["b"], json!([20, 30, 41]));
    }
}
