//! Operator metrics and health endpoints.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: String,
}

pub struct OperatorMetrics {
    pub reconciles: Counter,
    pub failures: Family<ErrorLabel, Counter>,
    /// Wall time of one reconcile, API calls included.
    pub reconcile_duration: Histogram,
    pub leader: AtomicBool,
    /// 1 while this replica holds the lease (the same as /readyz's role, for alerts).
    pub leader_gauge: Gauge,
    registry: Registry,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut m = OperatorMetrics {
            reconciles: Counter::default(),
            failures: Family::default(),
            // 1 ms to ~16 s.
            reconcile_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
            ),
            leader: AtomicBool::new(false),
            leader_gauge: Gauge::default(),
            registry: Registry::with_prefix("binlogstream_operator"),
        };
        m.registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile takes, API calls included",
            m.reconcile_duration.clone(),
        );
        m.registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader_gauge.clone(),
        );
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
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
        self.leader_gauge.set(i64::from(leader));
    }

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
