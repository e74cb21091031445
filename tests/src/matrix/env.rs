//! One scenario's servers: a private MariaDB, kinesalite behind the Kinesis fault proxy, and
//! (when asked) the TCP proxy in front of MariaDB, plus a temp dir for the checkpoint and the
//! publisher's logs. Everything is stopped by PID and removed when the Env is dropped.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aws_sdk_kinesis::Client;
use mysql_async::prelude::Queryable;

use super::{
    process::{checkpoint_reached, PubConfig, PublisherProc},
    stream::{read_stream, ReadBack},
    writer::SCHEMA,
};
use crate::{
    fault_proxy::FaultProxy,
    kinesis::Kinesalite,
    mariadb::{MariaDb, Metadata},
    tcp_proxy::TcpProxy,
};

/// Sizes and durations for every scenario, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bin: PathBuf,
    /// A trial must catch the publisher inside the large transaction (full size).
    pub require_inside_big: bool,
    pub seed: u64,
    pub kill_trials: u64,
    pub term_trials: u64,
    /// Writer steps (transactions) per scenario.
    pub steps: u64,
    /// Writer rate in changes per second during scenarios.
    pub rate: f64,
    pub big_rows: u64,
    /// MariaDB unreachable / black-holed, Kinesis throttled / down.
    pub outage: Duration,
    /// Each of the other Kinesis faults.
    pub fault: Duration,
    pub drain_timeout_secs: u64,
    pub soak: Duration,
    pub soak_rate: f64,
    pub soak_fault_every: Duration,
    pub heartbeat_secs: u64,
    pub shards: i32,
    /// Longest wait for the publisher to catch up at the end of a scenario.
    pub catch_up: Duration,
}

pub struct EnvOpts {
    pub shards: i32,
    pub metadata: Metadata,
    pub mysqld_args: Vec<String>,
    /// Put the TCP proxy between the publisher and MariaDB.
    pub tcp_proxy: bool,
    pub aggregate: bool,
}

impl Default for EnvOpts {
    fn default() -> Self {
        EnvOpts {
            shards: 4,
            metadata: Metadata::Full,
            mysqld_args: Vec::new(),
            tcp_proxy: false,
            aggregate: false,
        }
    }
}

pub struct Env {
    pub db: MariaDb,
    pub kin: Kinesalite,
    pub faults: FaultProxy,
    pub proxy: Option<TcpProxy>,
    pub client: Client,
    pub cfg: PubConfig,
    pub dir: tempfile::TempDir,
}

pub const STREAM: &str = "matrix";

impl Env {
    pub async fn start(s: &Settings, opts: EnvOpts) -> anyhow::Result<Env> {
        let args: Vec<&str> = opts.mysqld_args.iter().map(String::as_str).collect();
        let (db, kin) = tokio::join!(
            MariaDb::start_with(opts.metadata, &args),
            Kinesalite::start()
        );
        kin.create_stream(STREAM, opts.shards).await;
        let faults = FaultProxy::start(kin.port, s.seed).await;
        let proxy = if opts.tcp_proxy {
            Some(TcpProxy::start(db.port).await)
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("bls-matrix-").tempdir()?;
        let source = match &proxy {
            Some(p) => format!("mysql://repl@127.0.0.1:{}", p.port),
            None => db.repl_url(),
        };
        let cfg = PubConfig {
            bin: s.bin.clone(),
            source,
            password: db.repl_password.clone(),
            stream: STREAM.into(),
            endpoint: faults.endpoint(),
            checkpoint: dir.path().join("checkpoint.json"),
            server_id: 5151,
            heartbeat_secs: s.heartbeat_secs,
            aggregate: opts.aggregate,
            include: Vec::new(),
            extra: Vec::new(),
            log_dir: dir.path().to_path_buf(),
        };
        let client = kin.client().await;
        Ok(Env {
            db,
            kin,
            faults,
            proxy,
            client,
            cfg,
            dir,
        })
    }

    pub fn root_url(&self) -> String {
        self.db.root_url()
    }

    pub fn spawn(&self) -> anyhow::Result<PublisherProc> {
        PublisherProc::spawn(&self.cfg, &[])
    }

    pub async fn read(&self) -> anyhow::Result<ReadBack> {
        read_stream(&self.client, STREAM).await
    }
}

/// Commits a marker row (a table the verifier ignores) so the binlog ends in a row
/// transaction, and returns the end of the binlog after it.
pub async fn mark_end(root_url: &str) -> anyhow::Result<(String, u64)> {
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(root_url)?).await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {SCHEMA}.marker (n INT AUTO_INCREMENT PRIMARY KEY); \
         INSERT INTO {SCHEMA}.marker VALUES ()"
    ))
    .await?;
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    conn.disconnect().await?;
    let row = row.ok_or_else(|| anyhow::anyhow!("SHOW MASTER STATUS is empty"))?;
    Ok((
        row.get(0).unwrap_or_default(),
        row.get(1).unwrap_or_default(),
    ))
}

/// Waits until the publisher's checkpoint covers the end of the binlog of `root_url`.
/// Err says why not: the publisher exited (with its status) or the time ran out.
pub async fn wait_caught_up(
    root_url: &str,
    p: &mut PublisherProc,
    cfg: &PubConfig,
    limit: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let end = mark_end(root_url)
        .await
        .map_err(|e| format!("marker: {e}"))?;
    loop {
        if checkpoint_reached(&cfg.checkpoint, &end) {
            return Ok(started.elapsed());
        }
        if let Some(status) = p.try_exit() {
            return Err(format!("publisher exited ({status}) before catching up"));
        }
        if started.elapsed() >= limit {
            return Err(format!("not caught up within {}s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM and wait (bounded); the exit status, or None if it had to be SIGKILLed.
pub async fn stop(p: &mut PublisherProc, limit: Duration) -> Option<std::process::ExitStatus> {
    if let Some(s) = p.try_exit() {
        return Some(s);
    }
    p.signal("TERM");
    match p.wait_for(limit).await {
        Some(s) => Some(s),
        None => {
            p.kill();
            None
        }
    }
}
