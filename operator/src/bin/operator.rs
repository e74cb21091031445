//! The operator: reconciles BinlogStream resources while it holds the leader lease.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use kube::{api::ListParams, Api, Client};
use operator::{
    controller::{self, Context},
    crd::BinlogStream,
    metrics::{self, OperatorMetrics},
    reconcile::build::BuildConfig,
};
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "operator",
    version,
    about = "Runs one binlogstream publisher per BinlogStream resource"
)]
struct Args {
    /// Image of the publisher pods (a BinlogStream may override it).
    #[arg(long, env = "PUBLISHER_IMAGE")]
    publisher_image: String,
    #[arg(long, env = "PUBLISHER_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease so several replicas can run.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "binlogstream-operator")]
    lease_name: String,
    /// Namespace of the lease [default: the pod's namespace].
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Reconciles running at once; bounds the API load when many streams change together.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Namespaces to watch (comma-separated); empty: the whole cluster. With a list the
    /// operator needs Roles in those namespaces only (chart value watchNamespaces).
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// `spec.publisher.image` values a BinlogStream may set: exact, or a prefix ending in
    /// `*`. None by default: overrides are refused.
    #[arg(long, env = "ALLOWED_PUBLISHER_IMAGES", value_delimiter = ',')]
    allowed_publisher_images: Vec<String>,
    /// Service-account annotation keys a BinlogStream may set (exact, or prefix ending in `*`).
    #[arg(long, env = "ALLOWED_SERVICE_ACCOUNT_ANNOTATIONS", value_delimiter = ',', default_value = operator::reconcile::tenancy::IRSA_ROLE_ANNOTATION)]
    allowed_service_account_annotations: Vec<String>,
    /// imagePullSecrets of publisher pods (each must exist in the stream's namespace).
    #[arg(long, env = "PUBLISHER_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    publisher_image_pull_secrets: Vec<String>,
}

/// A comma-separated list from a flag or the environment, without empty items: the chart
/// passes an empty list as an empty string, which clap reads as one empty item (an
/// imagePullSecret without a name makes the API server refuse the Deployment).
fn non_empty(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect()
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // With the publisher in the same build, rustls has two providers compiled in and cannot
    // choose one itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    Api::<BinlogStream>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("listing BinlogStreams failed: is the CRD installed (crds/binlogstream.yaml) and may the operator list them?")?;

    let metrics = Arc::new(OperatorMetrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    let server = tokio::spawn(metrics::serve(
        args.metrics_addr,
        metrics.clone(),
        stopped(),
    ));
    let mut ctx = Context::new(
        client.clone(),
        BuildConfig {
            publisher_image: args.publisher_image.clone(),
            image_pull_policy: args.image_pull_policy.clone(),
            image_pull_secrets: non_empty(&args.publisher_image_pull_secrets),
        },
        metrics.clone(),
    );
    ctx.concurrency = args.max_concurrent_reconciles;
    ctx.tenancy = operator::reconcile::tenancy::TenancyPolicy {
        allowed_images: non_empty(&args.allowed_publisher_images),
        allowed_sa_annotations: non_empty(&args.allowed_service_account_annotations),
    };
    ctx.namespaces = non_empty(&args.watch_namespaces);
    let ctx = Arc::new(ctx);

    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    if !args.leader_election {
        metrics.set_leader(true);
        controller::run(ctx, stopped()).await;
    } else {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("operator-{}", std::process::id()));
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&args.lease_namespace)
                .with_identity(&identity)
                .with_duration(15)
                .with_grace(5)
                .build()
                .await
                .context("creating the leader lease")?;
        let (mut leader, lease_task) = manager.watch().await;
        let mut stop = stop_rx.clone();
        loop {
            // Wait to become leader (or to be told to stop).
            tokio::select! {
                r = leader.wait_for(|l| *l) => { if r.is_err() { break; } }
                _ = stop.wait_for(|s| *s) => break,
            }
            info!(identity, "became leader; reconciling");
            metrics.set_leader(true);
            let mut lost = leader.clone();
            let mut stop2 = stop_rx.clone();
            controller::run(ctx.clone(), async move {
                tokio::select! {
                    _ = lost.wait_for(|l| !*l) => {},
                    _ = stop2.wait_for(|s| *s) => {},
                }
            })
            .await;
            metrics.set_leader(false);
            if *stop_rx.borrow() {
                break;
            }
            warn!(identity, "lost the leader lease; standing by");
        }
        drop(leader);
        let _ = lease_task.await;
    }
    signal.abort();
    let _ = server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_from_the_chart_is_no_item() {
        let args = Args::try_parse_from([
            "operator",
            "--publisher-image",
            "p",
            "--publisher-image-pull-secrets",
            "",
            "--watch-namespaces",
            " a, ,b ",
        ])
        .expect("args");
        assert_eq!(
            non_empty(&args.publisher_image_pull_secrets),
            Vec::<String>::new()
        );
        assert_eq!(non_empty(&args.watch_namespaces), vec!["a", "b"]);
    }
}
