//! Operator metrics and health endpoints.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
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

/// The kinds `reconcile_failures` is labelled with (`error`): a small fixed set, so an alert
/// or a dashboard can name them (see `controller::Error::metric_label`).
pub const ERROR_KINDS: &[&str] = &[
    "conflict",
    "forbidden",
    "not_found",
    "invalid",
    "throttled",
    "server_error",
    "connection",
    "decode",
    "auth",
    "other",
];

/// Condition statuses exported for every condition, like kube-state-metrics does: one series
/// per status, 1 for the current one, so `for:` clauses survive a status change.
const STATUSES: [&str; 3] = ["True", "False", "Unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub namespace: String,
    pub binlogstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamConditionLabels {
    pub namespace: String,
    pub binlogstream: String,
    pub condition: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub condition: String,
    pub status: String,
}

/// What the last reconcile of one stream found, for the per-stream gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamObservation {
    /// Condition type -> status, as written to the resource's status.
    pub conditions: BTreeMap<String, String>,
    pub paused: bool,
    /// Container restarts of the stream's publisher pods (resets when a pod is replaced).
    pub restarts: i64,
}

pub struct OperatorMetrics {
    pub reconciles: Counter,
    pub failures: Family<ErrorLabel, Counter>,
    /// Wall time of one reconcile, API calls included.
    pub reconcile_duration: Histogram,
    pub leader: AtomicBool,
    /// 1 while this replica holds the lease (the same as /readyz's role, for alerts).
    pub leader_gauge: Gauge,
    /// Per stream (namespace, name): rebuilt into the gauges below on every scrape, so a
    /// deleted stream's series go with it.
    streams: Mutex<BTreeMap<(String, String), StreamObservation>>,
    stream_condition: Family<StreamConditionLabels, Gauge>,
    streams_by_condition: Family<ConditionLabels, Gauge>,
    stream_paused: Family<StreamLabels, Gauge>,
    publisher_restarts: Family<StreamLabels, Gauge>,
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
            streams: Mutex::new(BTreeMap::new()),
            stream_condition: Family::default(),
            streams_by_condition: Family::default(),
            stream_paused: Family::default(),
            publisher_restarts: Family::default(),
            registry: Registry::with_prefix("binlogstream_operator"),
        };
        // Every kind exists from the start (at 0), so rate() sees the first failure.
        for kind in ERROR_KINDS {
            let _ = m.failures.get_or_create(&ErrorLabel {
                error: (*kind).into(),
            });
        }
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
            "Failed reconcile runs, by error kind (conflict, forbidden, not_found, invalid, throttled, server_error, connection, decode, auth, other)",
            m.failures.clone(),
        );
        m.registry.register(
            "stream_condition",
            "1 for the current status of each condition of a BinlogStream (one series per status: True, False, Unknown); leader only",
            m.stream_condition.clone(),
        );
        m.registry.register(
            "streams",
            "BinlogStreams by condition and status; leader only",
            m.streams_by_condition.clone(),
        );
        m.registry.register(
            "stream_paused",
            "1 while a BinlogStream has spec.paused: true; leader only",
            m.stream_paused.clone(),
        );
        m.registry.register(
            "publisher_restarts",
            "Container restarts of a BinlogStream's publisher pods, as their status counts them (resets when a pod is replaced); leader only",
            m.publisher_restarts.clone(),
        );
        m
    }
}

impl OperatorMetrics {
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
        self.leader_gauge.set(i64::from(leader));
        if !leader {
            // A standby reports nothing per stream: the new leader does, and two replicas
            // with old and new views would double every count.
            self.lock_streams().clear();
        }
    }

    fn lock_streams(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), StreamObservation>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what the last reconcile of `namespace/name` found.
    pub fn observe_stream(&self, namespace: &str, name: &str, seen: StreamObservation) {
        self.lock_streams()
            .insert((namespace.to_string(), name.to_string()), seen);
    }

    /// Drops a stream that no longer exists.
    pub fn forget_stream(&self, namespace: &str, name: &str) {
        self.lock_streams()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Rebuilds the per-stream gauges from the observations.
    fn refresh_streams(&self, streams: &BTreeMap<(String, String), StreamObservation>) {
        self.stream_condition.clear();
        self.streams_by_condition.clear();
        self.stream_paused.clear();
        self.publisher_restarts.clear();
        for ((namespace, binlogstream), seen) in streams.iter() {
            let stream = StreamLabels {
                namespace: namespace.clone(),
                binlogstream: binlogstream.clone(),
            };
            self.stream_paused
                .get_or_create(&stream)
                .set(i64::from(seen.paused));
            self.publisher_restarts
                .get_or_create(&stream)
                .set(seen.restarts);
            for (condition, current) in &seen.conditions {
                for status in STATUSES {
                    let on = i64::from(current == status);
                    self.stream_condition
                        .get_or_create(&StreamConditionLabels {
                            namespace: namespace.clone(),
                            binlogstream: binlogstream.clone(),
                            condition: condition.clone(),
                            status: status.into(),
                        })
                        .set(on);
                    self.streams_by_condition
                        .get_or_create(&ConditionLabels {
                            condition: condition.clone(),
                            status: status.into(),
                        })
                        .inc_by(on);
                }
            }
        }
    }

    pub fn render(&self) -> String {
        // Held until encoded: a concurrent scrape must not clear the gauges half-way.
        let streams = self.lock_streams();
        self.refresh_streams(&streams);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        drop(streams);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(conditions: &[(&str, &str)], paused: bool, restarts: i64) -> StreamObservation {
        StreamObservation {
            conditions: conditions
                .iter()
                .map(|(c, s)| (c.to_string(), s.to_string()))
                .collect(),
            paused,
            restarts,
        }
    }

    fn has(out: &str, line: &str) -> bool {
        out.lines().any(|l| l == line)
    }

    #[test]
    fn every_error_kind_is_exported_from_the_start() {
        let out = OperatorMetrics::default().render();
        for kind in ERROR_KINDS {
            let line =
                format!("binlogstream_operator_reconcile_failures_total{{error=\"{kind}\"}} 0");
            assert!(has(&out, &line), "missing {line} in\n{out}");
        }
    }

    #[test]
    fn conditions_are_exported_per_stream_and_counted() {
        let m = OperatorMetrics::default();
        m.set_leader(true);
        m.observe_stream(
            "shop",
            "a",
            seen(&[("Ready", "True"), ("Lagging", "False")], false, 0),
        );
        m.observe_stream(
            "shop",
            "b",
            seen(&[("Ready", "False"), ("Lagging", "False")], true, 3),
        );
        m.observe_stream(
            "web",
            "a",
            seen(&[("Ready", "True"), ("Lagging", "Unknown")], false, 1),
        );
        let out = m.render();
        for line in [
            r#"binlogstream_operator_stream_condition{namespace="shop",binlogstream="a",condition="Ready",status="True"} 1"#,
            r#"binlogstream_operator_stream_condition{namespace="shop",binlogstream="a",condition="Ready",status="False"} 0"#,
            r#"binlogstream_operator_stream_condition{namespace="shop",binlogstream="a",condition="Ready",status="Unknown"} 0"#,
            r#"binlogstream_operator_stream_condition{namespace="shop",binlogstream="b",condition="Ready",status="False"} 1"#,
            r#"binlogstream_operator_streams{condition="Ready",status="True"} 2"#,
            r#"binlogstream_operator_streams{condition="Ready",status="False"} 1"#,
            r#"binlogstream_operator_streams{condition="Lagging",status="False"} 2"#,
            r#"binlogstream_operator_streams{condition="Lagging",status="Unknown"} 1"#,
            r#"binlogstream_operator_streams{condition="Lagging",status="True"} 0"#,
            r#"binlogstream_operator_stream_paused{namespace="shop",binlogstream="b"} 1"#,
            r#"binlogstream_operator_stream_paused{namespace="shop",binlogstream="a"} 0"#,
            r#"binlogstream_operator_publisher_restarts{namespace="shop",binlogstream="b"} 3"#,
            r#"binlogstream_operator_publisher_restarts{namespace="web",binlogstream="a"} 1"#,
        ] {
            assert!(has(&out, line), "missing {line} in\n{out}");
        }
    }

    #[test]
    fn a_new_status_replaces_the_old_and_a_forgotten_stream_disappears() {
        let m = OperatorMetrics::default();
        m.observe_stream("shop", "a", seen(&[("Ready", "False")], false, 0));
        m.observe_stream("shop", "a", seen(&[("Ready", "True")], false, 0));
        m.observe_stream("shop", "gone", seen(&[("Ready", "True")], false, 0));
        let out = m.render();
        assert!(
            has(
                &out,
                r#"binlogstream_operator_stream_condition{namespace="shop",binlogstream="a",condition="Ready",status="True"} 1"#
            ),
            "{out}"
        );
        assert!(
            has(
                &out,
                r#"binlogstream_operator_streams{condition="Ready",status="True"} 2"#
            ),
            "{out}"
        );
        m.forget_stream("shop", "gone");
        let out = m.render();
        assert!(!out.contains(r#"binlogstream="gone""#), "{out}");
        assert!(
            has(
                &out,
                r#"binlogstream_operator_streams{condition="Ready",status="True"} 1"#
            ),
            "{out}"
        );
        assert!(
            has(
                &out,
                r#"binlogstream_operator_streams{condition="Ready",status="False"} 0"#
            ),
            "{out}"
        );
    }

    #[test]
    fn a_replica_that_loses_the_lease_reports_no_stream() {
        let m = OperatorMetrics::default();
        m.set_leader(true);
        m.observe_stream("shop", "a", seen(&[("Ready", "True")], false, 0));
        assert!(m
            .render()
            .contains("binlogstream_operator_stream_condition{"));
        m.set_leader(false);
        let out = m.render();
        assert!(
            !out.contains("binlogstream_operator_stream_condition{"),
            "{out}"
        );
        assert!(has(&out, "binlogstream_operator_leader 0"), "{out}");
    }
}
