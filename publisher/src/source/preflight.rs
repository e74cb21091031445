//! Checks run before the first dump so that a misconfigured source fails with a message that
//! names the setting and the fix, instead of a protocol error later.

use mysql_async::{prelude::Queryable, Conn, Row};
use tracing::warn;

use super::error::SourceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogFile {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub is_mariadb: bool,
    pub server_id: u32,
    /// `@@server_uuid` (MySQL only; MariaDB has none).
    pub server_uuid: Option<String>,
    pub binlogs: Vec<BinlogFile>,
    /// Problems that do not stop the publisher but cost consumers something.
    pub warnings: Vec<String>,
}

fn privilege_error(user: &str, e: &mysql_async::Error, is_mariadb: bool) -> Option<SourceError> {
    match e {
        mysql_async::Error::Server(s) if s.code == 1227 || s.code == 1142 => {
            Some(SourceError::MissingPrivilege {
                user: user.to_string(),
                privilege: if is_mariadb {
                    "BINLOG MONITOR (REPLICATION CLIENT)"
                } else {
                    "REPLICATION CLIENT"
                },
                grant: if is_mariadb {
                    "BINLOG MONITOR"
                } else {
                    "REPLICATION CLIENT"
                },
                message: s.message.clone(),
            })
        }
        _ => None,
    }
}

/// Lists the binlog files the server keeps, oldest first.
pub async fn binlog_files(
    conn: &mut Conn,
    user: &str,
    is_mariadb: bool,
) -> Result<Vec<BinlogFile>, SourceError> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| privilege_error(user, &e, is_mariadb).unwrap_or(SourceError::Connection(e)))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let name: Option<String> = r.get(0);
            let size: Option<u64> = r.get(1);
            name.map(|name| BinlogFile {
                name,
                size: size.unwrap_or(0),
            })
        })
        .collect())
}

/// The current end of the binlog, and on MySQL the GTID set executed up to it (empty when
/// gtid_mode is OFF). The statement is chosen by [`super::flavor::binlog_status_statements`].
pub async fn binlog_end(
    conn: &mut Conn,
    user: &str,
    version: &str,
    is_mariadb: bool,
) -> Result<(String, u64, Option<String>), SourceError> {
    let statements = super::flavor::binlog_status_statements(version, is_mariadb);
    let mut last = None;
    for stmt in statements {
        match conn.query::<Row, _>(stmt).await {
            Ok(rows) => {
                let row = rows.into_iter().next().ok_or(SourceError::Misconfigured {
                    setting: "log_bin",
                    value: "OFF".into(),
                    fix: "the server reports no binary log; start it with --log-bin",
                })?;
                let file: Option<String> = row.get(0);
                let pos: Option<u64> = row.get(1);
                // MySQL's fifth column is Executed_Gtid_Set; MariaDB has no such column.
                let executed: Option<String> = if is_mariadb {
                    None
                } else {
                    row.get::<Option<String>, _>(4).flatten()
                };
                if let (Some(file), Some(pos)) = (file, pos) {
                    return Ok((file, pos, executed));
                }
            }
            Err(mysql_async::Error::Server(s)) if s.code == 1064 => last = Some(s.message),
            Err(e) => {
                return Err(
                    privilege_error(user, &e, is_mariadb).unwrap_or(SourceError::Connection(e))
                )
            }
        }
    }
    Err(SourceError::Replication(format!(
        "cannot read the binlog position: {}",
        last.unwrap_or_default()
    )))
}

/// MySQL's gtid_mode is ON (auto-positioning possible). MariaDB has no such variable (its
/// GTIDs are always on), hence the error is read as "no".
pub async fn gtid_mode_on(conn: &mut Conn) -> Result<bool, SourceError> {
    let mode: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_mode")
        .await
        .map_err(SourceError::Connection)?;
    Ok(mode.is_some_and(|m| m.eq_ignore_ascii_case("ON")))
}

pub async fn preflight(
    conn: &mut Conn,
    user: &str,
    own_server_id: u32,
) -> Result<ServerInfo, SourceError> {
    let row: Option<Row> = conn
        .query_first(
            "SELECT @@version, @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id",
        )
        .await
        .map_err(SourceError::Connection)?;
    let row =
        row.ok_or_else(|| SourceError::Replication("empty answer to SELECT @@version".into()))?;
    let version: String = row.get(0).unwrap_or_default();
    let log_bin: String = row
        .get::<Option<String>, _>(1)
        .flatten()
        .unwrap_or_default();
    let format: String = row
        .get::<Option<String>, _>(2)
        .flatten()
        .unwrap_or_default();
    let image: String = row
        .get::<Option<String>, _>(3)
        .flatten()
        .unwrap_or_default();
    let server_id: u32 = row.get::<Option<u32>, _>(4).flatten().unwrap_or(0);
    let is_mariadb = version.to_ascii_lowercase().contains("mariadb");

    if !matches!(log_bin.as_str(), "1" | "ON") {
        return Err(SourceError::Misconfigured {
            setting: "log_bin",
            value: log_bin,
            fix: "the binary log is disabled; start the server with --log-bin (and --binlog-format=ROW)",
        });
    }
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(SourceError::Misconfigured {
            setting: "binlog_format",
            value: format,
            fix: "row changes are only in ROW-format binlogs; set binlog_format=ROW (SET GLOBAL binlog_format='ROW' and in the server config)",
        });
    }
    let mut warnings = Vec::new();
    if !image.eq_ignore_ascii_case("FULL") {
        let w = format!(
            "binlog_row_image is `{image}`, not FULL: records will carry only the columns the binlog has \
             (for updates, `before_values` holds just the key columns and `after_values` just the changed ones), \
             and a MySQL partial JSON update (binlog_row_value_options=PARTIAL_JSON) stops the stream; \
             set binlog_row_image=FULL for whole rows"
        );
        warn!(setting = "binlog_row_image", value = %image, "{w}");
        warnings.push(w);
    }
    if !is_mariadb {
        // MySQL 8.0+ only; older servers lack the variable and cannot log partial updates.
        let options: Option<Option<String>> = conn
            .query_first("SELECT @@GLOBAL.binlog_row_value_options")
            .await
            .ok()
            .flatten();
        if let Some(w) = partial_json_warning(&options.flatten().unwrap_or_default(), &image) {
            warn!(
                setting = "binlog_row_value_options",
                binlog_row_image = %image,
                "{w}"
            );
            warnings.push(w);
        }
    }
    if server_id == own_server_id {
        return Err(SourceError::Misconfigured {
            setting: "server_id",
            value: server_id.to_string(),
            fix: "the publisher's --server-id equals the source's own server_id; pick another",
        });
    }
    let binlogs = binlog_files(conn, user, is_mariadb).await?;
    check_replication_grant(conn, user).await?;
    let server_uuid = if is_mariadb {
        None
    } else {
        conn.query_first::<Option<String>, _>("SELECT @@server_uuid")
            .await
            .map_err(SourceError::Connection)?
            .flatten()
            .filter(|u| !u.is_empty())
    };
    Ok(ServerInfo {
        version,
        is_mariadb,
        server_id,
        server_uuid,
        binlogs,
        warnings,
    })
}

/// The warning for a MySQL source that logs partial JSON updates: with
/// `binlog_row_value_options=PARTIAL_JSON` and a `binlog_row_image` other than FULL, an
/// UPDATE of a JSON column may be logged as a diff against a document the binlog does not
/// hold, and the stream stops at the first such update.
pub fn partial_json_warning(row_value_options: &str, row_image: &str) -> Option<String> {
    let partial = row_value_options
        .split(',')
        .any(|o| o.trim().eq_ignore_ascii_case("PARTIAL_JSON"));
    (partial && !row_image.eq_ignore_ascii_case("FULL")).then(|| {
        format!(
            "binlog_row_value_options=PARTIAL_JSON with binlog_row_image={row_image}: JSON updates \
             may be logged as partial diffs the publisher cannot always rebuild, and the stream \
             stops at the first one it cannot. Fix: SET GLOBAL binlog_row_value_options='' (or \
             binlog_row_image=FULL), also in the server config"
        )
    })
}

/// REPLICATION SLAVE cannot be probed without starting a dump, so read the grants. Grants that
/// come through roles are not expanded here; when a role is active the dump's own error is
/// relied on instead.
async fn check_replication_grant(conn: &mut Conn, user: &str) -> Result<(), SourceError> {
    let grants: Vec<String> = match conn.query("SHOW GRANTS").await {
        Ok(g) => g,
        Err(_) => return Ok(()),
    };
    let upper: Vec<String> = grants.iter().map(|g| g.to_ascii_uppercase()).collect();
    let global = |g: &&String| g.contains(" ON *.* ");
    let has = upper.iter().filter(global).any(|g| {
        g.contains("ALL PRIVILEGES")
            || g.contains("REPLICATION SLAVE")
            || g.contains("REPLICATION REPLICA")
    });
    let via_role = upper
        .iter()
        .any(|g| g.starts_with("GRANT `") || g.starts_with("GRANT '") && !g.contains(" ON "));
    if has || via_role {
        return Ok(());
    }
    Err(SourceError::MissingPrivilege {
        user: user.to_string(),
        privilege: "REPLICATION SLAVE",
        grant: "REPLICATION SLAVE",
        message: format!("SHOW GRANTS lists: {}", grants.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::partial_json_warning;

    #[test]
    fn partial_json_with_a_partial_row_image_is_warned_about() {
        let w = partial_json_warning("PARTIAL_JSON", "MINIMAL").expect("warned");
        assert!(
            w.contains("binlog_row_value_options=PARTIAL_JSON")
                && w.contains("binlog_row_image=MINIMAL")
                && w.contains("SET GLOBAL binlog_row_value_options=''"),
            "{w}"
        );
        assert!(partial_json_warning("partial_json", "noblob").is_some());
        assert_eq!(partial_json_warning("PARTIAL_JSON", "FULL"), None);
        assert_eq!(partial_json_warning("", "MINIMAL"), None);
    }
}
