//! The binlogstream operator: one publisher Deployment per `BinlogStream`, conditions from
//! what the publisher reports.

pub mod cache;
pub mod controller;
/// The resource types live in the shared API crate; re-exported so `operator::crd` stays.
pub use binlogstream_api::crd;
pub mod metrics;
pub mod reconcile;
