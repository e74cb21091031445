//! A table's snapshot plan: its record encoder (the binlog path's, built from
//! information_schema), the key it is paged by, and the chunk SQL.

use std::{fmt, sync::Arc};

use base64::Engine;
use mysql_async::{prelude::Queryable, Conn, Value};
use mysql_common::constants::ColumnType;

use super::SnapshotError;
use crate::{
    decode::{
        charset::Charset,
        plan::{column_key, ColumnPlan},
        Kind, TablePlan,
    },
    source::schema,
};

/// `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// `` `schema`.`table` ``, for statements naming the table.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.table))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

impl std::str::FromStr for TableName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().split_once('.') {
            Some((schema, table)) if !schema.is_empty() && !table.is_empty() => Ok(TableName {
                schema: schema.to_string(),
                table: table.to_string(),
            }),
            _ => Err(format!("`{s}` is not SCHEMA.TABLE")),
        }
    }
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// How a table is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// Keyset pagination by these columns (indexes into the plan's columns), which form the
    /// primary key or a unique key of NOT NULL columns (`index` names it).
    Key { columns: Vec<usize>, index: String },
    /// No usable key: one SELECT of the whole table.
    OnePass,
}

#[derive(Debug, Clone)]
pub struct SnapshotPlan {
    pub name: TableName,
    /// The encoder, exactly the binlog path's plan for this table (same names, kinds and
    /// primary key, so records and partition keys are alike).
    pub record: Arc<TablePlan>,
    pub paging: Paging,
    /// `information_schema.TABLES.TABLE_ROWS` when the plan was built (an estimate).
    pub estimated_rows: u64,
    select_list: String,
    from: String,
}

/// Column facts beyond what the binlog path's `TableInfo` holds.
struct Extra {
    precision: Option<u8>,
    octet_length: Option<u64>,
    nullable: bool,
    column_type: String,
}

fn kind_of(
    schema: &str,
    table: &str,
    info: &crate::decode::ColumnInfo,
    extra: &Extra,
) -> Result<Kind, SnapshotError> {
    let unsupported = |reason: String| SnapshotError::Unsupported {
        table: format!("{schema}.{table}"),
        column: info.name.clone(),
        reason,
    };
    let fsp = extra.precision.unwrap_or(0);
    let charset = match info.charset.as_deref() {
        Some(cs) => Some(Charset::from_mysql_name(cs).map_err(|e| unsupported(e.to_string()))?),
        None => None,
    };
    Ok(match info.data_type.as_str() {
        "tinyint" | "bool" | "boolean" => Kind::Int { width: 1 },
        "smallint" => Kind::Int { width: 2 },
        "mediumint" => Kind::Int { width: 3 },
        "int" | "integer" => Kind::Int { width: 4 },
        "bigint" => Kind::Int { width: 8 },
        "float" => Kind::Float,
        "double" | "real" => Kind::Double,
        "decimal" | "numeric" => Kind::Decimal,
        "year" => Kind::Year,
        "date" => Kind::Date,
        "datetime" => Kind::DateTime { fsp },
        "timestamp" => Kind::Timestamp { fsp },
        "time" => Kind::Time { fsp },
        "bit" => Kind::Bit,
        "json" => Kind::JsonBinary,
        "enum" => Kind::Enum(info.labels.clone()),
        "set" => Kind::Set(info.labels.clone()),
        "vector" => Kind::Vector,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => Kind::Geometry,
        "inet4" | "inet6" | "uuid" => {
            // A SELECT returns these as text, the binlog as their stored bytes.
            return Err(unsupported(format!(
                "type {} is not supported by snapshots yet (exclude the table from the snapshot \
                 with --snapshot-tables, or stream without one)",
                extra.column_type
            )));
        }
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "binary"
        | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => match charset {
            Some(cs) if info.is_json && !cs.is_binary() => Kind::JsonText(cs),
            Some(cs) if !cs.is_binary() => Kind::Text(cs),
            _ => Kind::Binary {
                pad_to: (info.data_type == "binary")
                    .then_some(extra.octet_length)
                    .flatten()
                    .map(|n| n as usize),
            },
        },
        other => return Err(unsupported(format!("column type {other} is not supported"))),
    })
}

/// Key columns must compare in a total order the server can seek by.
fn orderable(kind: &Kind, data_type: &str) -> bool {
    !matches!(
        kind,
        Kind::Geometry | Kind::JsonBinary | Kind::JsonText(_) | Kind::Vector
    ) && !data_type.ends_with("blob")
        && !data_type.ends_with("text")
}

/// Loads the plan of `name`; `None` when the table does not exist (dropped).
pub async fn load(
    conn: &mut Conn,
    name: &TableName,
    is_mariadb: bool,
) -> Result<Option<SnapshotPlan>, SnapshotError> {
    let db = |e: mysql_async::Error| SnapshotError::query(name, e);
    let info = match schema::load_table(conn, &name.schema, &name.table, is_mariadb).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            // information_schema hides tables the user may not read: tell that apart from a
            // dropped table by the error a SELECT gives.
            let probe = format!("SELECT 1 FROM {} LIMIT 0", name.quoted());
            return match conn.query_drop(probe).await {
                Err(mysql_async::Error::Server(s)) if s.code == 1146 || s.code == 1049 => Ok(None),
                Err(mysql_async::Error::Server(s)) if s.code == 1142 || s.code == 1044 => {
                    Err(SnapshotError::NoSelect {
                        table: name.to_string(),
                        message: s.message,
                    })
                }
                Err(e) => Err(db(e)),
                Ok(()) => Ok(None),
            };
        }
        Err(e) => return Err(SnapshotError::Source(Box::new(e))),
    };
    type ExtraRow = (String, Option<u64>, Option<u64>, String, String);
    let extras: Vec<ExtraRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATETIME_PRECISION, CHARACTER_OCTET_LENGTH, IS_NULLABLE, COLUMN_TYPE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (&name.schema, &name.table),
        )
        .await
        .map_err(db)?;
    let mut columns = Vec::with_capacity(info.columns.len());
    let mut nullable = Vec::with_capacity(info.columns.len());
    for ci in &info.columns {
        let extra = extras
            .iter()
            .find(|e| e.0 == ci.name)
            .map(|e| Extra {
                precision: e.1.map(|p| p.min(6) as u8),
                octet_length: e.2,
                nullable: e.3 == "YES",
                column_type: e.4.clone(),
            })
            .ok_or_else(|| SnapshotError::Changed {
                table: name.to_string(),
            })?;
        let kind = kind_of(&name.schema, &name.table, ci, &extra)?;
        nullable.push(extra.nullable);
        columns.push((
            ColumnPlan {
                key: column_key(&ci.name),
                name: ci.name.clone(),
                // Only the binlog parser reads the type and metadata.
                column_type: ColumnType::MYSQL_TYPE_NULL,
                meta: Vec::new(),
                unsigned: ci.unsigned,
                kind,
            },
            ci.data_type.clone(),
        ));
    }
    let position = |n: &str| columns.iter().position(|(c, _)| c.name == n);
    let primary_key: Vec<usize> = info
        .primary_key
        .iter()
        .filter_map(|k| position(k))
        .collect();

    let paging = if !primary_key.is_empty() {
        Paging::Key {
            columns: primary_key.clone(),
            index: "PRIMARY".into(),
        }
    } else {
        // A unique key whose columns are all NOT NULL identifies rows as well as a primary
        // key; the narrowest one is the cheapest to seek by.
        let uniques: Vec<(String, String)> = conn
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
                 AND INDEX_NAME <> 'PRIMARY' ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                (&name.schema, &name.table),
            )
            .await
            .map_err(db)?;
        let mut best: Option<(String, Vec<usize>)> = None;
        let mut i = 0;
        while i < uniques.len() {
            let index = uniques[i].0.clone();
            let mut cols = Vec::new();
            let mut usable = true;
            while i < uniques.len() && uniques[i].0 == index {
                match position(&uniques[i].1) {
                    Some(c) if !nullable[c] && orderable(&columns[c].0.kind, &columns[c].1) => {
                        cols.push(c)
                    }
                    _ => usable = false,
                }
                i += 1;
            }
            if usable && best.as_ref().is_none_or(|(_, b)| cols.len() < b.len()) {
                best = Some((index, cols));
            }
        }
        match best {
            Some((index, columns)) => Paging::Key { columns, index },
            None => Paging::OnePass,
        }
    };
    if let Paging::Key { columns: key, .. } = &paging {
        for &k in key {
            let (c, data_type) = &columns[k];
            if !orderable(&c.kind, data_type) {
                return Err(SnapshotError::Unorderable {
                    table: name.to_string(),
                    column: c.name.clone(),
                    data_type: data_type.clone(),
                });
            }
        }
    }
    let estimated_rows: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&name.schema, &name.table),
        )
        .await
        .map_err(db)?;
    let select_list = columns
        .iter()
        .map(|(c, _)| match c.kind {
            // The index / bitmap, as the binlog has them (no charset conversion of labels).
            Kind::Enum(_) | Kind::Set(_) => format!("{}+0", quote(&c.name)),
            _ => quote(&c.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let from = match &paging {
        Paging::Key { index, .. } => format!("{} FORCE INDEX ({})", name.quoted(), quote(index)),
        Paging::OnePass => name.quoted(),
    };
    let record = TablePlan::assemble(
        name.schema.clone(),
        name.table.clone(),
        columns.into_iter().map(|(c, _)| c).collect(),
        primary_key,
        0,
    );
    Ok(Some(SnapshotPlan {
        name: name.clone(),
        record: Arc::new(record),
        paging,
        estimated_rows: estimated_rows.flatten().unwrap_or(0),
        select_list,
        from,
    }))
}

impl SnapshotPlan {
    /// The key column indexes (empty for one pass).
    pub fn key_columns(&self) -> &[usize] {
        match &self.paging {
            Paging::Key { columns, .. } => columns,
            Paging::OnePass => &[],
        }
    }

    /// The chunk query after `after` (the last key read, or none for the first chunk) and
    /// its parameters. Never open-ended: always `LIMIT limit`. Composite keys seek by their
    /// first column (`k1 >= ?`, which any index range can use) and filter by the row
    /// comparison; the server compares in its own collation.
    pub fn chunk_sql(
        &self,
        after: Option<&serde_json::Value>,
        limit: usize,
    ) -> Result<(String, Vec<Value>), SnapshotError> {
        let key = self.key_columns();
        let names: Vec<String> = key
            .iter()
            .map(|&k| quote(&self.record.columns[k].name))
            .collect();
        let order = names.join(", ");
        let mut sql = format!("SELECT {} FROM {}", self.select_list, self.from);
        let mut params = Vec::new();
        if let Some(after) = after {
            let values = after
                .as_array()
                .filter(|a| a.len() == key.len())
                .ok_or_else(|| SnapshotError::BadKey {
                    table: self.name.to_string(),
                    key: after.to_string(),
                })?;
            let mut bound = Vec::with_capacity(values.len());
            for (&k, v) in key.iter().zip(values) {
                bound.push(key_param(&self.record.columns[k], v).ok_or_else(|| {
                    SnapshotError::BadKey {
                        table: self.name.to_string(),
                        key: after.to_string(),
                    }
                })?);
            }
            if key.len() == 1 {
                sql.push_str(&format!(" WHERE {} > ?", names[0]));
            } else {
                sql.push_str(&format!(
                    " WHERE {} >= ? AND ({order}) > ({})",
                    names[0],
                    vec!["?"; key.len()].join(", ")
                ));
                params.push(bound[0].clone());
            }
            params.extend(bound);
        }
        sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));
        Ok((sql, params))
    }

    /// The whole table, for one pass.
    pub fn full_sql(&self) -> String {
        format!("SELECT {} FROM {}", self.select_list, self.from)
    }

    /// The key of a row as returned by the server, as the JSON array stored in checkpoints.
    pub fn key_of(&self, values: &[Value]) -> Option<serde_json::Value> {
        let key = self.key_columns();
        let mut out = Vec::with_capacity(key.len());
        for &k in key {
            out.push(key_json(&self.record.columns[k], values.get(k)?)?);
        }
        Some(serde_json::Value::Array(out))
    }
}

fn is_binary(kind: &Kind) -> bool {
    matches!(kind, Kind::Binary { .. } | Kind::Bit)
}

/// A key value as JSON: numbers as numbers, text decoded from the column's charset, bytes in
/// base64, temporal values as the server's text (which it parses back when comparing).
fn key_json(col: &ColumnPlan, v: &Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        Value::NULL => J::Null,
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => J::from(f64::from(*f)),
        Value::Double(f) => J::from(*f),
        Value::Bytes(b) => match &col.kind {
            Kind::Text(cs) => J::String(cs.decode(b).ok()?.into_owned()),
            k if is_binary(k) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
            _ => J::String(String::from_utf8(b.clone()).ok()?),
        },
        Value::Date(y, mo, d, h, mi, s, us) => J::String(format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        Value::Time(neg, days, h, m, s, us) => J::String(format!(
            "{}{}:{m:02}:{s:02}.{us:06}",
            if *neg { "-" } else { "" },
            days * 24 + u32::from(*h)
        )),
    })
}

/// The parameter for a stored key value (the inverse of [`key_json`]).
fn key_param(col: &ColumnPlan, j: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    Some(match j {
        J::Null => Value::NULL,
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Double(n.as_f64()?),
        },
        J::String(s) if is_binary(&col.kind) => {
            Value::Bytes(base64::engine::general_purpose::STANDARD.decode(s).ok()?)
        }
        J::String(s) => Value::Bytes(s.as_bytes().to_vec()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse() {
        let t: TableName = "shop.orders".parse().expect("name");
        assert_eq!(t.to_string(), "shop.orders");
        assert!("orders".parse::<TableName>().is_err());
        assert!(".x".parse::<TableName>().is_err());
    }

    #[test]
    fn key_values_round_trip_through_json() {
        let col = |kind| ColumnPlan {
            name: "k".into(),
            key: column_key("k"),
            column_type: ColumnType::MYSQL_TYPE_NULL,
            meta: vec![],
            unsigned: false,
            kind,
        };
        let text = col(Kind::Text(Charset::from_mysql_name("latin1").expect("cs")));
        let j = key_json(&text, &Value::Bytes(vec![b'a', 0xe9])).expect("json");
        assert_eq!(j, serde_json::json!("aé"));
        // Sent as UTF-8 text: the server converts it to the column's charset to compare.
        assert_eq!(
            key_param(&text, &j),
            Some(Value::Bytes("aé".as_bytes().to_vec()))
        );
        let bin = col(Kind::Binary { pad_to: None });
        let j = key_json(&bin, &Value::Bytes(vec![0, 255])).expect("json");
        assert_eq!(key_param(&bin, &j), Some(Value::Bytes(vec![0, 255])));
        let int = col(Kind::Int { width: 8 });
        let j = key_json(&int, &Value::UInt(u64::MAX)).expect("json");
        assert_eq!(key_param(&int, &j), Some(Value::UInt(u64::MAX)));
        let j = key_json(&int, &Value::Int(-5)).expect("json");
        assert_eq!(key_param(&int, &j), Some(Value::Int(-5)));
    }
}
