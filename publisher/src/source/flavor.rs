//! What differs between server flavors and versions, decided from `@@version` alone so it
//! can be unit-tested without a server.

/// `(major, minor, patch)` of a MySQL server; `None` for MariaDB (its own numbering) or an
/// unparseable version.
pub fn mysql_version(version: &str) -> Option<(u32, u32, u32)> {
    if version.to_ascii_lowercase().contains("mariadb") {
        return None;
    }
    let mut nums = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse::<u32>().ok());
    Some((
        nums.next()??,
        nums.next()??,
        nums.next().flatten().unwrap_or(0),
    ))
}

/// MySQL 8.0.26 renamed the replica's session variables (`@master_*` -> `@source_*`). A newer
/// source reads the new name first and falls back to the old one, and user variables never
/// fail to be set, so on such servers both are set.
fn renamed_source_vars(version: &str) -> bool {
    mysql_version(version).is_some_and(|v| v >= (8, 0, 26))
}

/// Session statements run before the dump.
///
/// mysql_async's `get_binlog_stream` itself sends `SET @master_binlog_checksum='ALL'` last,
/// which makes the source checksum-aware under the old name. MySQL 8.0.26+ reads
/// `@source_binlog_checksum` first, so it is set to the server's own algorithm, as MySQL's
/// replica does. Either way the FORMAT_DESCRIPTION event announces CRC32 or NONE and
/// mysql_common strips the trailing checksum accordingly.
pub fn dump_setup(version: &str, is_mariadb: bool, heartbeat_nanos: u128) -> Vec<String> {
    let mut setup = Vec::new();
    if is_mariadb {
        // Without capability 4 MariaDB replaces its GTID events with BEGIN queries and dummies.
        setup.push("SET @mariadb_slave_capability=4".to_string());
    }
    let renamed = !is_mariadb && renamed_source_vars(version);
    if renamed {
        setup.push("SET @source_binlog_checksum=@@global.binlog_checksum".to_string());
    }
    if heartbeat_nanos > 0 {
        setup.push(format!("SET @master_heartbeat_period={heartbeat_nanos}"));
        if renamed {
            setup.push(format!("SET @source_heartbeat_period={heartbeat_nanos}"));
        }
    }
    setup
}

/// Statements that report the binlog end, the first one the server knows first: MySQL 8.2
/// added `SHOW BINARY LOG STATUS` and 8.4 removed `SHOW MASTER STATUS`; MariaDB 10.5.2+ has
/// `SHOW BINLOG STATUS`. The caller falls back along the list on a syntax error, so a
/// misparsed version costs one round trip, not a failure.
pub fn binlog_status_statements(version: &str, is_mariadb: bool) -> [&'static str; 2] {
    if is_mariadb {
        return ["SHOW BINLOG STATUS", "SHOW MASTER STATUS"];
    }
    match mysql_version(version) {
        Some(v) if v < (8, 2, 0) => ["SHOW MASTER STATUS", "SHOW BINARY LOG STATUS"],
        _ => ["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mysql_versions_only() {
        assert_eq!(mysql_version("8.0.36-28"), Some((8, 0, 36)));
        assert_eq!(mysql_version("8.4.3"), Some((8, 4, 3)));
        assert_eq!(mysql_version("5.7.44-log"), Some((5, 7, 44)));
        assert_eq!(mysql_version("8.0.mysql_aurora.3.05.2"), Some((8, 0, 0)));
        assert_eq!(mysql_version("10.11.6-MariaDB-0+deb12u1-log"), None);
        assert_eq!(mysql_version("garbage"), None);
    }

    #[test]
    fn checksum_and_heartbeat_variables_follow_the_version() {
        let mysql57 = dump_setup("5.7.44-log", false, 5);
        assert_eq!(mysql57, ["SET @master_heartbeat_period=5"]);
        let mysql8025 = dump_setup("8.0.25", false, 0);
        assert!(mysql8025.is_empty(), "{mysql8025:?}");
        let mysql8026 = dump_setup("8.0.26", false, 5);
        assert_eq!(
            mysql8026,
            [
                "SET @source_binlog_checksum=@@global.binlog_checksum",
                "SET @master_heartbeat_period=5",
                "SET @source_heartbeat_period=5",
            ]
        );
        assert_eq!(dump_setup("8.4.3", false, 0).len(), 1);
        let maria = dump_setup("10.11.6-MariaDB", true, 5);
        assert_eq!(
            maria,
            [
                "SET @mariadb_slave_capability=4",
                "SET @master_heartbeat_period=5"
            ]
        );
    }

    #[test]
    fn binlog_status_statement_follows_the_version() {
        assert_eq!(
            binlog_status_statements("8.0.36", false)[0],
            "SHOW MASTER STATUS"
        );
        assert_eq!(
            binlog_status_statements("8.1.0", false)[0],
            "SHOW MASTER STATUS"
        );
        assert_eq!(
            binlog_status_statements("8.2.0", false)[0],
            "SHOW BINARY LOG STATUS"
        );
        assert_eq!(
            binlog_status_statements("8.4.3", false),
            ["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"]
        );
        assert_eq!(
            binlog_status_statements("10.11.6-MariaDB", true)[0],
            "SHOW BINLOG STATUS"
        );
    }
}
