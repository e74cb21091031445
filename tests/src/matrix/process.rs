//! The publisher as a real child process: started with the flags a deployment uses, sent real
//! signals, stopped by its PID when dropped. Its stderr goes to a log file the scenarios read.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How one publisher run is configured.
#[derive(Debug, Clone)]
pub struct PubConfig {
    pub bin: PathBuf,
    /// `mysql://repl@127.0.0.1:PORT` (the TCP proxy's port when the scenario cuts the network).
    pub source: String,
    pub password: String,
    pub stream: String,
    pub endpoint: String,
    pub checkpoint: PathBuf,
    pub server_id: u32,
    pub heartbeat_secs: u64,
    pub aggregate: bool,
    pub include: Vec<String>,
    pub extra: Vec<String>,
    pub log_dir: PathBuf,
}

pub struct PublisherProc {
    child: Option<Child>,
    /// Set once the exit was collected: from then on the PID may belong to another process.
    reaped: bool,
    pub log: PathBuf,
    pub metrics_addr: String,
    pub started: Instant,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PublisherProc {
    pub fn spawn(cfg: &PubConfig, once: &[&str]) -> anyhow::Result<PublisherProc> {
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = cfg.log_dir.join(format!("publisher-{n}.log"));
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let mut c = Command::new(&cfg.bin);
        c.args(["run", "--source", &cfg.source])
            .args(["--server-id", &cfg.server_id.to_string()])
            .args(["--start", "earliest"])
            .args(["--sink", "kinesis", "--stream", &cfg.stream])
            .args(["--endpoint", &cfg.endpoint, "--region", "us-east-1"])
            .args(["--position", "--checkpoint-interval-ms", "200"])
            .arg("--checkpoint-file")
            .arg(&cfg.checkpoint)
            .args(["--metrics-addr", &metrics_addr])
            .args(["--heartbeat-secs", &cfg.heartbeat_secs.to_string()]);
        if cfg.aggregate {
            c.arg("--aggregate");
        }
        if !cfg.include.is_empty() {
            c.args(["--include", &cfg.include.join(",")]);
        }
        c.args(&cfg.extra)
            .args(once)
            .env("BINLOGSTREAM_PASSWORD", &cfg.password)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let child = c.spawn()?;
        Ok(PublisherProc {
            child: Some(child),
            reaped: false,
            log,
            metrics_addr,
            started: Instant::now(),
        })
    }

    /// The PID while it is still this process's (not yet reaped: a zombie keeps its PID).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().filter(|_| !self.reaped).map(Child::id)
    }

    /// Sends `sig` ("KILL", "TERM") to this process only, by PID.
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), pid.to_string()])
                .status();
        }
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.reaped |= status.is_some();
        status
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Resident set size in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    pub fn threads(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("Threads:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for notes when something fails.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// GET /metrics (None when the endpoint does not answer within a second).
    pub async fn metrics(&self) -> Option<String> {
        http_get(&self.metrics_addr, "/metrics").await
    }
}

pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(1), fut)
        .await
        .ok()
        .flatten()
}

/// A metric's value from Prometheus text (the first sample whose name matches exactly).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next().is_some_and(|n| n == name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl Drop for PublisherProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The stored checkpoint: (file, pos, rows_done), or None before the first one.
pub fn read_checkpoint(path: &Path) -> Option<(String, u64, u64)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some((
        v["file"].as_str()?.to_string(),
        v["pos"].as_u64()?,
        v["rowsDone"]
            .as_u64()
            .or_else(|| v["rows_done"].as_u64())
            .unwrap_or(0),
    ))
}

/// The checkpoint covers everything up to `(file, pos)` (binlog names sort by number).
pub fn checkpoint_reached(path: &Path, end: &(String, u64)) -> bool {
    read_checkpoint(path)
        .is_some_and(|(f, p, rows)| rows == 0 && (f.as_str(), p) >= (end.0.as_str(), end.1))
}
