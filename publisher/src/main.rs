use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use publisher::{
    checkpoint::{
        fence::Fence,
        file::FileCheckpoint,
        kubernetes::{KubeCheckpoint, StatusWriter},
        CheckpointStore, NoCheckpoint,
    },
    config::{RunArgs, RunConfig, SinkSpec},
    metrics,
    pipeline::{self, Summary},
    sink::{jsonl::JsonLinesSink, kinesis, null::NullSink, Sink},
    source::Reader,
};
use tracing::info;

#[derive(Parser)]
#[command(
    name = "publisher",
    version,
    about = "Publishes MySQL/MariaDB row changes from the binlog"
)]
struct Cli {
    /// Log format on stderr: text or json.
    #[arg(
        long,
        env = "BINLOGSTREAM_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the source's binlog and publish every row change.
    Run(Box<RunArgs>),
    /// Print the records of a Kinesis stream (what consumers receive).
    Tail(publisher::tail::TailArgs),
    /// Print the records of binlog files as JSON lines (no server needed).
    Decode(DecodeArgs),
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// Capture only these SCHEMA.TABLE patterns.
    #[arg(long, value_delimiter = ',')]
    include: Vec<String>,
    /// Never capture these SCHEMA.TABLE patterns.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Add the `position` key to every record.
    #[arg(long)]
    position: bool,
    /// Binlog files, decoded in the order given.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BINLOGSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Registers for SIGTERM and SIGINT at once, so a stop that arrives while the publisher is
/// still connecting is not lost (the default action would end it without a final
/// checkpoint); resolves when one arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
    };
    async move {
        #[cfg(unix)]
        match signals {
            Ok((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        info!("shutdown requested: draining and writing the final checkpoint");
    }
}

async fn run_with<S: Sink, C: CheckpointStore>(
    cfg: RunConfig,
    sink: &mut S,
    store: &mut C,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let checkpoint = store.load().await?;
    if let Some(cp) = &checkpoint {
        info!(file = %cp.file, pos = cp.pos, rows_done = cp.rows_done, "resuming from checkpoint");
    }
    let mut opts = cfg.pipeline.clone();
    opts.store_start = checkpoint.is_none();
    let reader = Reader::open(cfg.source.clone(), checkpoint.clone()).await?;
    let snapshot = publisher::snapshot::Driver::start(
        &cfg.source,
        &reader,
        checkpoint.as_ref(),
        cfg.snapshot.clone(),
        cfg.pipeline.metrics.clone(),
    )
    .await?;
    Ok(pipeline::run_with_snapshot(reader, snapshot, sink, store, &opts, stop).await?)
}

/// One CamelCase word for the status report, from the error that stopped the publisher.
fn reason_of(e: &anyhow::Error) -> &'static str {
    use publisher::{pipeline::PipelineError, sink::SinkError, source::SourceError};
    let source = |s: &SourceError| match s {
        SourceError::Unreachable { .. } | SourceError::Connection(_) => "SourceUnreachable",
        SourceError::AccessDenied { .. } => "SourceAccessDenied",
        SourceError::Tls { .. } => "SourceTlsFailed",
        SourceError::MissingPrivilege { .. } => "MissingPrivilege",
        SourceError::Misconfigured { .. } => "SourceMisconfigured",
        SourceError::BinlogGone { .. } => "BinlogPurged",
        SourceError::BadStart { .. } => "InvalidStart",
        SourceError::ServerChanged { .. } => "SourceServerChanged",
        SourceError::ServerIdInUse { .. } => "ServerIdInUse",
        SourceError::Schema { .. } | SourceError::Plan(_) => "SchemaMismatch",
        _ => "DecodeFailed",
    };
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<SourceError>() {
            return source(s);
        }
        match cause.downcast_ref::<PipelineError>() {
            Some(PipelineError::DrainIncomplete { .. }) => return "DrainIncomplete",
            Some(PipelineError::Checkpoint(_)) => return "CheckpointStoreFailed",
            _ => {}
        }
        if let Some(PipelineError::Source(s)) = cause.downcast_ref::<PipelineError>() {
            return source(s);
        }
        if let Some(PipelineError::Snapshot(s)) = cause.downcast_ref::<PipelineError>() {
            use publisher::snapshot::SnapshotError as E;
            return match s {
                E::NoSelect { .. } => "MissingPrivilege",
                E::Unorderable { .. } | E::Unsupported { .. } | E::BadKey { .. } => {
                    "SnapshotRefused"
                }
                _ => "SnapshotFailed",
            };
        }
        let sink = match cause.downcast_ref::<PipelineError>() {
            Some(PipelineError::Sink(s)) => Some(s),
            _ => cause.downcast_ref::<SinkError>(),
        };
        if let Some(s) = sink {
            return if s.to_string().contains("record limit") {
                "OversizeRow"
            } else {
                "KinesisFailing"
            };
        }
    }
    "PublisherFailed"
}

/// With no other write for this long, the periodic report refreshes the status (so the
/// operator can tell a silent publisher); otherwise it writes only when the report changes.
/// Checkpoints (every 10 s by default) carry the refresh while the stream moves, so a
/// publisher stays within 6 status writes a minute.
const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(20);

/// Keeps the publisher's part of the BinlogStream status current between checkpoints: looks
/// every 5 s (a new problem is reported within that), writes when due.
async fn report_status(
    writer: StatusWriter,
    metrics: std::sync::Arc<metrics::Metrics>,
    source: publisher::source::SourceAddr,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if n.is_multiple_of(6) {
            if let Ok(mut conn) = source.connect().await {
                let user = source.user();
                if let Ok(files) =
                    publisher::source::preflight::binlog_files(&mut conn, &user, true).await
                {
                    if let (Some(first), Some(last)) = (files.first(), files.last()) {
                        writer.set_binlogs(&first.name, &last.name, files.len());
                    }
                }
                drop(conn);
            }
        }
        n += 1;
        match metrics.problem() {
            None => writer.set_report("Running", None, None),
            Some(p) => {
                let reason = if p.starts_with("Kinesis") {
                    "KinesisFailing"
                } else if p.starts_with("source") {
                    "SourceUnreachable"
                } else if p.starts_with("checkpoint store") {
                    "CheckpointStoreFailing"
                } else {
                    "Starting"
                };
                writer.set_report(
                    if reason == "Starting" {
                        "Starting"
                    } else {
                        "Retrying"
                    },
                    Some(reason),
                    Some(p),
                );
            }
        }
        // A failure is logged (once per change) and counted by the writer itself.
        if let Err(e) = writer.write_report_if_due(STATUS_REFRESH).await {
            tracing::debug!(error = %e, "could not report to the BinlogStream status");
        }
    }
}

async fn run_sink<S: Sink>(
    cfg: RunConfig,
    sink: &mut S,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let mut stop = Box::pin(stop);
    if let Some(resource) = cfg.checkpoint_kubernetes.clone() {
        // The fence first: the previous publisher of this stream writes its final checkpoint
        // before it releases the lease, so the checkpoint read below is the one it ended at.
        let fence = match &cfg.lease {
            Some(lease) => {
                let ns = resource.split_once('/').map(|(n, _)| n).unwrap_or_default();
                let identity = std::env::var("HOSTNAME")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| format!("publisher-{}", std::process::id()));
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API for the publisher lease")?;
                let acquiring = Fence::acquire(client, ns, lease, &identity);
                tokio::select! {
                    f = acquiring => Some(f?),
                    () = &mut stop => {
                        info!("shutdown requested while waiting for the publisher lease; nothing was streamed");
                        return Ok(Summary::default());
                    }
                }
            }
            None => None,
        };
        let writer = StatusWriter::new(&resource, cfg.pipeline.metrics.clone())
            .await?
            .bound_to_uid(cfg.checkpoint_kubernetes_uid.clone())
            .with_progress(cfg.snapshot.progress.clone());
        // Read the stored checkpoint before anything writes the status (see StatusWriter).
        KubeCheckpoint::new(writer.clone()).load().await?;
        writer.set_report("Starting", None, None);
        let reporter = tokio::spawn(report_status(
            writer.clone(),
            cfg.pipeline.metrics.clone(),
            cfg.source.addr.clone(),
        ));
        let (fence, lost) = match fence {
            Some(mut f) => {
                let lost = std::mem::replace(&mut f.lost, tokio::sync::oneshot::channel().1);
                (Some(f), Some(lost))
            }
            None => (None, None),
        };
        let lease_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_or_lost = {
            let lease_lost = lease_lost.clone();
            async move {
                match lost {
                    Some(lost) => tokio::select! {
                        () = stop => {}
                        Ok(()) = lost => lease_lost.store(true, std::sync::atomic::Ordering::Relaxed),
                    },
                    None => stop.await,
                }
            }
        };
        let mut result = run_with(
            cfg,
            sink,
            &mut KubeCheckpoint::new(writer.clone()),
            stop_or_lost,
        )
        .await;
        if lease_lost.load(std::sync::atomic::Ordering::Relaxed) && result.is_ok() {
            // Never a clean end: another publisher holds the stream now.
            result = Err(anyhow::anyhow!(
                "another publisher took this stream's lease; stopped after draining"
            ));
        }
        if let Some(f) = fence {
            f.release().await;
        }
        reporter.abort();
        let _ = reporter.await;
        match &result {
            Ok(_) => writer.set_report("Stopped", None, None),
            Err(e) => writer.set_report("Failed", Some(reason_of(e)), Some(format!("{e:#}"))),
        }
        if let Err(e) = writer.write().await {
            tracing::warn!(error = %e, "could not write the final report to the BinlogStream status");
        }
        return result;
    }
    match cfg.checkpoint_file.clone() {
        Some(path) => run_with(cfg, sink, &mut FileCheckpoint::new(path), stop).await,
        None => run_with(cfg, sink, &mut NoCheckpoint, stop).await,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // kube brings rustls with ring, the AWS SDK with aws-lc-rs: with both compiled in, rustls
    // cannot pick a process-wide provider by itself and panics on first use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let result: anyhow::Result<()> = async {
        match cli.command {
            Command::Run(args) => {
                let stop = shutdown_signal();
                let cfg = (*args).resolve().context("invalid configuration")?;
                info!(source = %cfg.source.addr.display(), server_id = cfg.source.server_id, start = %cfg.source.start, "starting");
                let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
                let server = cfg.metrics_addr.map(|addr| {
                    let m = cfg.pipeline.metrics.clone();
                    info!(%addr, "serving /metrics, /healthz and /readyz");
                    tokio::spawn(metrics::serve(addr, m, async {
                        let _ = metrics_stopped.await;
                    }))
                });
                let result = match cfg.sink.clone() {
                    SinkSpec::Stdout => run_sink(cfg, &mut JsonLinesSink::stdout(), stop).await,
                    SinkSpec::File(path) => run_sink(cfg, &mut JsonLinesSink::file(path).await?, stop).await,
                    SinkSpec::Null => run_sink(cfg, &mut NullSink::default(), stop).await,
                    SinkSpec::Kinesis => {
                        let kcfg = cfg.kinesis.clone().context("kinesis settings missing")?;
                        let client = kinesis::client(&kcfg).await;
                        kinesis::preflight(&client, &kcfg).await?;
                        let shards = if kcfg.aggregate {
                            Some(kinesis::shard_ranges(&client, &kcfg.stream).await?)
                        } else {
                            None
                        };
                        let mut sink = kinesis::KinesisSink::new(client, kcfg, cfg.pipeline.metrics.clone());
                        if let Some(ranges) = shards {
                            sink.set_shards(ranges);
                        }
                        run_sink(cfg, &mut sink, stop).await
                    }
                };
                let _ = stop_metrics.send(());
                if let Some(server) = server {
                    let _ = server.await;
                }
                let summary = result?;
                info!(rows = summary.rows, transactions = summary.transactions, "done");
                Ok(())
            }
            Command::Decode(args) => {
                use std::io::Write;
                let patterns = |list: &[String]| -> anyhow::Result<Vec<publisher::filter::Pattern>> {
                    list.iter().map(|p| p.parse().map_err(anyhow::Error::from)).collect()
                };
                let filter = publisher::filter::TableFilter {
                    include: patterns(&args.include)?,
                    exclude: patterns(&args.exclude)?,
                };
                let encode = publisher::decode::EncodeOptions { position: args.position };
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let mut write_err = None;
                for file in &args.files {
                    let rows = publisher::source::offline::decode_file(file, filter.clone(), encode, |item| {
                        if let publisher::source::Item::Row(row) = item {
                            if let Err(e) = out.write_all(&row.body).and_then(|_| out.write_all(b"\n")) {
                                write_err.get_or_insert(e);
                            }
                        }
                    })
                    .await?;
                    info!(file = %file.display(), rows, "decoded");
                }
                if let Some(e) = write_err {
                    return Err(e.into());
                }
                out.flush()?;
                Ok(())
            }
            Command::Tail(args) => {
                let mut k = kinesis::KinesisConfig::new(args.stream.clone());
                k.endpoint = args.endpoint.clone();
                k.region = args.region.clone();
                let client = kinesis::client(&k).await;
                let n = publisher::tail::tail(&client, &args).await?;
                info!(records = n, "end of every shard");
                Ok(())
            }
        }
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 3: stopped as asked but not fully drained (see --drain-timeout-secs); nothing is
            // lost, a restart sends the rest. 1: every other failure.
            let drain_incomplete = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<pipeline::PipelineError>(),
                    Some(pipeline::PipelineError::DrainIncomplete { .. })
                )
            });
            std::process::ExitCode::from(if drain_incomplete { 3 } else { 1 })
        }
    }
}
