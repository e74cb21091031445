//! Run configuration from command-line flags, `BINLOGSTREAM_*` environment variables and an
//! optional TOML file, in that order of precedence. The password is read from a file or the
//! environment, never required on the command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{
    decode::EncodeOptions,
    filter::{Pattern, TableFilter},
    pipeline::PipelineOptions,
    position::StartFrom,
    sink::kinesis::{
        key::{Oversize, PartitionKey, MAX_RECORD_BYTES},
        KinesisConfig,
    },
    snapshot::{Method, SnapshotOptions, TableName},
    source::{
        tls::{TlsConfigError, TlsMode, TlsOptions},
        SourceAddr, SourceConfig,
    },
};

/// Default checkpoint interval in a BinlogStream status: with the status report on the same
/// 10 s cadence, a publisher makes at most 6 status writes a minute (issue 12's budget).
pub const KUBERNETES_CHECKPOINT_INTERVAL_MS: u64 = 10_000;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "BINLOGSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Source as mysql://USER@HOST:PORT.
    #[arg(long, env = "BINLOGSTREAM_SOURCE")]
    pub source: Option<String>,
    /// File holding the source password (trailing newline ignored). Or set BINLOGSTREAM_PASSWORD.
    #[arg(long, env = "BINLOGSTREAM_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// TLS to the source: disabled | required (encrypt, no certificate check) |
    /// verify-identity (CA and host name checked) [default: disabled].
    #[arg(long, env = "BINLOGSTREAM_SOURCE_TLS")]
    pub source_tls: Option<String>,
    /// CA bundle (PEM) the source certificate must chain to, e.g. the RDS global-bundle.pem
    /// [default with verify-identity: the public web roots].
    #[arg(long, env = "BINLOGSTREAM_SOURCE_TLS_CA")]
    pub source_tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for accounts created with REQUIRE X509.
    #[arg(long, env = "BINLOGSTREAM_SOURCE_TLS_CERT")]
    pub source_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --source-tls-cert.
    #[arg(long, env = "BINLOGSTREAM_SOURCE_TLS_KEY")]
    pub source_tls_key: Option<PathBuf>,
    /// Host name the source certificate must carry, when it is not the --source host (an IP
    /// address, a tunnel, a proxy).
    #[arg(long, env = "BINLOGSTREAM_SOURCE_TLS_SERVER_NAME")]
    pub source_tls_server_name: Option<String>,
    /// Replica server id, unique among the source's replicas [default: derived from host and source].
    #[arg(long, env = "BINLOGSTREAM_SERVER_ID")]
    pub server_id: Option<u32>,
    /// latest | earliest | FILE:POS | gtid:D-S-N[,...] (used only when no checkpoint exists).
    #[arg(long, env = "BINLOGSTREAM_START")]
    pub start: Option<String>,
    /// Capture only these SCHEMA.TABLE patterns (`*` wildcard; repeat or comma-separate).
    #[arg(long, env = "BINLOGSTREAM_INCLUDE", value_delimiter = ',')]
    pub include: Vec<String>,
    /// Never capture these SCHEMA.TABLE patterns.
    #[arg(long, env = "BINLOGSTREAM_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// stdout | file:PATH | null | kinesis.
    #[arg(long, env = "BINLOGSTREAM_SINK")]
    pub sink: Option<String>,
    /// Kinesis stream name (with --sink kinesis).
    #[arg(long, env = "BINLOGSTREAM_STREAM")]
    pub stream: Option<String>,
    /// Kinesis endpoint override (an emulator, a VPC endpoint).
    #[arg(long, env = "BINLOGSTREAM_ENDPOINT")]
    pub endpoint: Option<String>,
    /// AWS region [default: from the AWS chain].
    #[arg(long, env = "BINLOGSTREAM_REGION")]
    pub region: Option<String>,
    /// primary-key | table | constant:VALUE [default: primary-key].
    #[arg(long, env = "BINLOGSTREAM_PARTITION_KEY")]
    pub partition_key: Option<String>,
    /// What to do with a row over Kinesis's 1 MiB record limit: fail | skip | key-only [default: fail].
    #[arg(long, env = "BINLOGSTREAM_OVERSIZE")]
    pub oversize: Option<String>,
    /// PutRecords requests in flight at once [default: 4].
    #[arg(long, env = "BINLOGSTREAM_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Pack rows into KPL aggregated records (off by default: consumers need a
    /// de-aggregating reader such as the KCL or the Lambda de-aggregation libraries).
    #[arg(long, env = "BINLOGSTREAM_AGGREGATE", num_args = 0..=1, default_missing_value = "true")]
    pub aggregate: Option<bool>,
    /// With --aggregate: the largest KPL aggregate, in bytes (4096..=1048576) [default: 262144].
    #[arg(long, env = "BINLOGSTREAM_AGGREGATE_MAX_BYTES")]
    pub aggregate_max_bytes: Option<usize>,
    /// Serve /metrics, /healthz and /readyz on HOST:PORT.
    #[arg(long, env = "BINLOGSTREAM_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Add the `position` key (file, pos, row, gtid, ts) to every record.
    #[arg(long, env = "BINLOGSTREAM_POSITION", num_args = 0..=1, default_missing_value = "true")]
    pub position: Option<bool>,
    /// Store the resume position in this file (atomic replace).
    #[arg(long, env = "BINLOGSTREAM_CHECKPOINT_FILE")]
    pub checkpoint_file: Option<PathBuf>,
    /// Store the resume position in the status of this BinlogStream (NAMESPACE/NAME), as the
    /// operator's publisher pods do.
    #[arg(
        long,
        env = "BINLOGSTREAM_CHECKPOINT_KUBERNETES",
        conflicts_with = "checkpoint_file"
    )]
    pub checkpoint_kubernetes: Option<String>,
    /// The UID of that BinlogStream: status writes carry it as a precondition, so a pod of a
    /// deleted stream cannot write into a new one of the same name (the operator sets it).
    #[arg(
        long,
        env = "BINLOGSTREAM_CHECKPOINT_KUBERNETES_UID",
        requires = "checkpoint_kubernetes"
    )]
    pub checkpoint_kubernetes_uid: Option<String>,
    /// A coordination.k8s.io Lease in the BinlogStream's namespace to hold while streaming:
    /// a second publisher of the same stream waits until the first has stopped (the
    /// operator creates it and sets this).
    #[arg(long, env = "BINLOGSTREAM_LEASE", requires = "checkpoint_kubernetes")]
    pub lease: Option<String>,
    /// Exit once the current end of the binlog is reached.
    #[arg(long, env = "BINLOGSTREAM_STOP_AT_END", num_args = 0..=1, default_missing_value = "true")]
    pub stop_at_end: Option<bool>,
    /// Seconds between heartbeats from an idle source [default: 5].
    #[arg(long, env = "BINLOGSTREAM_HEARTBEAT_SECS")]
    pub heartbeat_secs: Option<u64>,
    /// Longest a record waits in a buffer before it is flushed, in ms [default: 5].
    #[arg(long, env = "BINLOGSTREAM_LINGER_MS")]
    pub linger_ms: Option<u64>,
    /// Shortest time between checkpoint writes, in ms [default: 1000 with a checkpoint file,
    /// 10000 in a BinlogStream status, which the API server of many streams must carry].
    #[arg(long, env = "BINLOGSTREAM_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Longest a stop (SIGTERM, or an error) waits for unacknowledged records and the final
    /// checkpoint, in seconds; keep it below the pod's grace period [default: 20].
    #[arg(long, env = "BINLOGSTREAM_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Snapshot rows per chunk [default: 10000].
    #[arg(long, env = "BINLOGSTREAM_SNAPSHOT_CHUNK_ROWS")]
    pub snapshot_chunk_rows: Option<usize>,
    /// A snapshot chunk ends early once its records pass this many bytes [default: 8388608].
    #[arg(long, env = "BINLOGSTREAM_SNAPSHOT_CHUNK_BYTES")]
    pub snapshot_chunk_bytes: Option<usize>,
    /// consistent-snapshot (MariaDB, the default there) or watermark (the default on MySQL).
    #[arg(long, env = "BINLOGSTREAM_SNAPSHOT_METHOD")]
    pub snapshot_method: Option<String>,
    /// On demand: snapshot these tables (SCHEMA.TABLE,...) once, with --snapshot-request-id.
    #[arg(long, env = "BINLOGSTREAM_SNAPSHOT_TABLES", value_delimiter = ',')]
    pub snapshot_tables: Vec<String>,
    /// Names the on-demand snapshot; once done it is recorded in the checkpoint and not
    /// repeated by a restart with the same flags. A new id runs it again.
    #[arg(long, env = "BINLOGSTREAM_SNAPSHOT_REQUEST_ID")]
    pub snapshot_request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    source: Option<String>,
    password_file: Option<PathBuf>,
    source_tls: Option<String>,
    source_tls_ca: Option<PathBuf>,
    source_tls_cert: Option<PathBuf>,
    source_tls_key: Option<PathBuf>,
    source_tls_server_name: Option<String>,
    server_id: Option<u32>,
    start: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    sink: Option<String>,
    stream: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    partition_key: Option<String>,
    oversize: Option<String>,
    max_in_flight: Option<usize>,
    aggregate: Option<bool>,
    aggregate_max_bytes: Option<usize>,
    metrics_addr: Option<String>,
    position: Option<bool>,
    checkpoint_file: Option<PathBuf>,
    stop_at_end: Option<bool>,
    heartbeat_secs: Option<u64>,
    linger_ms: Option<u64>,
    checkpoint_interval_ms: Option<u64>,
    drain_timeout_secs: Option<u64>,
    snapshot_chunk_rows: Option<usize>,
    snapshot_chunk_bytes: Option<usize>,
    snapshot_method: Option<String>,
    #[serde(default)]
    snapshot_tables: Vec<String>,
    snapshot_request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
    Null,
    Kinesis,
}

impl std::str::FromStr for SinkSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(SinkSpec::Stdout),
            "null" => Ok(SinkSpec::Null),
            "kinesis" => Ok(SinkSpec::Kinesis),
            other => match other.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(SinkSpec::File(PathBuf::from(p))),
                _ => Err(ConfigError::Invalid {
                    field: "sink",
                    reason: format!("`{s}` is not one of stdout, file:PATH, null, kinesis"),
                }),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{field} is required (flag --{flag} or env {env})")]
    Missing {
        field: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub source: SourceConfig,
    pub sink: SinkSpec,
    /// Set when `sink` is Kinesis.
    pub kinesis: Option<KinesisConfig>,
    pub checkpoint_file: Option<PathBuf>,
    pub checkpoint_kubernetes: Option<String>,
    pub checkpoint_kubernetes_uid: Option<String>,
    /// The fence lease (see `checkpoint::fence`), with the Kubernetes store only.
    pub lease: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    pub pipeline: PipelineOptions,
    pub snapshot: SnapshotOptions,
}

fn read_password_file(path: &PathBuf) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        field: "password-file",
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// A replica id derived from the host and the source, stable across restarts, in a range
/// real servers rarely use.
pub fn default_server_id(source: &str) -> u32 {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in host.trim().bytes().chain([0]).chain(source.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x4000_0000 | (h & 0x3fff_ffff)
}

fn patterns(field: &'static str, list: &[String]) -> Result<Vec<Pattern>, ConfigError> {
    list.iter()
        .map(|p| {
            p.parse()
                .map_err(|e: crate::filter::PatternError| ConfigError::Invalid {
                    field,
                    reason: e.to_string(),
                })
        })
        .collect()
}

impl RunArgs {
    pub fn resolve(self) -> Result<RunConfig, ConfigError> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let url = self.source.or(file.source).ok_or(ConfigError::Missing {
            field: "source",
            flag: "source",
            env: "BINLOGSTREAM_SOURCE",
        })?;
        let password = match self.password_file.or(file.password_file) {
            Some(path) => Some(read_password_file(&path)?),
            None => std::env::var("BINLOGSTREAM_PASSWORD").ok(),
        };
        let tls = TlsOptions {
            mode: match self.source_tls.or(file.source_tls) {
                Some(m) => m.parse().map_err(|reason| ConfigError::Invalid {
                    field: "source-tls",
                    reason,
                })?,
                None => TlsMode::default(),
            },
            ca: self.source_tls_ca.or(file.source_tls_ca),
            cert: self.source_tls_cert.or(file.source_tls_cert),
            key: self.source_tls_key.or(file.source_tls_key),
            server_name: self.source_tls_server_name.or(file.source_tls_server_name),
        };
        let ssl = tls.ssl_opts().map_err(ConfigError::Tls)?;
        let addr = SourceAddr::new(&url, password.as_deref())
            .map_err(|reason| ConfigError::Invalid {
                field: "source",
                reason,
            })?
            .with_tls(ssl);
        let server_id = self
            .server_id
            .or(file.server_id)
            .unwrap_or_else(|| default_server_id(&url));
        if server_id == 0 {
            return Err(ConfigError::Invalid {
                field: "server-id",
                reason: "0 is not a valid replica server id".into(),
            });
        }
        let start: StartFrom = self
            .start
            .or(file.start)
            .unwrap_or_else(|| "latest".into())
            .parse()
            .map_err(|e: crate::position::StartParseError| ConfigError::Invalid {
                field: "start",
                reason: e.to_string(),
            })?;
        let include = if self.include.is_empty() {
            file.include
        } else {
            self.include
        };
        let exclude = if self.exclude.is_empty() {
            file.exclude
        } else {
            self.exclude
        };
        let filter = TableFilter {
            include: patterns("include", &include)?,
            exclude: patterns("exclude", &exclude)?,
        };
        let sink: SinkSpec = self
            .sink
            .or(file.sink)
            .unwrap_or_else(|| "stdout".into())
            .parse()?;
        let kinesis = if sink == SinkSpec::Kinesis {
            let stream = self.stream.or(file.stream).ok_or(ConfigError::Missing {
                field: "stream",
                flag: "stream",
                env: "BINLOGSTREAM_STREAM",
            })?;
            let mut k = KinesisConfig::new(stream);
            k.endpoint = self.endpoint.or(file.endpoint);
            k.region = self.region.or(file.region);
            if let Some(pk) = self.partition_key.or(file.partition_key) {
                k.partition_key =
                    pk.parse::<PartitionKey>()
                        .map_err(|reason| ConfigError::Invalid {
                            field: "partition-key",
                            reason,
                        })?;
            }
            if let Some(o) = self.oversize.or(file.oversize) {
                k.oversize = o
                    .parse::<Oversize>()
                    .map_err(|reason| ConfigError::Invalid {
                        field: "oversize",
                        reason,
                    })?;
            }
            if let Some(n) = self.max_in_flight.or(file.max_in_flight) {
                if n == 0 || n > 64 {
                    return Err(ConfigError::Invalid {
                        field: "max-in-flight",
                        reason: format!("{n} is outside 1..=64"),
                    });
                }
                k.max_in_flight = n;
            }
            k.aggregate = self.aggregate.or(file.aggregate).unwrap_or(false);
            if let Some(n) = self.aggregate_max_bytes.or(file.aggregate_max_bytes) {
                if !(4096..=MAX_RECORD_BYTES).contains(&n) {
                    return Err(ConfigError::Invalid {
                        field: "aggregate-max-bytes",
                        reason: format!("{n} is outside 4096..={MAX_RECORD_BYTES}"),
                    });
                }
                k.aggregate_max_bytes = n;
            }
            Some(k)
        } else {
            None
        };
        let metrics_addr = match self.metrics_addr.or(file.metrics_addr) {
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
                field: "metrics-addr",
                reason: format!("`{a}` is not HOST:PORT ({e})"),
            })?),
            None => None,
        };
        let heartbeat =
            Duration::from_secs(self.heartbeat_secs.or(file.heartbeat_secs).unwrap_or(5));
        let linger = Duration::from_millis(self.linger_ms.or(file.linger_ms).unwrap_or(5));
        let default_interval_ms = if self.checkpoint_kubernetes.is_some() {
            KUBERNETES_CHECKPOINT_INTERVAL_MS
        } else {
            1000
        };
        let checkpoint_interval = Duration::from_millis(
            self.checkpoint_interval_ms
                .or(file.checkpoint_interval_ms)
                .unwrap_or(default_interval_ms),
        );
        let drain_timeout = match self.drain_timeout_secs.or(file.drain_timeout_secs) {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    field: "drain-timeout-secs",
                    reason: "must be at least 1 second".into(),
                })
            }
            Some(s) => Duration::from_secs(s),
            None => crate::pipeline::DEFAULT_DRAIN_TIMEOUT,
        };
        let snapshot = {
            let d = SnapshotOptions::default();
            let method = match self.snapshot_method.or(file.snapshot_method) {
                Some(m) => Some(m.parse::<Method>().map_err(|reason| ConfigError::Invalid {
                    field: "snapshot-method",
                    reason,
                })?),
                None => None,
            };
            let tables = if self.snapshot_tables.is_empty() {
                file.snapshot_tables
            } else {
                self.snapshot_tables
            };
            let tables = tables
                .iter()
                .map(|t| t.parse::<TableName>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| ConfigError::Invalid {
                    field: "snapshot-tables",
                    reason,
                })?;
            let request_id = self.snapshot_request_id.or(file.snapshot_request_id);
            if tables.is_empty() != request_id.is_none() {
                return Err(ConfigError::Invalid {
                    field: "snapshot-tables",
                    reason: "an on-demand snapshot needs both --snapshot-tables and --snapshot-request-id".into(),
                });
            }
            let chunk_rows = self
                .snapshot_chunk_rows
                .or(file.snapshot_chunk_rows)
                .unwrap_or(d.chunk_rows);
            if chunk_rows == 0 {
                return Err(ConfigError::Invalid {
                    field: "snapshot-chunk-rows",
                    reason: "0 rows per chunk".into(),
                });
            }
            SnapshotOptions {
                chunk_rows,
                chunk_bytes: self
                    .snapshot_chunk_bytes
                    .or(file.snapshot_chunk_bytes)
                    .unwrap_or(d.chunk_bytes)
                    .max(1),
                method,
                tables,
                request_id,
                progress: d.progress,
            }
        };
        Ok(RunConfig {
            snapshot,
            source: SourceConfig {
                addr,
                server_id,
                start,
                filter,
                encode: EncodeOptions {
                    position: self.position.or(file.position).unwrap_or(false),
                },
                heartbeat,
                stop_at_end: self.stop_at_end.or(file.stop_at_end).unwrap_or(false),
            },
            sink,
            kinesis,
            metrics_addr,
            checkpoint_file: self.checkpoint_file.or(file.checkpoint_file),
            checkpoint_kubernetes: self.checkpoint_kubernetes,
            checkpoint_kubernetes_uid: self.checkpoint_kubernetes_uid.filter(|u| !u.is_empty()),
            lease: self.lease.filter(|l| !l.is_empty()),
            pipeline: PipelineOptions {
                linger,
                checkpoint_interval,
                drain_timeout,
                ..PipelineOptions::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least a run needs: a source and a password file (written into `dir`).
    fn minimal_args(dir: &tempfile::TempDir) -> RunArgs {
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "pw\n").expect("pw");
        RunArgs {
            source: Some("mysql://repl@db:3306".into()),
            password_file: Some(pw),
            ..Default::default()
        }
    }

    #[test]
    fn drain_timeout_defaults_below_the_grace_period_and_rejects_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = minimal_args(&dir);
        let args = |secs: Option<u64>| RunArgs {
            drain_timeout_secs: secs,
            ..base.clone()
        };
        let default = args(None).resolve().expect("resolve");
        assert_eq!(default.pipeline.drain_timeout, Duration::from_secs(20));
        let set = args(Some(7)).resolve().expect("resolve");
        assert_eq!(set.pipeline.drain_timeout, Duration::from_secs(7));
        let e = args(Some(0)).resolve().expect_err("zero").to_string();
        assert!(e.contains("drain-timeout-secs"), "{e}");
    }

    #[test]
    fn a_status_checkpoint_is_written_every_10_s_by_default_a_file_every_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = minimal_args(&dir);
        let kube = RunArgs {
            checkpoint_kubernetes: Some("shop/orders".into()),
            ..base.clone()
        };
        assert_eq!(
            kube.resolve()
                .expect("resolve")
                .pipeline
                .checkpoint_interval,
            Duration::from_secs(10)
        );
        let file = RunArgs {
            checkpoint_file: Some(dir.path().join("cp.json")),
            ..base.clone()
        };
        assert_eq!(
            file.resolve()
                .expect("resolve")
                .pipeline
                .checkpoint_interval,
            Duration::from_secs(1)
        );
        let set = RunArgs {
            checkpoint_kubernetes: Some("shop/orders".into()),
            checkpoint_interval_ms: Some(2500),
            ..base.clone()
        };
        assert_eq!(
            set.resolve().expect("resolve").pipeline.checkpoint_interval,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn the_aggregate_size_defaults_to_256_kib_and_is_bounded_by_the_record_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = minimal_args(&dir);
        let args = |bytes: Option<usize>| RunArgs {
            sink: Some("kinesis".into()),
            stream: Some("s".into()),
            aggregate: Some(true),
            aggregate_max_bytes: bytes,
            ..base.clone()
        };
        let kinesis = |r: RunConfig| r.kinesis.expect("kinesis config");
        let default = kinesis(args(None).resolve().expect("resolve"));
        assert_eq!(default.aggregate_max_bytes, 256 * 1024);
        let set = kinesis(args(Some(MAX_RECORD_BYTES)).resolve().expect("resolve"));
        assert_eq!(set.aggregate_max_bytes, MAX_RECORD_BYTES);
        for bad in [0, 4095, MAX_RECORD_BYTES + 1] {
            let e = args(Some(bad))
                .resolve()
                .expect_err("out of range")
                .to_string();
            assert!(
                e.contains("aggregate-max-bytes") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("p.toml");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").expect("pw");
        std::fs::write(
            &cfg,
            format!(
                "source = \"mysql://repl@db:3306\"\npassword-file = \"{}\"\nserver-id = 7\nstart = \"earliest\"\ninclude = [\"shop.*\"]\n",
                pw.display()
            ),
        )
        .expect("cfg");
        let args = RunArgs {
            config: Some(cfg),
            server_id: Some(9),
            ..Default::default()
        };
        let run = args.resolve().expect("resolve");
        assert_eq!(run.source.server_id, 9);
        assert_eq!(run.source.start, StartFrom::Earliest);
        assert!(run.source.filter.captures("shop", "x"));
        assert!(!run.source.filter.captures("other", "x"));
        assert_eq!(run.source.addr.opts.pass(), Some("s3cret"));
        assert_eq!(run.sink, SinkSpec::Stdout);
    }

    #[test]
    fn tls_options_reach_the_connection_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
        )
        .expect("ca");
        let cfg = dir.path().join("p.toml");
        std::fs::write(
            &cfg,
            format!(
                "source = \"mysql://repl@db:3306\"\nsource-tls = \"verify-identity\"\nsource-tls-ca = \"{}\"\n",
                ca.display()
            ),
        )
        .expect("cfg");
        let run = RunArgs {
            config: Some(cfg),
            source_tls_server_name: Some("db.example.com".into()),
            ..Default::default()
        }
        .resolve()
        .expect("resolve");
        let ssl = run.source.addr.opts.ssl_opts().expect("tls on");
        assert_eq!(ssl.root_certs(), &[ca.into()]);
        assert_eq!(ssl.tls_hostname_override(), Some("db.example.com"));
        assert!(!ssl.accept_invalid_certs());

        let plain = RunArgs {
            source: Some("mysql://u@h:1".into()),
            ..Default::default()
        }
        .resolve()
        .expect("resolve");
        assert!(plain.source.addr.opts.ssl_opts().is_none());

        let e = RunArgs {
            source: Some("mysql://u@h:1".into()),
            source_tls: Some("verify-identity".into()),
            source_tls_ca: Some(dir.path().join("missing.pem")),
            ..Default::default()
        }
        .resolve()
        .expect_err("must fail")
        .to_string();
        assert!(e.starts_with("source-tls-ca: cannot read "), "{e}");
        let e = RunArgs {
            source: Some("mysql://u@h:1".into()),
            source_tls: Some("maybe".into()),
            ..Default::default()
        }
        .resolve()
        .expect_err("must fail")
        .to_string();
        assert!(e.starts_with("source-tls: `maybe` is not one of"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = RunArgs::default()
            .resolve()
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("source is required"), "{e}");
        let e = RunArgs {
            source: Some("mysql://u@h:1".into()),
            start: Some("nowhere".into()),
            ..Default::default()
        }
        .resolve()
        .expect_err("must fail")
        .to_string();
        assert!(e.starts_with("start:"), "{e}");
        let e = RunArgs {
            source: Some("mysql://u@h:1".into()),
            include: vec!["nodot".into()],
            ..Default::default()
        }
        .resolve()
        .expect_err("must fail")
        .to_string();
        assert!(e.starts_with("include:"), "{e}");
        let e = RunArgs {
            source: Some("mysql://u@h:1".into()),
            sink: Some("kafka".into()),
            ..Default::default()
        }
        .resolve()
        .expect_err("must fail")
        .to_string();
        assert!(e.starts_with("sink:"), "{e}");
    }
}
