//! Arbitrary bytes as a binlog file through the event parser and the row decoder: any input
//! must end in records or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use publisher::{decode::EncodeOptions, filter::TableFilter, source::offline::decode_reader};

/// Whether the code that panicked is mysql_common's: the innermost frame below the panic
/// machinery that is not the standard library's source (a `Vec::with_capacity` overflow
/// panics in `alloc`, but the caller that asked for the capacity is the one at fault).
/// Source paths, not symbol names, because inlined frames carry no crate path in their names.
fn raised_in_mysql_common() -> bool {
    let trace = backtrace::Backtrace::new();
    let mut files = trace
        .frames()
        .iter()
        .flat_map(|f| f.symbols())
        .map(|s| s.filename().map(|f| f.display().to_string()).unwrap_or_default());
    // Skip the hook and the backtrace crate up to the standard library's panic entry.
    if !files.any(|f| f.starts_with("/rustc/")) {
        return false;
    }
    for file in files.filter(|f| !f.is_empty()) {
        if !file.starts_with("/rustc/") {
            return file.contains("/mysql_common-");
        }
    }
    false
}

fuzz_target!(init: {
    // The publisher turns panics inside mysql_common's parsers into errors (they are upstream
    // bugs on malformed input); any other panic is still a crash for the fuzzer.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !raised_in_mysql_common() {
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
