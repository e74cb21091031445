//! The `BinlogStream` resource (group `cdc.binlogstream.io`, version `v1alpha1`).
//!
//! The spec is the user's; the status is written by two parties under their own field
//! managers: the operator (conditions, observedGeneration, the publisher pod) and the
//! publisher (checkpoint, lag, counters, its own state, the source's binlog files). Neither
//! writes the other's fields.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ResourceRequirements, Toleration},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "cdc.binlogstream.io";
pub const VERSION: &str = "v1alpha1";
/// Field manager of the operator for the objects it owns.
pub const OPERATOR_MANAGER: &str = "binlogstream-operator";
/// Field manager of the operator's status writes. Kubernetes 1.20 needs a status apply to
/// use a manager name never used for the main object.
pub const OPERATOR_STATUS_MANAGER: &str = "binlogstream-operator-status";
/// Field manager of the publisher's status writes (checkpoint and its report).
pub const PUBLISHER_STATUS_MANAGER: &str = "binlogstream-publisher-status";

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cdc.binlogstream.io",
    version = "v1alpha1",
    kind = "BinlogStream",
    namespaced,
    crates(kube_core = "::kube_core"),
    shortname = "bls",
    status = "BinlogStreamStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source.host"}"#,
    printcolumn = r#"{"name":"Stream","type":"string","jsonPath":".spec.target.stream"}"#,
    printcolumn = r#"{"name":"Position","type":"string","jsonPath":".status.checkpoint.display"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.lagSeconds"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Lagging","type":"string","jsonPath":".status.conditions[?(@.type==\"Lagging\")].status"}"#,
    printcolumn = r#"{"name":"Degraded","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].status"}"#,
    printcolumn = r#"{"name":"Snapshot","type":"string","jsonPath":".status.snapshot.summary"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BinlogStreamSpec {
    /// The MySQL or MariaDB server to read, as a replica.
    pub source: SourceSpec,
    /// Which tables to capture.
    #[serde(default)]
    pub tables: TablesSpec,
    /// The Kinesis stream to write.
    pub target: TargetSpec,
    /// Where to begin when no checkpoint exists: `latest` (default), `earliest` (the oldest
    /// binlog the server keeps), `snapshot` (every existing row of the captured tables, then
    /// the changes from `latest` on), `FILE:POS`, or `gtid:D-S-N[,...]` (MariaDB). Ignored once
    /// a checkpoint is in the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(latest|earliest|snapshot|gtid:\S+|\S+:[0-9]+)$"))]
    pub start: Option<String>,
    #[serde(default)]
    pub output: OutputSpec,
    #[serde(default)]
    pub lag: LagSpec,
    #[serde(default)]
    pub publisher: PublisherSpec,
    /// `true` stops the publisher: it drains, stores its final checkpoint and exits, and the
    /// stream stays `Ready=False` (reason `Paused`) until this is `false` again, when a new
    /// publisher resumes exactly at that checkpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// An on-demand snapshot of some tables of the running stream, run once per `requestId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRequestSpec>,
    /// Move the checkpoint once per `requestId`: the publisher is stopped, the checkpoint
    /// moved, the publisher started again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_request: Option<CheckpointRequestSpec>,
}

/// `spec.snapshot`: re-snapshot these tables once (their existing rows are published again,
/// interleaved with the stream); completion is recorded in `status.snapshotRequest` and as an
/// Event, and a completed id is never run again.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRequestSpec {
    /// Names the request (1-63 of `A-Za-z0-9._-`); a new id asks for a new snapshot.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"))]
    pub request_id: String,
    /// `schema.table` names (no wildcards), each captured by `spec.tables`.
    #[schemars(length(min = 1))]
    #[schemars(inner(regex(pattern = r"^[^.\s*,]+\.[^.\s*,]+$")))]
    pub tables: Vec<String>,
}

/// `spec.checkpointRequest`: where the publisher should continue from, applied once per
/// `requestId`. Backward (a rewind: changes after `to` are published again) is applied as
/// asked; forward (a skip: changes between the checkpoint and `to` are never published)
/// needs `acknowledgeSkip: true`, otherwise nothing changes and Ready is False with reason
/// `SkipNotAcknowledged`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRequestSpec {
    /// Names the request (1-63 of `A-Za-z0-9._-`); a new id asks for a new move.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"))]
    pub request_id: String,
    /// `FILE:POS` (a transaction boundary), `gtid:SET` (MariaDB `D-S-N,...` or MySQL
    /// `UUID:N-M,...`), `latest` (the binlog's current end: a skip) or `snapshot` (the current
    /// end, after publishing every existing row again: a skip for deletes in between).
    #[schemars(regex(pattern = r"^(latest|snapshot|gtid:\S+|[^:\s]+:[0-9]+)$"))]
    pub to: String,
    /// Required for a move forward: the changes skipped are lost to consumers on purpose.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledge_skip: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port (1-65535).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
    #[schemars(length(min = 1, max = 80))]
    pub user: String,
    /// Secret key holding the password.
    pub password_secret_ref: SecretKeyRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Replica server id, unique among the source's replicas. Default: derived from the
    /// resource's UID, so two streams never share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295i64))]
    pub server_id: Option<i64>,
}

fn default_port() -> i64 {
    3306
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret in the resource's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// TLS to the source; the fields map onto the publisher's `--source-tls*` options.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `disabled` (default), `required` (encrypted, certificate not checked) or
    /// `verify-identity` (certificate must chain to `ca`, or to the public web roots without
    /// it, and name the host or `serverName`).
    #[serde(default)]
    pub mode: TlsMode,
    /// CA bundle (PEM) the server certificate must chain to; only with `verify-identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaBundleRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the client certificate for
    /// accounts created with `REQUIRE X509`/`SUBJECT`/`ISSUER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_name: Option<String>,
    /// Name the server certificate must carry when it is not `host` (an IP, a tunnel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// Where the CA bundle is: exactly one of `secretName` and `configMapName`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["secretName"]}, {"required": ["configMapName"]}]))]
pub struct CaBundleRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A ConfigMap suits public bundles (e.g. AWS's RDS `global-bundle.pem`) and
    /// trust-manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// Key holding the PEM bundle.
    #[serde(default = "default_ca_key")]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

pub use crate::tls::TlsMode;

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TablesSpec {
    /// `schema.table` patterns to capture (`*` wildcard); empty: every table.
    #[serde(default)]
    #[schemars(inner(regex(pattern = r"^[^.\s]+\.[^.\s]+$")))]
    pub include: Vec<String>,
    /// `schema.table` patterns never captured.
    #[serde(default)]
    #[schemars(inner(regex(pattern = r"^[^.\s]+\.[^.\s]+$")))]
    pub exclude: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Kinesis stream name (1-128 of `a-zA-Z0-9_.-`).
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_.-]{1,128}$"))]
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override (VPC endpoint, emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `primary-key` (default), `table`, or `constant:VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(primary-key|table|constant:.+)$"))]
    pub partition_key: Option<String>,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and optionally
    /// `AWS_SESSION_TOKEN`). Without it the pod's own AWS identity is used (IRSA: annotate
    /// the service account through `spec.publisher.serviceAccountAnnotations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretNameRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretNameRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Add the `position` key to every record.
    #[serde(default)]
    pub position: bool,
    /// Pack rows into KPL aggregated records (consumers need a de-aggregating reader).
    #[serde(default)]
    pub aggregate: bool,
    /// Rows over Kinesis's 1 MiB limit: `fail` (default), `skip`, or `key-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(fail|skip|key-only)$"))]
    pub oversize: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LagSpec {
    /// `Lagging` becomes True when the lag exceeds this many seconds.
    #[serde(default = "default_lag")]
    #[schemars(range(min = 1))]
    pub threshold_seconds: i64,
}

fn default_lag() -> i64 {
    60
}

impl Default for LagSpec {
    fn default() -> Self {
        LagSpec {
            threshold_seconds: default_lag(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublisherSpec {
    /// Publisher image; defaults to the operator's configured image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Annotations for the publisher's service account (e.g. `eks.amazonaws.com/role-arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinlogStreamStatus {
    /// Operator: the generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Operator: the current publisher pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_pod: Option<String>,
    /// Operator: Ready, Lagging, Degraded, BinlogAtRisk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Publisher: where a restarted publisher resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStatus>,
    /// Publisher: now minus the timestamp of the newest acknowledged event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// Publisher: records acknowledged by Kinesis since the publisher started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_published: Option<i64>,
    /// Publisher: its own state and last problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherReport>,
    /// Publisher: the binlog files the source keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_binlogs: Option<SourceBinlogs>,
    /// Publisher: the running or last snapshot, with per-table progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStatus>,
    /// Operator: what became of `spec.snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_request: Option<SnapshotRequestStatus>,
    /// Operator: what became of `spec.checkpointRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_request: Option<CheckpointRequestStatus>,
    /// Operator: the checkpoint this stream took over from a deleted stream of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_checkpoint: Option<RestoredCheckpoint>,
}

/// A checkpoint kept when a BinlogStream was deleted and handed to the one created next
/// under the same name (README, "How the checkpoint survives").
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredCheckpoint {
    /// `file:position` (and the GTID set when known) the stream resumed from.
    pub position: String,
    /// The ConfigMap that held it (removed once the checkpoint is in this status).
    pub config_map: String,
    /// UID of the deleted BinlogStream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_uid: Option<String>,
    /// RFC 3339: when the deleted stream's checkpoint was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_at: Option<String>,
    /// RFC 3339: when it was restored here.
    pub time: String,
}

/// The snapshot as the publisher reports it (written with its checkpoints, no extra writes).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// `Running` or `Done`.
    pub state: String,
    /// `initial` (`spec.start: snapshot`) or the `spec.snapshot.requestId`.
    pub request_id: String,
    /// `consistent-snapshot` or `watermark`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Rows published by this snapshot.
    #[serde(default)]
    pub rows: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<i64>,
    /// Seconds left by the estimated row counts, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// For the printer column: `Running 2/5 tables 12345 rows`, `Done 5 tables 98765 rows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<SnapshotTableStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTableStatus {
    /// `schema.table`.
    pub table: String,
    /// `pending`, `running`, `done` or `skipped` (dropped before or while being read).
    pub state: String,
    /// `PRIMARY`, a unique key's name, or `one pass` (no usable key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub rows_done: i64,
    /// information_schema.TABLES.TABLE_ROWS when the table started (an estimate).
    #[serde(default)]
    pub rows_estimated: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// Snapshot progress the publisher resumes from (part of the checkpoint).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotCheckpointStatus {
    pub request_id: String,
    /// Tables still to read, in order; the first is the one being read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// The key of the last delivered row of the first pending table: a JSON array, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<String>,
    #[serde(default)]
    pub table_rows: i64,
    #[serde(default)]
    pub tables_done: i64,
    /// Request ids completed (the last 16), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRequestStatus {
    pub request_id: String,
    /// `Requested` (passed to the publisher), `Running`, or `Completed`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// RFC 3339, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRequestStatus {
    pub request_id: String,
    /// `Refused` (nothing changed; see message), `Stopping` (waiting for the publisher to
    /// stop), `Applying` (writing the checkpoint) or `Applied`.
    pub phase: String,
    /// `spec.checkpointRequest.to` as applied.
    pub to: String,
    /// `Rewind`, `SkipAhead` or `Unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The checkpoint before the move (`file:position`, and its GTID set when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_gtid_set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339, when the phase was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    pub file: String,
    pub position: i64,
    /// Rows of the transaction starting at file:position already delivered.
    #[serde(default)]
    pub rows_in_transaction: i64,
    /// GTID of that transaction when rowsInTransaction > 0: a resume skips those rows only
    /// if the first transaction it reads is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_gtid: Option<String>,
    /// Inside that transaction, every ROWS event before number `event` was delivered and
    /// the first `rows` rows of event `event`: independent of the table filter, so a resume
    /// under another `spec.tables` skips no row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_mark: Option<EventMarkStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<String>,
    /// Event timestamp (RFC 3339) of the last delivered event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// When the publisher wrote this checkpoint (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<String>,
    /// `file:position` for printer columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// The server the position was read from. A publisher pointed at another server resumes
    /// from this checkpoint only by GTID; a bare `file:position` is refused there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CheckpointSourceStatus>,
    /// Progress of a snapshot when one ran or runs (every chunk it counts as done was
    /// delivered before this position), and the snapshot request ids completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotCheckpointStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSourceStatus {
    /// The source's `@@server_id`.
    pub server_id: i64,
    /// The source's `@@server_uuid` (MySQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uuid: Option<String>,
    /// The address the publisher was connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublisherReport {
    /// `Running`, `Retrying` (a transient problem, being retried), or `Failed` (stopped).
    pub state: String,
    /// One CamelCase word: `SourceUnreachable`, `KinesisFailing`, `OversizeRow`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When this state was reported (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct EventMarkStatus {
    pub event: i64,
    pub rows: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceBinlogs {
    pub oldest: String,
    pub newest: String,
    pub count: i64,
}

impl BinlogStream {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}
