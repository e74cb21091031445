use crate::decode::{DecodeError, PlanError};

/// Everything that can stop the reader. [`SourceError::is_transient`] separates what a
/// reconnect may cure from what needs a person.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {addr} is unreachable: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("source {addr} refused the credentials of user `{user}`: {message} (check --source user and the password file/env{hint})")]
    AccessDenied {
        addr: String,
        user: String,
        message: String,
        /// What else can look the same: MariaDB answers a plain login under
        /// require_secure_transport, and a login without the client certificate a
        /// `REQUIRE X509` account needs, with the same "Access denied".
        hint: &'static str,
    },
    /// The TLS handshake failed for a reason a reconnect will not cure (trust, name, client
    /// certificate).
    #[error("TLS to source {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("user `{user}` lacks the {privilege} privilege: {message}. Fix: GRANT {grant} ON *.* TO '{user}'@'%';")]
    MissingPrivilege {
        user: String,
        privilege: &'static str,
        grant: &'static str,
        message: String,
    },
    #[error("source setting {setting} is `{value}`; {fix}")]
    Misconfigured {
        setting: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("binlog file `{file}` is no longer on the source (oldest kept: {oldest}). The changes between the checkpoint and {oldest} cannot be read any more; nothing was skipped. To go on anyway, remove the checkpoint and start from `earliest` or `latest` (or restore the binlog files).")]
    BinlogGone { file: String, oldest: String },
    #[error("cannot start at {start}: {reason}")]
    BadStart { start: String, reason: String },
    #[error(
        "the checkpoint {checkpoint} was read from {from}, but the source is now {to}: {reason}"
    )]
    ServerChanged {
        checkpoint: String,
        from: String,
        to: String,
        reason: String,
    },
    #[error("another replica already uses server id {server_id} on this source: pick a unique --server-id ({message})")]
    ServerIdInUse { server_id: u32, message: String },
    #[error("the source ended the binlog stream with an error: {0}")]
    Replication(String),
    #[error("connection to the source failed: {0}")]
    Connection(#[source] mysql_async::Error),
    #[error("cannot read the schema of {schema}.{table} from information_schema: {message}")]
    Schema {
        schema: String,
        table: String,
        message: String,
    },
    #[error(transparent)]
    Plan(#[from] Box<PlanError>),
    #[error(transparent)]
    Decode(#[from] Box<DecodeError>),
    #[error("rows event for unknown table id {table_id} at {file}:{pos}: the stream did not start at a transaction boundary")]
    UnknownTable {
        table_id: u64,
        file: String,
        pos: u64,
    },
    #[error("cannot resume in the middle of transaction {expected} ({file}:{pos}): the checkpoint counts {rows_done} of its rows as delivered, but the source sent {received} first, so skipping those rows would drop rows of another transaction; nothing was skipped. The checkpoint's GTID set has gaps, or the source is another server that orders transactions differently. To go on: if the original server still has {file}, remove the GTID set from the checkpoint (`mysqlGtidSet`; in a BinlogStream status `gtidSet`) to resume by file and position; or set the delivered-row count to 0 (`rowsDone`, status `rowsInTransaction`) and remove the transaction GTID (`txGtid`, status `transactionGtid`) to deliver all of {expected} again (its first {rows_done} rows twice).")]
    WrongResumeTransaction {
        expected: String,
        /// "transaction GTID" or "a transaction without a GTID".
        received: String,
        rows_done: u64,
        file: String,
        pos: u64,
    },
    #[error("{message}; resuming from the last transaction boundary")]
    DumpEnded { message: String },
    /// The watchdog: a live dump gets a heartbeat every heartbeat period when idle, so a
    /// connection that delivers nothing for three periods is dead (a black-holed path).
    #[error("no event and no heartbeat from the source for {seconds} s (three heartbeat periods); taking the connection as lost")]
    Silent { seconds: u64 },
    /// The source logged that its binlog lost events; a replica stops here too.
    #[error("INCIDENT event at {file}:{pos}: the source recorded that its binlog is missing changes (incident {number}: {message}); a replica stops here. The changes around it are not in the binlog, so the stream cannot go on without a person: re-sync consumers from a fresh snapshot, then start after this event (--start {file}:{next})")]
    Incident {
        file: String,
        pos: u64,
        /// Where the event ends: the first position after it.
        next: u64,
        number: u16,
        message: String,
    },
    /// Rows of prepared XA transactions are held in memory until their XA COMMIT.
    #[error("XA transaction {xid} at {file}:{pos} is prepared but not committed, and the rows held for prepared XA transactions exceed {limit} bytes; commit or roll back prepared XA transactions on the source (XA RECOVER lists them), then restart")]
    XaTooLarge {
        xid: String,
        file: String,
        pos: u64,
        limit: usize,
    },
    #[error("{what} at {file}:{pos} cannot be decoded: {reason}")]
    Unsupported {
        what: String,
        file: String,
        pos: u64,
        reason: String,
    },
}

impl SourceError {
    /// True when reconnecting and resuming from the last transaction boundary may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Unreachable { .. }
            | SourceError::DumpEnded { .. }
            | SourceError::Silent { .. } => true,
            SourceError::Connection(e) => connection_lost(e),
            _ => false,
        }
    }
}

/// The connection failed rather than the statement: a new connection may succeed.
pub fn connection_lost(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // server shutdown, lost connection, too many connections, killed query
        mysql_async::Error::Server(s) => matches!(s.code, 1053 | 2006 | 2013 | 1040 | 1317 | 1927),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_transient_and_a_refused_statement_is_not() {
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(connection_lost(&io));
        assert!(SourceError::Connection(io).is_transient());
        let refused = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1142,
            message: "SELECT command denied".into(),
            state: "42000".into(),
        });
        assert!(!connection_lost(&refused));
        assert!(!SourceError::Connection(refused).is_transient());
    }
}
