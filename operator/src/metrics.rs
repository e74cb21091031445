//! Operator metrics and health endpoints.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: String,
}

pub struct OperatorMetrics {
    pub reconciles: Counter,
    pub failures: Family<ErrorLabel, Counter>,
    pub leader: AtomicBool,
    registry: Registry,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut m = OperatorMetrics {
            reconciles: Counter::default(),
            failures: Family::default(),
            leader: AtomicBool::new(false),
            registry: Registry::with_prefix("binlogstream_operator"),
        };
        m.registry
            .register("reconciles", "Reconcile runs", m.reconciles.clone());
        m.registry.register(
            "reconcile_failures",
            "Failed reconcile runs, by error",
            m.failures.clone(),
        );
        m
    }
}

impl OperatorMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

async fn metrics(State(m): State<Arc<OperatorMetrics>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn readyz(State(m): State<Arc<OperatorMetrics>>) -> impl IntoResponse {
    // Every replica is ready to take over; the leader is the one reconciling.
    let role = if m.leader.load(Ordering::Relaxed) {
        "leader"
    } else {
        "standby"
    };
    (StatusCode::OK, format!("ready ({role})\n"))
}

pub async fn serve(
    addr: std::net::SocketAddr,
    m: Arc<OperatorMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
