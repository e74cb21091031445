//! The binlogstream operator: one publisher Deployment per `BinlogStream`, conditions from
//! what the publisher reports.

pub mod cache;
pub mod controller;
pub mod crd;
pub mod metrics;
pub mod reconcile;
