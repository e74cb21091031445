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

/// MySQL 8.0.21+ logs `CREATE TABLE ... SELECT` as `CREATE TABLE ... START TRANSACTION`
/// followed by the rows and an XID: that statement opens the transaction, it does not end it.
pub fn opens_transaction(query: &str) -> bool {
    let body = skip_noise(query)
        .trim_end()
        .trim_end_matches(';')
        .trim_end();
    classify(body) == QueryKind::Ddl
        && body.len() > 17
        && body.as_bytes()[body.len() - 17..].eq_ignore_ascii_case(b"START TRANSACTION")
}

/// The XA statements a binlog carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XaStatement {
    Start(String),
    Commit { xid: String, one_phase: bool },
    Rollback(String),
}

/// `XA START|COMMIT|ROLLBACK xid`, with the XID in the canonical form of [`xid_text`] (the
/// server logs XIDs as `X'hex',X'hex',format`).
pub fn xa_statement(query: &str) -> Option<XaStatement> {
    let body = skip_noise(query).trim().trim_end_matches(';');
    let upper = body.to_ascii_uppercase();
    let rest = upper.strip_prefix("XA")?.trim_start();
    let (verb, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim();
    let (xid, one_phase) = match rest.strip_suffix("ONE PHASE") {
        Some(x) => (x, true),
        None => (rest, false),
    };
    let xid: String = xid.chars().filter(|c| !c.is_whitespace()).collect();
    match verb {
        "START" | "BEGIN" => Some(XaStatement::Start(xid)),
        "COMMIT" => Some(XaStatement::Commit { xid, one_phase }),
        "ROLLBACK" => Some(XaStatement::Rollback(xid)),
        _ => None,
    }
}

/// An XID as the server writes it in queries: `X'<gtrid hex>',X'<bqual hex>',<format id>`,
/// hex in capitals.
pub fn xid_text(format_id: u32, gtrid: &[u8], bqual: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    format!("X'{}',X'{}',{format_id}", hex(gtrid), hex(bqual))
}

/// An XA_PREPARE_LOG_EVENT body: one-phase flag, then the XID (format id, gtrid and bqual
/// lengths as 4-byte integers, at most 64 bytes each, then their bytes).
pub fn xa_prepare_xid(data: &[u8]) -> Option<(bool, String)> {
    let one_phase = *data.first()? != 0;
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let format_id = u32_at(1)?;
    let (g, b) = (u32_at(5)? as usize, u32_at(9)? as usize);
    if g > 64 || b > 64 {
        return None;
    }
    let xid = data.get(13..13 + g + b)?;
    Some((one_phase, xid_text(format_id, &xid[..g], &xid[g..])))
}

/// The XID a MariaDB GTID event carries for XA (flags FL_PREPARED_XA or FL_COMPLETED_XA):
/// after the sequence, domain and flags (13 bytes) and the commit id when FL_GROUP_COMMIT_ID
/// is set, a 4-byte format id, 1-byte gtrid and bqual lengths, then their bytes.
pub fn mariadb_gtid_xid(data: &[u8]) -> Option<String> {
    let flags2 = *data.get(12)?;
    let mut at = 13;
    if flags2 & 2 != 0 {
        at += 8;
    }
    let format_id = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
    let (g, b) = (*data.get(at + 4)? as usize, *data.get(at + 5)? as usize);
    if g > 64 || b > 64 {
        return None;
    }
    let xid = data.get(at + 6..at + 6 + g + b)?;
    Some(xid_text(format_id, &xid[..g], &xid[g..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xa_statements_and_xids_agree_on_one_form() {
        assert_eq!(
            xa_statement("XA COMMIT X'62',X'71',7"),
            Some(XaStatement::Commit {
                xid: "X'62',X'71',7".into(),
                one_phase: false
            })
        );
        assert_eq!(
            xa_statement("xa rollback X'6a',X'',1"),
            Some(XaStatement::Rollback("X'6A',X'',1".into()))
        );
        assert_eq!(
            xa_statement("XA COMMIT X'61',X'',1 ONE PHASE"),
            Some(XaStatement::Commit {
                xid: "X'61',X'',1".into(),
                one_phase: true
            })
        );
        assert_eq!(
            xa_statement("XA START X'61',X'',1"),
            Some(XaStatement::Start("X'61',X'',1".into()))
        );
        assert_eq!(xa_statement("XA END X'61',X'',1"), None);
        assert_eq!(xa_statement("COMMIT"), None);
        // As MariaDB 10.11 wrote them (mariadb-binlog --hexdump of a test server).
        let prepare = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'a'];
        assert_eq!(
            xa_prepare_xid(&prepare),
            Some((false, "X'61',X'',1".into()))
        );
        let mut gtid = vec![3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x4c];
        gtid.extend([1, 0, 0, 0, 1, 0, b'a', 1, 0xff]);
        assert_eq!(mariadb_gtid_xid(&gtid), Some("X'61',X'',1".into()));
        // Lengths past the body or past 64 are refused, not read.
        let long = [0, 1, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, b'a'];
        assert_eq!(xa_prepare_xid(&long), None);
        assert_eq!(xa_prepare_xid(&prepare[..10]), None);
    }

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
