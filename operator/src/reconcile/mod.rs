//! One reconcile per BinlogStream: validate → build → apply → status. `validate`, `build` and
//! `conditions` are pure; only `controller` talks to the API server.

pub mod build;
pub mod conditions;
pub mod requests;
pub mod retain;
pub mod tenancy;
pub mod validate;
