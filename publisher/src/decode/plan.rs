//! A table's decoding plan: for each column of a TABLE_MAP event, its name and how its binlog
//! value becomes JSON. Built once per table map (and rebuilt after DDL), then used for every row.

use std::sync::Arc;

use mysql_common::{
    binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent},
    collations::{Collation, CollationId},
    constants::ColumnType,
};

use super::charset::Charset;

/// What `information_schema` says about a table (the source of names and types when the
/// binlog carries no column metadata, MariaDB's default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    /// Primary-key column names in key order.
    pub primary_key: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnInfo {
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, `enum`, ...).
    pub data_type: String,
    pub unsigned: bool,
    pub charset: Option<String>,
    /// MariaDB JSON: a LONGTEXT with a `json_valid()` check constraint.
    pub is_json: bool,
    /// ENUM or SET labels in definition order.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Int {
        width: u8,
    },
    Float,
    Double,
    Decimal,
    Year,
    Date,
    DateTime {
        fsp: u8,
    },
    Timestamp {
        fsp: u8,
    },
    Time {
        fsp: u8,
    },
    Text(Charset),
    /// BINARY(n) is zero-padded back to n bytes, as SELECT returns it.
    Binary {
        pad_to: Option<usize>,
    },
    JsonBinary,
    JsonText(Charset),
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit,
    Geometry,
    Vector,
}

#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub name: String,
    /// `"name": ` ready to copy into a record.
    pub key: Vec<u8>,
    pub column_type: ColumnType,
    pub meta: Vec<u8>,
    pub unsigned: bool,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub struct TablePlan {
    pub schema: Arc<str>,
    pub table: Arc<str>,
    pub columns: Vec<ColumnPlan>,
    /// Indexes of primary-key columns, in key order (empty: no primary key).
    pub primary_key: Vec<usize>,
    /// `{"table": "<table>", "row": {`
    pub head: Vec<u8>,
    /// `"schema": "<schema>"`
    pub schema_field: Vec<u8>,
    /// Number of MySQL JSON columns (needed to read partial-update bitmaps).
    pub json_columns: usize,
    /// Primary-key column names, in key order; `None` without a primary key.
    pub key_names: Option<Arc<[String]>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "table {schema}.{table}: the binlog has {binlog} columns but the known schema has {known}; \
         refusing to decode rows under wrong names (was the table altered after this binlog \
         position? set binlog_row_metadata=FULL on the source to carry names in the binlog)"
    )]
    ColumnCount {
        schema: String,
        table: String,
        binlog: usize,
        known: usize,
    },
    #[error(
        "table {schema}.{table}, column {column}: the binlog has type {binlog} but the known \
         schema says `{known}`; the table was probably altered after this binlog position"
    )]
    TypeMismatch {
        schema: String,
        table: String,
        column: String,
        binlog: String,
        known: String,
    },
    #[error("table {schema}.{table}, column {column}: {reason}")]
    Column {
        schema: String,
        table: String,
        column: String,
        reason: String,
    },
}

/// Column metadata the binlog itself carries (MySQL 8 / MariaDB 10.5+ with
/// `binlog_row_metadata=MINIMAL|FULL`).
#[derive(Default)]
struct BinlogMeta {
    names: Option<Vec<String>>,
    unsigned: Option<Vec<bool>>,
    charsets: Option<Vec<Option<u16>>>,
    labels: Vec<Option<Vec<String>>>,
    primary_key: Option<Vec<usize>>,
}

/// Whether a column takes a slot in the table map's column-charset metadata. The server
/// counts GEOMETRY (a BLOB underneath) and VECTOR (MySQL 9) among the character columns,
/// unlike mysql_common's `is_character_type`; skipping them shifts every later text column
/// onto the wrong charset.
fn has_charset_slot(ty: &ColumnType) -> bool {
    ty.is_character_type()
        || matches!(
            ty,
            ColumnType::MYSQL_TYPE_GEOMETRY | ColumnType::MYSQL_TYPE_VECTOR
        )
}

fn collation_charset(id: u16) -> Option<Charset> {
    let name = Collation::from(CollationId::from(id)).charset().to_string();
    Charset::from_mysql_name(&name).ok()
}

fn read_binlog_meta(tme: &TableMapEvent<'_>, types: &[ColumnType]) -> std::io::Result<BinlogMeta> {
    let n = types.len();
    let mut meta = BinlogMeta {
        labels: vec![None; n],
        ..Default::default()
    };
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;

    let names: Vec<String> = extractor
        .iter_column_name()
        .map(|r| r.map(|c| c.name().into_owned()))
        .collect::<Result<_, _>>()?;
    if names.len() == n {
        meta.names = Some(names);
    }

    let signs: Vec<bool> = extractor.iter_signedness().collect();
    if !signs.is_empty() {
        let mut it = signs.into_iter();
        meta.unsigned = Some(
            types
                .iter()
                .map(|t| t.is_numeric_type() && it.next().unwrap_or(false))
                .collect(),
        );
    }

    let text_count = types.iter().filter(|t| has_charset_slot(t)).count();
    let enum_set_count = types.iter().filter(|t| t.is_enum_or_set_type()).count();
    let text_cs: Vec<u16> = extractor
        .iter_charset()
        .take(text_count)
        .collect::<Result<_, _>>()?;
    let enum_cs: Vec<u16> = extractor
        .iter_enum_and_set_charset()
        .take(enum_set_count)
        .collect::<Result<_, _>>()?;
    if text_cs.len() == text_count && (text_count > 0 || enum_cs.len() == enum_set_count) {
        let (mut t, mut e) = (text_cs.into_iter(), enum_cs.into_iter());
        meta.charsets = Some(
            types
                .iter()
                .map(|ty| {
                    if has_charset_slot(ty) {
                        t.next()
                    } else if ty.is_enum_or_set_type() {
                        e.next()
                    } else {
                        None
                    }
                })
                .collect(),
        );
    }

    let pk: Vec<usize> = extractor
        .iter_primary_key()
        .map(|r| r.map(|k| k as usize))
        .collect::<Result<_, _>>()?;
    if !pk.is_empty() {
        meta.primary_key = Some(pk);
    }

    for field in tme.iter_optional_meta() {
        match field? {
            OptionalMetadataField::EnumStrValue(v) => {
                let mut lists = v.iter_values();
                for (i, ty) in types.iter().enumerate() {
                    if *ty == ColumnType::MYSQL_TYPE_ENUM {
                        if let Some(list) = lists.next() {
                            let list = list?;
                            meta.labels[i] = Some(
                                list.values()
                                    .iter()
                                    .map(|l| l.value().into_owned())
                                    .collect(),
                            );
                        }
                    }
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                let mut lists = v.iter_values();
                for (i, ty) in types.iter().enumerate() {
                    if *ty == ColumnType::MYSQL_TYPE_SET {
                        if let Some(list) = lists.next() {
                            let list = list?;
                            meta.labels[i] = Some(
                                list.values()
                                    .iter()
                                    .map(|l| l.value().into_owned())
                                    .collect(),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(meta)
}

/// The `information_schema` data types a binlog column type can come from; used to catch a
/// schema that changed since the row was written.
fn compatible(ty: ColumnType, data_type: &str) -> bool {
    use ColumnType::*;
    let d = data_type;
    match ty {
        MYSQL_TYPE_TINY => d == "tinyint" || d == "bool" || d == "boolean",
        MYSQL_TYPE_SHORT => d == "smallint",
        MYSQL_TYPE_INT24 => d == "mediumint",
        MYSQL_TYPE_LONG => d == "int" || d == "integer",
        MYSQL_TYPE_LONGLONG => d == "bigint",
        MYSQL_TYPE_FLOAT => d == "float",
        MYSQL_TYPE_DOUBLE => d == "double" || d == "real",
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => d == "decimal" || d == "numeric",
        MYSQL_TYPE_YEAR => d == "year",
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => d == "date",
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => d == "datetime",
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => d == "timestamp",
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => d == "time",
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            matches!(d, "varchar" | "varbinary" | "inet6" | "inet4" | "uuid")
        }
        MYSQL_TYPE_STRING => matches!(d, "char" | "binary" | "inet6" | "inet4" | "uuid"),
        MYSQL_TYPE_ENUM => d == "enum",
        MYSQL_TYPE_SET => d == "set",
        MYSQL_TYPE_BIT => d == "bit",
        MYSQL_TYPE_JSON => d == "json",
        MYSQL_TYPE_GEOMETRY => matches!(
            d,
            "geometry"
                | "point"
                | "linestring"
                | "polygon"
                | "multipoint"
                | "multilinestring"
                | "multipolygon"
                | "geometrycollection"
                | "geomcollection"
        ),
        MYSQL_TYPE_BLOB | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB => {
            d.ends_with("blob") || d.ends_with("text") || d == "json"
        }
        MYSQL_TYPE_VECTOR => d == "vector",
        _ => true,
    }
}

/// Metadata bytes mysql_common's value parser reads for a type (it indexes them unchecked,
/// so a table map carrying fewer must be refused before any row is parsed).
fn required_meta(ty: ColumnType) -> usize {
    use ColumnType::*;
    match ty {
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET => 2,
        MYSQL_TYPE_BLOB
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR
        | MYSQL_TYPE_JSON
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_FLOAT
        | MYSQL_TYPE_DOUBLE => 1,
        _ => 0,
    }
}

/// Bytes of a CHAR/BINARY column, from its TABLE_MAP metadata.
fn string_length(meta: &[u8]) -> Option<usize> {
    let (b0, b1) = (*meta.first()? as usize, *meta.get(1)? as usize);
    if (b0 & 0x30) != 0x30 {
        Some(b1 | (((b0 & 0x30) ^ 0x30) << 4))
    } else {
        Some(b1)
    }
}

fn quoted_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 4);
    crate::json::write_str(&mut key, name);
    key.extend_from_slice(b": ");
    key
}

impl TablePlan {
    /// Builds the plan for `tme`. `info` is what `information_schema` says, when the reader can
    /// ask (live); without it (offline decoding, no FULL metadata) columns get positional names
    /// `@1`, `@2`, ... and text/binary is told apart by the binlog's charset metadata alone.
    pub fn build(
        tme: &TableMapEvent<'_>,
        info: Option<&TableInfo>,
    ) -> Result<TablePlan, PlanError> {
        let schema = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let n = tme.columns_count() as usize;
        let col_err = |column: &str, reason: String| PlanError::Column {
            schema: schema.clone(),
            table: table.clone(),
            column: column.to_string(),
            reason,
        };

        let mut types = Vec::with_capacity(n);
        for i in 0..n {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| col_err(&format!("#{}", i + 1), format!("bad column type: {e}")))?
                .ok_or_else(|| col_err(&format!("#{}", i + 1), "no column type".into()))?;
            types.push(ty);
        }
        let bmeta = read_binlog_meta(tme, &types)
            .map_err(|e| col_err("*", format!("unreadable optional metadata: {e}")))?;

        // Which information_schema column describes binlog column i.
        let info_cols: Vec<Option<&ColumnInfo>> = match (info, &bmeta.names) {
            (Some(info), Some(names)) => names
                .iter()
                .map(|name| info.columns.iter().find(|c| &c.name == name))
                .collect(),
            (Some(info), None) => {
                if info.columns.len() != n {
                    return Err(PlanError::ColumnCount {
                        schema,
                        table,
                        binlog: n,
                        known: info.columns.len(),
                    });
                }
                info.columns.iter().map(Some).collect()
            }
            (None, _) => vec![None; n],
        };

        let mut columns = Vec::with_capacity(n);
        for i in 0..n {
            let ty = types[i];
            let ci = info_cols[i];
            let name = match (&bmeta.names, ci) {
                (Some(names), _) => names[i].clone(),
                (None, Some(ci)) => ci.name.clone(),
                (None, None) => format!("@{}", i + 1),
            };
            if bmeta.names.is_none() {
                if let Some(ci) = ci {
                    if !compatible(ty, &ci.data_type) {
                        return Err(PlanError::TypeMismatch {
                            schema,
                            table,
                            column: name,
                            binlog: format!("{ty:?}"),
                            known: ci.data_type.clone(),
                        });
                    }
                }
            }
            let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            // STRING columns carry their real type in the first metadata byte.
            if meta.len()
                < required_meta(ty).max(
                    usize::from(
                        tme.get_raw_column_type(i).ok().flatten()
                            == Some(ColumnType::MYSQL_TYPE_STRING),
                    ) * 2,
                )
            {
                return Err(col_err(
                    &name,
                    format!(
                        "malformed table map: {} metadata bytes for a {ty:?} column",
                        meta.len()
                    ),
                ));
            }
            let unsigned = bmeta
                .unsigned
                .as_ref()
                .map(|u| u[i])
                .or(ci.map(|c| c.unsigned))
                .unwrap_or(false);
            let charset: Option<Charset> = match bmeta.charsets.as_ref().and_then(|c| c[i]) {
                Some(id) => Some(
                    ci.and_then(|c| c.charset.as_deref())
                        .and_then(|n| Charset::from_mysql_name(n).ok())
                        .or_else(|| collation_charset(id))
                        .ok_or_else(|| col_err(&name, format!("unsupported collation id {id}")))?,
                ),
                None => match ci.and_then(|c| c.charset.as_deref()) {
                    Some(cs) => Some(
                        Charset::from_mysql_name(cs).map_err(|e| col_err(&name, e.to_string()))?,
                    ),
                    None => None,
                },
            };
            let labels = bmeta.labels[i].clone().or_else(|| {
                ci.filter(|c| !c.labels.is_empty())
                    .map(|c| c.labels.clone())
            });
            let fsp = meta.first().copied().unwrap_or(0);

            use ColumnType::*;
            let kind = match ty {
                MYSQL_TYPE_TINY => Kind::Int { width: 1 },
                MYSQL_TYPE_SHORT => Kind::Int { width: 2 },
                MYSQL_TYPE_INT24 => Kind::Int { width: 3 },
                MYSQL_TYPE_LONG => Kind::Int { width: 4 },
                MYSQL_TYPE_LONGLONG => Kind::Int { width: 8 },
                MYSQL_TYPE_FLOAT => Kind::Float,
                MYSQL_TYPE_DOUBLE => Kind::Double,
                MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => Kind::Decimal,
                MYSQL_TYPE_YEAR => Kind::Year,
                MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
                MYSQL_TYPE_DATETIME => Kind::DateTime { fsp: 0 },
                MYSQL_TYPE_DATETIME2 => Kind::DateTime { fsp },
                MYSQL_TYPE_TIMESTAMP => Kind::Timestamp { fsp: 0 },
                MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp { fsp },
                MYSQL_TYPE_TIME => Kind::Time { fsp: 0 },
                MYSQL_TYPE_TIME2 => Kind::Time { fsp },
                MYSQL_TYPE_BIT => Kind::Bit,
                MYSQL_TYPE_JSON => Kind::JsonBinary,
                MYSQL_TYPE_GEOMETRY => Kind::Geometry,
                MYSQL_TYPE_VECTOR => Kind::Vector,
                MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => {
                    let labels = labels.ok_or_else(|| {
                        col_err(&name, "ENUM/SET labels unknown (no binlog metadata and no information_schema)".into())
                    })?;
                    if ty == MYSQL_TYPE_ENUM {
                        Kind::Enum(labels)
                    } else {
                        Kind::Set(labels)
                    }
                }
                MYSQL_TYPE_VARCHAR
                | MYSQL_TYPE_VAR_STRING
                | MYSQL_TYPE_STRING
                | MYSQL_TYPE_BLOB
                | MYSQL_TYPE_TINY_BLOB
                | MYSQL_TYPE_MEDIUM_BLOB
                | MYSQL_TYPE_LONG_BLOB => {
                    let is_json = ci
                        .map(|c| c.is_json || c.data_type == "json")
                        .unwrap_or(false);
                    match charset {
                        Some(cs) if is_json && !cs.is_binary() => Kind::JsonText(cs),
                        Some(cs) if !cs.is_binary() => Kind::Text(cs),
                        Some(_) => Kind::Binary {
                            pad_to: (ty == MYSQL_TYPE_STRING)
                                .then(|| string_length(&meta))
                                .flatten(),
                        },
                        // information_schema gives binary columns no charset; with no schema at
                        // all (offline, no metadata) bytes are kept as bytes, never guessed as text.
                        None => Kind::Binary {
                            pad_to: (ty == MYSQL_TYPE_STRING && ci.is_some())
                                .then(|| string_length(&meta))
                                .flatten(),
                        },
                    }
                }
                other => {
                    return Err(col_err(
                        &name,
                        format!("column type {other:?} is not supported"),
                    ));
                }
            };
            columns.push(ColumnPlan {
                key: quoted_key(&name),
                name,
                column_type: ty,
                meta,
                unsigned,
                kind,
            });
        }

        let primary_key = match (&bmeta.primary_key, info) {
            (Some(pk), _) => {
                if let Some(bad) = pk.iter().find(|&&i| i >= columns.len()) {
                    return Err(PlanError::Column {
                        schema,
                        table,
                        column: format!("#{}", bad + 1),
                        reason: format!(
                            "malformed table map: primary key names column {} of {}",
                            bad + 1,
                            columns.len()
                        ),
                    });
                }
                pk.clone()
            }
            (None, Some(info)) => info
                .primary_key
                .iter()
                .filter_map(|k| columns.iter().position(|c| &c.name == k))
                .collect(),
            (None, None) => Vec::new(),
        };

        let json_columns = types
            .iter()
            .filter(|t| **t == ColumnType::MYSQL_TYPE_JSON)
            .count();
        Ok(TablePlan::assemble(
            schema,
            table,
            columns,
            primary_key,
            json_columns,
        ))
    }
}

impl TablePlan {
    /// The plan for `columns` with its record head and key names precomputed; shared by the
    /// binlog path and the snapshot so both write records alike.
    pub fn assemble(
        schema: String,
        table: String,
        columns: Vec<ColumnPlan>,
        primary_key: Vec<usize>,
        json_columns: usize,
    ) -> TablePlan {
        let mut head = Vec::with_capacity(table.len() + 24);
        head.extend_from_slice(b"{\"table\": ");
        crate::json::write_str(&mut head, &table);
        head.extend_from_slice(b", \"row\": {");
        let mut schema_field = b"\"schema\": ".to_vec();
        crate::json::write_str(&mut schema_field, &schema);
        let key_names = (!primary_key.is_empty()).then(|| {
            primary_key
                .iter()
                .map(|&i| columns[i].name.clone())
                .collect::<Vec<_>>()
                .into()
        });
        TablePlan {
            key_names,
            schema: schema.into(),
            table: table.into(),
            columns,
            primary_key,
            head,
            schema_field,
            json_columns,
        }
    }
}

/// `"name": ` for a column, ready to copy into a record.
pub fn column_key(name: &str) -> Vec<u8> {
    quoted_key(name)
}
