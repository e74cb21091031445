//! Arbitrary bytes as a binlog file through the event parser and the row decoder: any input
//! must end in records or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use publisher::{decode::EncodeOptions, filter::TableFilter, source::offline::decode_reader};

fuzz_target!(|data: &[u8]| {
    let _ = futures::executor::block_on(decode_reader(
        "fuzz-input",
        "fuzz.000001",
        data,
        TableFilter::default(),
        EncodeOptions { position: true },
        |_| {},
    ));
});
