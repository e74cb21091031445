//! Arbitrary bytes as a binlog file through the event parser and the row decoder: any input
//! must end in records or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use publisher::{decode::EncodeOptions, filter::TableFilter, source::offline::decode_reader};

fuzz_target!(init: {
    // The publisher turns panics inside mysql_common's parsers into errors (they are upstream
    // bugs on malformed input); any other panic is still a crash for the fuzzer.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let upstream = info.location().is_some_and(|l| l.file().contains("mysql_common"));
        if !upstream {
            default(info);
            std::process::abort();
        }
    }));
}, |data: &[u8]| {
    let _ = futures::executor::block_on(decode_reader(
        "fuzz-input",
        "fuzz.000001",
        data,
        TableFilter::default(),
        EncodeOptions { position: true },
        |_| {},
    ));
});
