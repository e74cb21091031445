//! Table descriptions from `information_schema`, for sources that do not write column
//! metadata into the binlog (MariaDB's default) and for what the binlog never says (MariaDB
//! JSON columns).

use mysql_async::{prelude::Queryable, Conn};

use super::error::SourceError;
use crate::decode::{ColumnInfo, TableInfo};

/// Labels of `enum('a','b')` / `set('x','y')` as information_schema prints them.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[open + 1..];
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    labels
}

/// Column names named in `json_valid(`col`)` check clauses.
fn json_checked_columns(clauses: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for clause in clauses {
        let lower = clause.to_ascii_lowercase();
        let mut rest = lower.as_str();
        let mut offset = 0;
        while let Some(i) = rest.find("json_valid(") {
            let start = offset + i + "json_valid(".len();
            let inner = &clause[start..];
            if let Some(end) = inner.find(')') {
                let name = inner[..end].trim().trim_matches('`').replace("``", "`");
                out.push(name);
            }
            offset = start;
            rest = &lower[offset..];
        }
    }
    out
}

pub async fn load_table(
    conn: &mut Conn,
    schema: &str,
    table: &str,
    is_mariadb: bool,
) -> Result<Option<TableInfo>, SourceError> {
    // A lost connection stays a connection error, so callers reconnect and try again
    // instead of stopping on a schema error.
    let err = |e: mysql_async::Error| {
        if super::error::connection_lost(&e) {
            return SourceError::Connection(e);
        }
        SourceError::Schema {
            schema: schema.to_string(),
            table: table.to_string(),
            message: e.to_string(),
        }
    };
    type ColRow = (String, String, String, Option<String>);
    let cols: Vec<ColRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await
        .map_err(err)?;
    if cols.is_empty() {
        return Ok(None);
    }
    let primary_key: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (schema, table),
        )
        .await
        .map_err(err)?;
    let json_cols = if is_mariadb {
        let clauses: Vec<String> = conn
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                (schema, table),
            )
            .await
            .map_err(err)?;
        json_checked_columns(&clauses)
    } else {
        Vec::new()
    };
    let columns = cols
        .into_iter()
        .map(|(name, data_type, column_type, charset)| {
            let data_type = data_type.to_ascii_lowercase();
            let labels = if data_type == "enum" || data_type == "set" {
                parse_labels(&column_type)
            } else {
                Vec::new()
            };
            ColumnInfo {
                is_json: json_cols.contains(&name),
                unsigned: column_type.to_ascii_lowercase().contains("unsigned"),
                name,
                data_type,
                charset,
                labels,
            }
        })
        .collect();
    Ok(Some(TableInfo {
        columns,
        primary_key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_with_quotes_and_commas() {
        assert_eq!(
            parse_labels("enum('a','b,c','it''s')"),
            vec!["a", "b,c", "it's"]
        );
        assert_eq!(parse_labels("set('x')"), vec!["x"]);
        assert!(parse_labels("int(11)").is_empty());
    }

    #[test]
    fn json_valid_columns() {
        let c = vec![
            "json_valid(`doc`)".to_string(),
            "`a` > 0 and json_valid(`My Col`)".to_string(),
        ];
        assert_eq!(json_checked_columns(&c), vec!["doc", "My Col"]);
    }
}
