//! The replication side: connecting, preflight checks, schema lookups and the binlog reader.

pub mod connect;
pub mod error;
pub mod flavor;
pub mod offline;
pub mod preflight;
pub mod query;
pub mod reader;
pub mod resume;
pub mod schema;
pub mod tls;

pub use connect::SourceAddr;
pub use error::SourceError;
pub use reader::{Item, Reader, SourceConfig};
