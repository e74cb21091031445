//! The checkpoint in the status of the publisher's own BinlogStream, for publishers run by
//! the operator. The publisher owns `status.checkpoint`, `lagSeconds`, `recordsPublished`,
//! `publisher` and `sourceBinlogs`, applied with server-side apply under its own field
//! manager; the operator's conditions are never touched.
//!
//! One applier writes all of the publisher's fields every time: with server-side apply, a
//! manager that leaves out a field it owned removes it.

use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::{
    api::{Api, Patch, PatchParams},
    Client,
};
use operator::crd::{
    BinlogStream, CheckpointStatus, PublisherReport, SourceBinlogs, PUBLISHER_STATUS_MANAGER,
};
use serde_json::json;

use super::{CheckpointError, CheckpointStore};
use crate::{metrics::Metrics, position::Checkpoint};

#[derive(Default)]
struct Reported {
    /// Nothing is written before the stored checkpoint was read: an apply without the
    /// checkpoint field would delete it.
    loaded: bool,
    checkpoint: Option<Checkpoint>,
    report: Option<PublisherReport>,
    binlogs: Option<SourceBinlogs>,
}

/// Shared by the checkpoint store (pipeline) and the periodic status reporter.
#[derive(Clone)]
pub struct StatusWriter {
    api: Api<BinlogStream>,
    name: String,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<Reported>>,
    /// Serialises the writes themselves.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

fn rfc3339(ts: i64) -> Option<String> {
    Timestamp::from_second(ts).ok().map(|t| t.to_string())
}

fn err(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Other(format!("BinlogStream status: {e}"))
}

impl StatusWriter {
    /// `resource` is `NAMESPACE/NAME`.
    pub async fn new(
        resource: &str,
        metrics: Arc<Metrics>,
    ) -> Result<StatusWriter, CheckpointError> {
        let (ns, name) = resource
            .split_once('/')
            .filter(|(n, m)| !n.is_empty() && !m.is_empty())
            .ok_or_else(|| err(format!("`{resource}` is not NAMESPACE/NAME")))?;
        let client = Client::try_default().await.map_err(err)?;
        Ok(StatusWriter::with_client(client, ns, name, metrics))
    }

    pub fn with_client(
        client: Client,
        namespace: &str,
        name: &str,
        metrics: Arc<Metrics>,
    ) -> StatusWriter {
        StatusWriter {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            metrics,
            state: Arc::new(Mutex::new(Reported::default())),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn set_report(&self, state: &str, reason: Option<&str>, message: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            let same = s.report.as_ref().is_some_and(|r| {
                r.state == state && r.reason.as_deref() == reason && r.message == message
            });
            if !same {
                s.report = Some(PublisherReport {
                    state: state.to_string(),
                    reason: reason.map(str::to_string),
                    message,
                    time: Some(Timestamp::now().to_string()),
                });
            }
        }
    }

    pub fn set_binlogs(&self, oldest: &str, newest: &str, count: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.binlogs = Some(SourceBinlogs {
                oldest: oldest.to_string(),
                newest: newest.to_string(),
                count: count as i64,
            });
        }
    }

    /// Writes everything the publisher owns in the status.
    pub async fn write(&self) -> Result<(), CheckpointError> {
        let _guard = self.write_lock.lock().await;
        let (checkpoint, report, binlogs) = {
            let s = self.state.lock().map_err(err)?;
            if !s.loaded {
                return Ok(());
            }
            (s.checkpoint.clone(), s.report.clone(), s.binlogs.clone())
        };
        let checkpoint = checkpoint.map(|cp| CheckpointStatus {
            display: Some(format!("{}:{}", cp.file, cp.pos)),
            file: cp.file,
            position: cp.pos as i64,
            rows_in_transaction: cp.rows_done as i64,
            transaction_gtid: cp.tx_gtid,
            // One status field for both flavors: the text tells them apart on load.
            gtid_set: cp
                .gtid_state
                .map(|g| g.to_string())
                .or_else(|| cp.mysql_gtid_set.map(|g| g.to_string())),
            event_time: (cp.event_ts > 0)
                .then(|| rfc3339(i64::from(cp.event_ts)))
                .flatten(),
            written_at: Some(Timestamp::now().to_string()),
        });
        let mut status = serde_json::Map::new();
        if let Some(cp) = checkpoint {
            status.insert("checkpoint".into(), serde_json::to_value(cp).map_err(err)?);
        }
        if let Some(lag) = self.metrics.lag_seconds() {
            status.insert("lagSeconds".into(), json!(lag));
        }
        status.insert(
            "recordsPublished".into(),
            json!(self.metrics.records_published.get()),
        );
        if let Some(r) = report {
            status.insert("publisher".into(), serde_json::to_value(r).map_err(err)?);
        }
        if let Some(b) = binlogs {
            status.insert(
                "sourceBinlogs".into(),
                serde_json::to_value(b).map_err(err)?,
            );
        }
        let patch = json!({
            "apiVersion": "cdc.binlogstream.io/v1alpha1",
            "kind": "BinlogStream",
            "status": status,
        });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(PUBLISHER_STATUS_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .map_err(err)?;
        Ok(())
    }
}

pub struct KubeCheckpoint {
    pub writer: StatusWriter,
}

impl CheckpointStore for KubeCheckpoint {
    async fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        let obj = self
            .writer
            .api
            .get_status(&self.writer.name)
            .await
            .map_err(err)?;
        let Some(cp) = obj.status.and_then(|s| s.checkpoint) else {
            if let Ok(mut s) = self.writer.state.lock() {
                s.loaded = true;
            }
            return Ok(None);
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: format!("{}.status.checkpoint.gtidSet", self.writer.name),
            reason,
        };
        let (gtid_state, mysql_gtid_set) = match cp.gtid_set.as_deref() {
            // A MariaDB GTID (D-S-N) never holds a `:`; a MySQL set always does.
            Some(g) if g.contains(':') => {
                (None, Some(g.parse().map_err(|e| corrupt(format!("{e}")))?))
            }
            Some(g) if !g.is_empty() => {
                (Some(g.parse().map_err(|e| corrupt(format!("{e}")))?), None)
            }
            _ => (None, None),
        };
        let event_ts = cp
            .event_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.as_second() as u32)
            .unwrap_or(0);
        let restored = Checkpoint {
            file: cp.file,
            pos: u64::try_from(cp.position).map_err(|_| CheckpointError::Corrupt {
                path: format!("{}.status.checkpoint.position", self.writer.name),
                reason: "negative".into(),
            })?,
            rows_done: u64::try_from(cp.rows_in_transaction).unwrap_or(0),
            tx_gtid: cp.transaction_gtid.filter(|g| !g.is_empty()),
            gtid_state,
            mysql_gtid_set,
            event_mark: None,
            event_ts,
            snapshot: None,
        };
        if let Ok(mut s) = self.writer.state.lock() {
            s.checkpoint = Some(restored.clone());
            s.loaded = true;
        }
        Ok(Some(restored))
    }

    async fn save(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        if let Ok(mut s) = self.writer.state.lock() {
            s.checkpoint = Some(cp.clone());
        }
        self.writer.write().await
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{json, Value};

    use super::*;

    fn object(status: Value) -> Value {
        json!({
            "apiVersion": "cdc.binlogstream.io/v1alpha1", "kind": "BinlogStream",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"source": {"host": "db", "user": "repl", "passwordSecretRef": {"name": "pw", "key": "password"}},
                     "target": {"stream": "s"}},
            "status": status
        })
    }

    #[tokio::test]
    async fn loads_and_saves_only_the_publishers_fields() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let metrics = Arc::new(Metrics::new());
        let mut store = KubeCheckpoint {
            writer: StatusWriter::with_client(client, "shop", "orders", metrics),
        };
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("load");
            assert_eq!(req.method(), "GET");
            assert_eq!(
                req.uri().path(),
                "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status"
            );
            let status = json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "Streaming", "message": "",
                                "lastTransitionTime": "2026-11-24T00:00:00Z"}],
                "checkpoint": {"file": "binlog.000007", "position": 1234, "rowsInTransaction": 3,
                               "transactionGtid": "0-1-56",
                               "gtidSet": "0-1-55", "eventTime": "2026-11-24T10:00:00Z"}
            });
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(status)).expect("json"),
            )));

            let (req, send) = handle.next_request().await.expect("save");
            assert_eq!(req.method(), "PATCH");
            let uri = req.uri().to_string();
            assert!(
                uri.contains("fieldManager=binlogstream-publisher-status")
                    && uri.contains("force=true"),
                "{uri}"
            );
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
                    .expect("json");
            let st = &body["status"];
            assert_eq!(st["checkpoint"]["file"], "binlog.000008");
            assert_eq!(st["checkpoint"]["position"], 4);
            assert_eq!(st["checkpoint"]["rowsInTransaction"], 2);
            assert_eq!(st["checkpoint"]["display"], "binlog.000008:4");
            assert_eq!(st["checkpoint"]["transactionGtid"], "0-1-56");
            assert_eq!(st["recordsPublished"], 0);
            assert!(
                st.get("conditions").is_none(),
                "the operator's fields are never written"
            );
            assert!(st.get("observedGeneration").is_none());
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&object(st.clone())).expect("json"),
            )));
        });
        // Before the load nothing may be written: it would drop the stored checkpoint.
        store.writer.set_report("Starting", None, None);
        store.writer.write().await.expect("a no-op");
        let cp = store.load().await.expect("load").expect("a checkpoint");
        assert_eq!(
            (cp.file.as_str(), cp.pos, cp.rows_done),
            ("binlog.000007", 1234, 3)
        );
        assert_eq!(
            cp.gtid_state.map(|g| g.to_string()).as_deref(),
            Some("0-1-55")
        );
        assert_eq!(cp.event_ts, 1_795_514_400);
        assert_eq!(cp.tx_gtid.as_deref(), Some("0-1-56"));
        store
            .save(&Checkpoint {
                file: "binlog.000008".into(),
                pos: 4,
                rows_done: 2,
                tx_gtid: Some("0-1-56".into()),
                gtid_state: None,
                mysql_gtid_set: None,
                event_mark: None,
                event_ts: 0,
                snapshot: None,
            })
            .await
            .expect("save");
        server.await.expect("fake API server");
    }
}
