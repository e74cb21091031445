//! The fault matrix of issue 11: real servers, the publisher binary, a steady writer, faults,
//! and a reader that counts what a KCL consumer would get. Run by `src/bin/faultmatrix.rs`.

pub mod env;
pub mod process;
pub mod scenarios;
pub mod stream;
pub mod verify;
pub mod writer;
