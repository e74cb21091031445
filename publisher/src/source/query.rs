//! Just enough of SQL to know what a QUERY event means for transactions and schemas.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Begin,
    Commit,
    Rollback,
    /// Changes table definitions: ALTER, CREATE, DROP, RENAME, TRUNCATE.
    Ddl,
    /// A row change written as a statement (a session used STATEMENT format): not capturable.
    StatementDml,
    Other,
}

/// Skips whitespace and comments; the body of an executable comment (`/*!50100 ... */`) counts
/// as SQL.
fn skip_noise(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        if let Some(rest) = t.strip_prefix("/*!") {
            s = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        } else if let Some(rest) = t.strip_prefix("/*") {
            s = rest.find("*/").map(|i| &rest[i + 2..]).unwrap_or("");
        } else if t.starts_with("--") || t.starts_with('#') {
            s = t.find('\n').map(|i| &t[i + 1..]).unwrap_or("");
        } else {
            return t;
        }
    }
}

pub fn classify(query: &str) -> QueryKind {
    let body = skip_noise(query);
    let word: String = body
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    match word.as_str() {
        "BEGIN" => QueryKind::Begin,
        "START" if body.to_ascii_uppercase().starts_with("START TRANSACTION") => QueryKind::Begin,
        "COMMIT" => QueryKind::Commit,
        "ROLLBACK" => {
            if body.to_ascii_uppercase().contains(" TO ") {
                QueryKind::Other
            } else {
                QueryKind::Rollback
            }
        }
        "XA" => {
            let u = body.to_ascii_uppercase();
            if u.starts_with("XA START") || u.starts_with("XA BEGIN") {
                QueryKind::Begin
            } else if u.starts_with("XA COMMIT") {
                QueryKind::Commit
            } else if u.starts_with("XA ROLLBACK") {
                QueryKind::Rollback
            } else {
                QueryKind::Other
            }
        }
        "ALTER" | "CREATE" | "DROP" | "RENAME" | "TRUNCATE" => QueryKind::Ddl,
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" => QueryKind::StatementDml,
        _ => QueryKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify("BEGIN"), QueryKind::Begin);
        assert_eq!(classify("COMMIT"), QueryKind::Commit);
        assert_eq!(classify("ROLLBACK"), QueryKind::Rollback);
        assert_eq!(classify("ROLLBACK TO SAVEPOINT a"), QueryKind::Other);
        assert_eq!(classify("SAVEPOINT a"), QueryKind::Other);
        assert_eq!(classify("/* c */ alter table t add x int"), QueryKind::Ddl);
        assert_eq!(
            classify("/*!40000 ALTER TABLE `t` DISABLE KEYS */"),
            QueryKind::Ddl
        );
        assert_eq!(classify("-- x\nRENAME TABLE a TO b"), QueryKind::Ddl);
        assert_eq!(classify("CREATE TABLE t (a int)"), QueryKind::Ddl);
        assert_eq!(
            classify("insert into t values (1)"),
            QueryKind::StatementDml
        );
        assert_eq!(classify("GRANT SELECT ON *.* TO x"), QueryKind::Other);
    }
}
