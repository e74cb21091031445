//! Reading a callgrind profile back (the benchmarks' `--profile` runs).

use std::{path::Path, process::Command};

/// `callgrind_annotate`'s report of `out_file` and its program total (instructions; NaN when
/// the report has none).
pub fn annotate(out_file: &Path) -> (String, f64) {
    let annotate = Command::new("callgrind_annotate")
        .args(["--threshold=90", "--auto=no"])
        .arg(out_file)
        .output()
        .expect("callgrind_annotate (apt install valgrind)");
    let text = String::from_utf8_lossy(&annotate.stdout).into_owned();
    let total: f64 = text
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(|l| l.split_whitespace().next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN);
    (text, total)
}

/// The first `n` functions of a report by self cost, indented for printing.
pub fn top_functions(text: &str, n: usize) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(2)
        .take(n)
        .map(|l| format!("  {l}"))
        .collect()
}
