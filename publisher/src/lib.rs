//! binlogstream publisher: reads a MySQL/MariaDB ROW binlog as a replica and publishes every
//! row change as one JSON record (see `record-format.md`).

pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod filter;
pub mod json;
pub mod metrics;
pub mod mysql_gtid;
pub mod pipeline;
pub mod position;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod tail;
