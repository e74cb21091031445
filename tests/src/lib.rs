//! Test harnesses that run real servers on loopback: a private MariaDB per test, and the
//! original publisher's decoder (python-mysql-replication) for byte comparisons.

pub mod callgrind;
pub mod capture;
pub mod fault_proxy;
pub mod kinesis;
pub mod mariadb;
pub mod matrix;
pub mod node_agg;
pub mod python;
pub mod tcp_proxy;

/// Workspace root, for scripts and built binaries.
/// The recorded MySQL binlogs (read in place, never copied), or `None` after saying the test
/// is skipped and naming the folder, where it is absent.
pub fn mysql_fixtures() -> Option<std::path::PathBuf> {
    let dir = workspace_root().join("../shared/fixtures/mysql-binlogs");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: fixture folder {} is absent", dir.display());
        None
    }
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default()
}

/// Cache for heavy, version-keyed artifacts (datadir templates, venvs), outside the repo.
pub fn cache_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("BINLOGSTREAM_CACHE") {
        return dir.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    std::path::Path::new(&home).join(".cache/binlogstream")
}

/// Makes sure the test dependencies are installed (runs `tests/setup/install-deps.sh` once
/// per process).
pub fn ensure_deps() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = workspace_root().join("tests/setup/install-deps.sh");
        let status = std::process::Command::new("bash").arg(script).status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("tests/setup/install-deps.sh failed: {other:?}"),
        }
    });
}
