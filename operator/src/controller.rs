//! The reconcile loop: applies a BinlogStream's children with server-side apply, reads its
//! publisher pod, and writes conditions and events.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Pod, Secret},
    },
    jiff::Timestamp,
};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions},
    runtime::{
        controller::{self, Action, Controller},
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
    Client, Resource, ResourceExt,
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{
    cache::{cached, Caches},
    crd::{
        BinlogStream, BinlogStreamStatus, CheckpointRequestStatus, RestoredCheckpoint,
        OPERATOR_MANAGER, OPERATOR_STATUS_MANAGER,
    },
    metrics::OperatorMetrics,
    reconcile::{
        build::{self, BuildConfig},
        conditions::{self, Blocked, Inputs, PodState},
        requests::{self, Decision},
        retain::{self, Retained},
        tenancy::{TenancyPolicy, SECRET_OPT_IN_LABEL},
        validate::{validate, Invalid},
    },
};

/// Field manager of the operator's checkpoint moves (`spec.checkpointRequest`): a merge patch,
/// not an apply, so the operator never comes to own the checkpoint (an apply would make its
/// next status apply, which leaves the checkpoint out, delete it) and the publisher's
/// force-apply takes the fields back with its next write.
pub const OPERATOR_CHECKPOINT_MANAGER: &str = "binlogstream-operator-checkpoint";

/// How often a stream whose checkpoint request waits for the publisher to stop is looked at.
const REQUEST_POLL: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
}

impl Error {
    /// One of `metrics::ERROR_KINDS`: what an on-call engineer acts on differently.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) => match s.code {
                409 => "conflict",
                401 | 403 => "forbidden",
                404 | 410 => "not_found",
                400 | 422 => "invalid",
                429 => "throttled",
                500..=599 => "server_error",
                _ => "other",
            },
            Error::Kube(
                kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_),
            ) => "connection",
            Error::Kube(kube::Error::SerdeError(_) | kube::Error::ReadEvents(_)) => "decode",
            Error::Kube(kube::Error::Auth(_)) => "auth",
            Error::Kube(_) => "other",
        }
    }
}

/// How often a stream is looked at when nothing changes: often enough to notice a silent
/// publisher (`PublisherSilent`) and a pod stuck in a state no watch event reports.
pub const RESYNC: Duration = Duration::from_secs(60);

/// A valid Secret check is trusted this long for an unchanged spec.
const SECRETS_RECHECK: Duration = Duration::from_secs(600);

/// What the reconciler last did for one stream, so unchanged work is not repeated.
#[derive(Default)]
struct Memory {
    /// Per child kind: the hash of the desired object last applied and the version the API
    /// server gave it (generation for Deployments, resourceVersion otherwise).
    applied: HashMap<&'static str, (u64, String)>,
    /// Generation whose Secrets were found, and when.
    secrets_ok: Option<(Option<i64>, Instant)>,
    /// The snapshot request whose completion Event was recorded (the cache may still show
    /// the status from before that reconcile's write).
    snapshot_completion_noted: Option<String>,
    /// UID of the object already looked up for a retained checkpoint.
    retained_checked: Option<String>,
}

pub struct Context {
    pub client: Client,
    pub build: BuildConfig,
    pub recorder: Recorder,
    pub metrics: Arc<OperatorMetrics>,
    /// Consecutive failures per object, for the exponential requeue.
    pub failures: Mutex<HashMap<String, u32>>,
    pub caches: Caches,
    pub tenancy: TenancyPolicy,
    /// Namespaces watched; empty: all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once (bounds API load when many streams change together).
    pub concurrency: u16,
    memory: Mutex<HashMap<String, Memory>>,
}

impl Context {
    pub fn new(client: Client, build: BuildConfig, metrics: Arc<OperatorMetrics>) -> Context {
        let reporter = Reporter {
            controller: "binlogstream-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            build,
            metrics,
            failures: Mutex::new(HashMap::new()),
            caches: Caches::empty(),
            tenancy: TenancyPolicy::default(),
            namespaces: Vec::new(),
            concurrency: 4,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// A context for one leadership term: fresh caches, and nothing remembered, so a new
    /// leader re-applies every child once.
    fn for_term(&self, caches: Caches) -> Context {
        Context {
            client: self.client.clone(),
            build: self.build.clone(),
            recorder: self.recorder.clone(),
            metrics: self.metrics.clone(),
            failures: Mutex::new(HashMap::new()),
            caches,
            tenancy: self.tenancy.clone(),
            namespaces: self.namespaces.clone(),
            concurrency: self.concurrency,
            memory: Mutex::new(HashMap::new()),
        }
    }

    fn remembered<T>(&self, key: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut map = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(key.to_string()).or_default())
    }

    fn forget(&self, key: &str) {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

fn key(bls: &BinlogStream) -> String {
    format!("{}/{}", bls.namespace().unwrap_or_default(), bls.name_any())
}

/// Secrets the spec names must exist and carry the owner's opt-in label, and the CA
/// ConfigMap must hold its key. Secrets are read as metadata only: their values never pass
/// through the operator (kubelet mounts them into the publisher); a missing key shows up
/// from the pod (`FailedMount`).
async fn check_secrets(client: &Client, bls: &BinlogStream) -> Result<Result<(), Invalid>, Error> {
    let ns = bls.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut wanted: Vec<(String, String)> = vec![(
        "spec.source.passwordSecretRef".into(),
        bls.spec.source.password_secret_ref.name.clone(),
    )];
    let tls = bls.spec.source.tls.as_ref();
    if let Some(name) = tls
        .and_then(|t| t.ca.as_ref())
        .and_then(|c| c.secret_name.as_ref())
    {
        wanted.push(("spec.source.tls.ca".into(), name.clone()));
    }
    if let Some(name) = tls.and_then(|t| t.client_cert_secret_name.as_ref()) {
        wanted.push(("spec.source.tls.clientCertSecretName".into(), name.clone()));
    }
    if let Some(c) = &bls.spec.target.credentials_secret_ref {
        wanted.push(("spec.target.credentialsSecretRef".into(), c.name.clone()));
    }
    for (field, name) in wanted {
        let Some(secret) = api.get_metadata_opt(&name).await.map_err(Error::Kube)? else {
            return Ok(Err(Invalid {
                field,
                message: format!("secret `{name}` does not exist in namespace `{ns}`"),
            }));
        };
        let opted_in = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SECRET_OPT_IN_LABEL))
            .is_some_and(|v| v == "true");
        if !opted_in {
            return Ok(Err(Invalid {
                field,
                message: format!(
                    "secret `{name}` is not labelled {SECRET_OPT_IN_LABEL}=true; its owner must opt it in before a BinlogStream may use it (kubectl label secret {name} {SECRET_OPT_IN_LABEL}=true)"
                ),
            }));
        }
    }
    if let Some(ca) = tls.and_then(|t| t.ca.as_ref()) {
        if let Some(name) = &ca.config_map_name {
            let field = "spec.source.tls.ca".to_string();
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let Some(map) = maps.get_opt(name).await.map_err(Error::Kube)? else {
                return Ok(Err(Invalid {
                    field,
                    message: format!("config map `{name}` does not exist in namespace `{ns}`"),
                }));
            };
            let in_data = map.data.is_some_and(|d| d.contains_key(&ca.key));
            let in_binary = map.binary_data.is_some_and(|d| d.contains_key(&ca.key));
            if !in_data && !in_binary {
                return Ok(Err(Invalid {
                    field,
                    message: format!("config map `{name}` has no key `{}`", ca.key),
                }));
            }
        }
    }
    Ok(Ok(()))
}

/// Applies one child; returns the object as the API server stored it.
async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut value =
        serde_json::to_value(obj).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    api.patch(
        &name,
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(Error::Kube)
}

/// An apply the API server refused for what it is (invalid, forbidden by RBAC or admission,
/// over a quota): retrying the same object cannot help, so the user must see it. Other
/// errors (5xx, timeouts) are retried with backoff.
fn refused(e: &Error) -> Option<String> {
    match e {
        Error::Kube(kube::Error::Api(resp))
            if (400..500).contains(&resp.code) && resp.code != 429 =>
        {
            Some(resp.message.clone())
        }
        _ => None,
    }
}

fn desired_hash<K: serde::Serialize>(obj: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(obj).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn version<K: Resource>(obj: &K, by_generation: bool) -> String {
    let m = obj.meta();
    if by_generation {
        m.generation.map(|g| g.to_string()).unwrap_or_default()
    } else {
        m.resource_version.clone().unwrap_or_default()
    }
}

/// Applies `obj` unless the same desired object was applied before and the cache still
/// holds the version that apply produced (nobody changed or deleted it since). Returns the
/// stored object when it applied.
async fn apply_if_changed<K>(
    ctx: &Context,
    key: &str,
    kind: &'static str,
    obj: &K,
    store: &Store<K>,
    by_generation: bool,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug
        + 'static,
{
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    let desired = desired_hash(obj);
    let live = cached(store, &ns, &name).map(|o| version(&*o, by_generation));
    let fresh = ctx.remembered(key, |m| {
        m.applied
            .get(kind)
            .is_some_and(|(d, v)| *d == desired && live.as_ref() == Some(v))
    });
    if fresh {
        return Ok(None);
    }
    let stored = apply(&ctx.client, &ns, obj).await?;
    let v = version(&stored, by_generation);
    ctx.remembered(key, |m| m.applied.insert(kind, (desired, v)));
    Ok(Some(stored))
}

/// Applies `obj` once per operator run and desired state, without a cache to compare with:
/// for the publisher lease, whose spec the publishers change every few seconds (a reflector
/// would wake the operator for each renewal; the apply sets metadata only, so it never
/// touches their fields).
async fn apply_once<K>(ctx: &Context, key: &str, kind: &'static str, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let desired = desired_hash(obj);
    if ctx.remembered(key, |m| {
        m.applied.get(kind).is_some_and(|(d, _)| *d == desired)
    }) {
        return Ok(());
    }
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    apply(&ctx.client, &ns, obj).await?;
    ctx.remembered(key, |m| m.applied.insert(kind, (desired, String::new())));
    Ok(())
}

/// Applies the children that changed, in order; `Ok(Err(message))` when the API server
/// refused one. Returns the Deployment as last seen (applied now, or from the cache).
async fn apply_children(
    ctx: &Context,
    bls: &BinlogStream,
) -> Result<Result<Option<Deployment>, String>, Error> {
    let k = key(bls);
    let c = &ctx.caches;
    let sa = build::service_account(bls);
    let role = build::role(bls);
    let binding = build::role_binding(bls);
    let lease = build::publisher_lease(bls);
    let deployment = build::deployment(bls, &ctx.build);
    let what = |kind: &str, name: &Option<String>| {
        format!("{kind} {}", name.as_deref().unwrap_or_default())
    };
    let refusal = |what: String, e: Error| match refused(&e) {
        Some(msg) => {
            // Forget it, so the next reconcile tries again rather than trusting a cache.
            ctx.remembered(&k, |m| m.applied.clear());
            Ok(Err(format!("the API server refused {what}: {msg}")))
        }
        None => Err(e),
    };
    if let Err(e) =
        apply_if_changed(ctx, &k, "ServiceAccount", &sa, &c.service_accounts, false).await
    {
        return refusal(what("ServiceAccount", &sa.metadata.name), e);
    }
    if let Err(e) = apply_if_changed(ctx, &k, "Role", &role, &c.roles, false).await {
        return refusal(what("Role", &role.metadata.name), e);
    }
    if let Err(e) =
        apply_if_changed(ctx, &k, "RoleBinding", &binding, &c.role_bindings, false).await
    {
        return refusal(what("RoleBinding", &binding.metadata.name), e);
    }
    if let Err(e) = apply_once(ctx, &k, "Lease", &lease).await {
        return refusal(what("Lease", &lease.metadata.name), e);
    }
    match apply_if_changed(ctx, &k, "Deployment", &deployment, &c.deployments, true).await {
        Ok(Some(d)) => Ok(Ok(Some(d))),
        Ok(None) => {
            let ns = bls.namespace().unwrap_or_default();
            let name = deployment.metadata.name.clone().unwrap_or_default();
            Ok(Ok(cached(&c.deployments, &ns, &name).map(|d| (*d).clone())))
        }
        Err(e) => refusal(what("Deployment", &deployment.metadata.name), e),
    }
}

/// How long a pod may sit in Pending before its events are read for the reason.
const STUCK_AFTER_SECS: i64 = 30;

/// A pod still Pending (containers not created) well after it was made: usually a volume
/// that cannot be mounted, which only an Event says.
pub fn stuck_creating(pod: &Pod, now: Timestamp) -> bool {
    let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    let age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| now.as_second() - t.0.as_second())
        .unwrap_or(0);
    pending && pod.metadata.deletion_timestamp.is_none() && age > STUCK_AFTER_SECS
}

/// The newest `FailedMount` Event of `pod` (a missing Secret, or a key it lacks), as a pod
/// state naming it. Read only for a stuck pod, so a healthy stream costs no request.
async fn mount_failure(client: &Client, ns: &str, pod: &Pod) -> Result<Option<PodState>, Error> {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    let fields = format!("involvedObject.kind=Pod,involvedObject.name={name}");
    let events = api
        .list(&kube::api::ListParams::default().fields(&fields))
        .await
        .map_err(Error::Kube)?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedMount"))
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
        .map(|e| PodState::Pending {
            reason: "FailedMount".into(),
            message: e.message.unwrap_or_default(),
        }))
}

/// A ReplicaSet that cannot create the pod (quota, admission policy) says so only in the
/// Deployment's `ReplicaFailure` condition: no pod exists to show it.
pub fn replica_failure(deployment: &Deployment) -> Option<PodState> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    let c = conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some(PodState::Pending {
        reason: c.reason.clone().unwrap_or_else(|| "FailedCreate".into()),
        message: c.message.clone().unwrap_or_default(),
    })
}

/// The newest publisher pod's state.
pub fn pod_state(pods: &[Pod]) -> (PodState, Option<String>) {
    let Some(pod) = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
    else {
        return (PodState::Missing, None);
    };
    let name = pod.metadata.name.clone();
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    for c in &containers {
        if let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        "last exit code {}{}",
                        t.exit_code,
                        t.message
                            .as_ref()
                            .map(|m| format!(": {}", m.trim()))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            let message = format!("{} {}", waiting.message.clone().unwrap_or_default(), last)
                .trim()
                .to_string();
            if reason == "CrashLoopBackOff" || c.restart_count > 0 {
                return (PodState::Failing { reason, message }, name);
            }
            if matches!(
                reason.as_str(),
                "ImagePullBackOff"
                    | "ErrImagePull"
                    | "CreateContainerConfigError"
                    | "InvalidImageName"
            ) {
                return (PodState::Pending { reason, message }, name);
            }
        }
    }
    match status.phase.as_deref() {
        Some("Running") => (
            PodState::Running {
                ready: containers.iter().all(|c| c.ready),
            },
            name,
        ),
        Some("Failed") => (
            PodState::Failing {
                reason: "PodFailed".into(),
                message: status.message.unwrap_or_default(),
            },
            name,
        ),
        _ => {
            let unschedulable = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            match unschedulable {
                Some(c) => (
                    PodState::Pending {
                        reason: c.reason.unwrap_or_else(|| "Unschedulable".into()),
                        message: c.message.unwrap_or_default(),
                    },
                    name,
                ),
                None => (PodState::Running { ready: false }, name),
            }
        }
    }
}

/// Container restarts of the stream's pods, as their status counts them.
pub fn restarts(pods: &[Pod]) -> i64 {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|c| i64::from(c.restart_count))
        .sum()
}

fn same_conditions(
    a: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    b: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                y.type_ == x.type_
                    && y.status == x.status
                    && y.reason == x.reason
                    && y.message == x.message
                    && y.observed_generation == x.observed_generation
            })
        })
}

/// An Event to record on the stream: (warning, reason, note, action).
type Note = (bool, String, String, String);

async fn publish_note(ctx: &Context, bls: &BinlogStream, (warning, reason, note, action): Note) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason,
        note: Some(note.chars().take(1000).collect()),
        action,
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &bls.object_ref(&())).await {
        warn!(error = %e, "could not record an event");
    }
}

/// Applies every field the operator owns in the status (omitting one would delete it).
async fn write_operator_status(
    ctx: &Context,
    bls: &BinlogStream,
    status: &BinlogStreamStatus,
) -> Result<(), Error> {
    let api: Api<BinlogStream> =
        Api::namespaced(ctx.client.clone(), &bls.namespace().unwrap_or_default());
    let mut st = json!({
        "observedGeneration": status.observed_generation,
        "publisherPod": status.publisher_pod,
        "conditions": status.conditions,
    });
    if let Some(r) = &status.snapshot_request {
        st["snapshotRequest"] = json!(r);
    }
    if let Some(r) = &status.checkpoint_request {
        st["checkpointRequest"] = json!(r);
    }
    if let Some(r) = &status.restored_checkpoint {
        st["restoredCheckpoint"] = json!(r);
    }
    let patch = json!({
        "apiVersion": "cdc.binlogstream.io/v1alpha1",
        "kind": "BinlogStream",
        "status": st,
    });
    api.patch_status(
        &bls.name_any(),
        &PatchParams::apply(OPERATOR_STATUS_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// `spec.checkpointRequest`, one step per reconcile: decide (refuse a skip without the
/// acknowledgement), stop the publisher, wait until no pod runs, record the position it
/// stopped at, move the checkpoint, record the move. Each step is recorded in
/// `status.checkpointRequest` before the next, so a restarted operator carries on where it
/// was, and a request id that reached `Applied` is never applied again. Returns true while
/// waiting for the publisher to stop.
async fn checkpoint_request_step(
    ctx: &Context,
    bls: &BinlogStream,
    status: &mut BinlogStreamStatus,
    notes: &mut Vec<Note>,
) -> Result<bool, Error> {
    let Some(req) = bls.spec.checkpoint_request.clone() else {
        return Ok(false);
    };
    let now = Timestamp::now().to_string();
    let current = requests::current_request(&bls.spec, status).cloned();
    let record = |phase: &str, cp: Option<&crate::crd::CheckpointStatus>| CheckpointRequestStatus {
        request_id: req.request_id.clone(),
        phase: phase.to_string(),
        to: req.to.clone(),
        direction: None,
        from: cp.map(requests::display),
        from_gtid_set: cp.and_then(|c| c.gtid_set.clone()),
        message: None,
        time: Some(now.clone()),
    };
    let ns = bls.namespace().unwrap_or_default();
    let api: Api<BinlogStream> = Api::namespaced(ctx.client.clone(), &ns);
    let mut current = current;
    if current
        .as_ref()
        .is_some_and(|c| c.phase == requests::STOPPING || c.phase == requests::APPLYING)
    {
        // The cache may predate this operator's own last write: a request already applied
        // must not stop the publisher again (nor move the checkpoint twice).
        let live = api.get_status(&bls.name_any()).await.map_err(Error::Kube)?;
        let live_status = live.status.unwrap_or_default();
        if let Some(l) = requests::current_request(&bls.spec, &live_status)
            .filter(|l| l.phase == requests::APPLIED)
        {
            status.checkpoint_request = Some(l.clone());
            status.checkpoint = live_status.checkpoint.clone();
            return Ok(false);
        }
        if let Some(l) = requests::current_request(&bls.spec, &live_status) {
            current = Some(l.clone());
            status.checkpoint_request = Some(l.clone());
        }
    }
    match current.as_ref().map(|c| c.phase.as_str()) {
        Some(requests::APPLIED) => return Ok(false),
        Some(requests::STOPPING) | Some(requests::APPLYING) => {}
        _ => {
            match requests::decide(&req, status.checkpoint.as_ref()) {
                Decision::Refuse { message } => {
                    let same = current.as_ref().is_some_and(|c| {
                        c.phase == requests::REFUSED && c.message.as_deref() == Some(&message)
                    });
                    if !same {
                        let mut rec = record(requests::REFUSED, status.checkpoint.as_ref());
                        rec.message = Some(message.clone());
                        status.checkpoint_request = Some(rec);
                        notes.push((
                            true,
                            requests::SKIP_NOT_ACKNOWLEDGED.into(),
                            message,
                            "RefuseCheckpointRequest".into(),
                        ));
                    }
                }
                Decision::Apply { direction } => {
                    let mut rec = record(requests::STOPPING, status.checkpoint.as_ref());
                    rec.direction = Some(direction.label().into());
                    let from = rec.from.clone().unwrap_or_else(|| "no checkpoint".into());
                    rec.message = Some(format!(
                        "stopping the publisher to move the checkpoint from {from} to {}",
                        req.to
                    ));
                    notes.push((
                        false,
                        "CheckpointRequestAccepted".into(),
                        format!(
                            "checkpointRequest `{}`: stopping the publisher to move the checkpoint from {from} to {} ({})",
                            req.request_id,
                            req.to,
                            direction.label()
                        ),
                        "MoveCheckpoint".into(),
                    ));
                    status.checkpoint_request = Some(rec);
                    // The Deployment goes to 0 replicas in this reconcile; the next one looks
                    // for pods.
                    return Ok(true);
                }
            }
            return Ok(false);
        }
    }
    // Read live, not from the cache: a pod the cache has not seen yet would write its
    // checkpoint over the moved one.
    let running = live_publisher_pods(ctx, bls).await?;
    if !running.is_empty() {
        debug!(name = %key(bls), pods = running.len(), "checkpoint request waits for the publisher to stop");
        return Ok(true);
    }
    let live = api.get_status(&bls.name_any()).await.map_err(Error::Kube)?;
    let live_status = live.status.clone().unwrap_or_default();
    let mut rec = current.unwrap_or_else(|| record(requests::STOPPING, None));
    if rec.phase == requests::STOPPING {
        // The stopped publisher stored its final checkpoint: decide against that one.
        match requests::decide(&req, live_status.checkpoint.as_ref()) {
            Decision::Refuse { message } => {
                let mut r = record(requests::REFUSED, live_status.checkpoint.as_ref());
                r.message = Some(message.clone());
                status.checkpoint_request = Some(r);
                notes.push((
                    true,
                    requests::SKIP_NOT_ACKNOWLEDGED.into(),
                    message,
                    "RefuseCheckpointRequest".into(),
                ));
                return Ok(false);
            }
            Decision::Apply { direction } => {
                let mut r = record(requests::APPLYING, live_status.checkpoint.as_ref());
                r.direction = Some(direction.label().into());
                rec = r;
            }
        }
        status.checkpoint_request = Some(rec.clone());
        write_operator_status(ctx, bls, status).await?;
    }
    let target = match requests::parse_target(&req.to) {
        Ok(t) => t,
        Err(e) => {
            // validate() refuses this before; kept so no path writes a bad checkpoint.
            rec.phase = requests::REFUSED.into();
            rec.message = Some(format!("spec.checkpointRequest.to: {e}"));
            status.checkpoint_request = Some(rec);
            return Ok(false);
        }
    };
    let checkpoint = match &target {
        requests::Target::FilePos { file, pos } => {
            let moved =
                requests::moved_checkpoint(file, *pos, live_status.checkpoint.as_ref(), &now);
            let mut v = serde_json::to_value(&moved)
                .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
            // A merge patch keeps what it does not name: name every field of the old one.
            for k in [
                "transactionGtid",
                "eventMark",
                "gtidSet",
                "eventTime",
                "snapshot",
                "source",
            ] {
                if v.get(k).is_none() {
                    v[k] = serde_json::Value::Null;
                }
            }
            if let Some(sn) = v.get_mut("snapshot").filter(|s| s.is_object()) {
                for k in ["pending", "lastKey"] {
                    if sn.get(k).is_none() {
                        sn[k] = serde_json::Value::Null;
                    }
                }
            }
            v
        }
        // Removed: the publisher starts at `to` (its --start) and stores a new checkpoint.
        _ => serde_json::Value::Null,
    };
    let patch = json!({
        // Preconditions: the same object, unchanged since it was read.
        "metadata": {"uid": live.metadata.uid, "resourceVersion": live.metadata.resource_version},
        "status": {"checkpoint": checkpoint},
    });
    let params = PatchParams {
        field_manager: Some(OPERATOR_CHECKPOINT_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(&bls.name_any(), &params, &Patch::Merge(patch))
        .await
        .map_err(Error::Kube)?;
    status.checkpoint = match &target {
        requests::Target::FilePos { file, pos } => Some(requests::moved_checkpoint(
            file,
            *pos,
            live_status.checkpoint.as_ref(),
            &now,
        )),
        _ => None,
    };
    let direction = match rec.direction.as_deref() {
        Some("Rewind") => requests::Direction::Rewind,
        Some("Unchanged") => requests::Direction::Unchanged,
        _ => requests::Direction::SkipAhead,
    };
    let from = rec.from.clone().unwrap_or_else(|| "no checkpoint".into());
    let (reason, warning, note) = requests::applied_event(&req, &direction, &from);
    rec.phase = requests::APPLIED.into();
    rec.message = Some(note.clone());
    rec.time = Some(now);
    status.checkpoint_request = Some(rec);
    // Recorded before the publisher starts again, so the move is never made twice.
    write_operator_status(ctx, bls, status).await?;
    tracing::info!(name = %key(bls), request_id = %req.request_id, %from, to = %req.to, direction = direction.label(), "checkpoint request applied");
    notes.push((warning, reason.into(), note, "MoveCheckpoint".into()));
    Ok(false)
}

/// The stream's publisher pods as the API server has them now (terminating ones included).
async fn live_publisher_pods(ctx: &Context, bls: &BinlogStream) -> Result<Vec<Pod>, Error> {
    let selector = build::selector_labels(bls)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &bls.namespace().unwrap_or_default());
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Kube)?;
    Ok(list.items)
}

/// Replaces the finalizer list: a merge patch replaces a list whole, so the resourceVersion
/// guards against a finalizer someone else added meanwhile (409, retried).
async fn patch_finalizers(
    ctx: &Context,
    bls: &BinlogStream,
    list: Vec<String>,
) -> Result<(), Error> {
    let api: Api<BinlogStream> =
        Api::namespaced(ctx.client.clone(), &bls.namespace().unwrap_or_default());
    let patch =
        json!({"metadata": {"resourceVersion": bls.resource_version(), "finalizers": list}});
    let params = PatchParams {
        field_manager: Some(OPERATOR_MANAGER.into()),
        ..Default::default()
    };
    api.patch(&bls.name_any(), &params, &Patch::Merge(patch))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// A stream that never stored a checkpoint takes over the one kept when a stream of the same
/// name was deleted, before its publisher first starts. An unreadable one blocks the stream:
/// starting from `spec.start` would silently skip the changes in between.
async fn restore_step(
    ctx: &Context,
    bls: &BinlogStream,
    status: &mut BinlogStreamStatus,
    notes: &mut Vec<Note>,
) -> Result<Result<(), Blocked>, Error> {
    let k = key(bls);
    let uid = bls.uid();
    if !retain::may_restore(bls)
        || ctx.remembered(&k, |m| {
            m.retained_checked.is_some() && m.retained_checked == uid
        })
    {
        return Ok(Ok(()));
    }
    let ns = bls.namespace().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let cm_name = retain::config_map_name(bls);
    let checked = |ctx: &Context| ctx.remembered(&k, |m| m.retained_checked = uid.clone());
    let Some(cm) = cms.get_opt(&cm_name).await.map_err(Error::Kube)? else {
        checked(ctx);
        return Ok(Ok(()));
    };
    let (checkpoint, from_uid, retained_at) = match retain::read(&cm, bls) {
        Retained::Own => {
            checked(ctx);
            return Ok(Ok(()));
        }
        Retained::Unreadable(message) => {
            return Ok(Err(Blocked {
                reason: "RetainedCheckpointUnreadable".into(),
                message,
            }))
        }
        Retained::Restore {
            checkpoint,
            from_uid,
            retained_at,
        } => (*checkpoint, from_uid, retained_at),
    };
    let api: Api<BinlogStream> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams {
        field_manager: Some(OPERATOR_CHECKPOINT_MANAGER.into()),
        ..Default::default()
    };
    // Bound to this object's UID: never into a stream created after this one was read.
    let patch = json!({"metadata": {"uid": uid}, "status": {"checkpoint": checkpoint}});
    api.patch_status(&bls.name_any(), &params, &Patch::Merge(patch))
        .await
        .map_err(Error::Kube)?;
    let position = match &checkpoint.gtid_set {
        Some(g) if !g.is_empty() => format!("{} (GTID set {g})", requests::display(&checkpoint)),
        _ => requests::display(&checkpoint),
    };
    status.checkpoint = Some(checkpoint);
    status.restored_checkpoint = Some(RestoredCheckpoint {
        position: position.clone(),
        config_map: cm_name.clone(),
        from_uid: from_uid.clone(),
        retained_at: retained_at.clone(),
        time: Timestamp::now().to_string(),
    });
    // Recorded before the ConfigMap goes, so the hand-over stays visible.
    write_operator_status(ctx, bls, status).await?;
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cm.uid(),
            ..Default::default()
        }),
        ..Default::default()
    };
    match cms.delete(&cm_name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        // Left behind it does no harm: this stream now stores its own checkpoint, and the
        // next deletion overwrites it.
        Err(e) => {
            warn!(name = %k, config_map = %cm_name, error = %e, "cannot remove the retained checkpoint it took over")
        }
    }
    checked(ctx);
    info!(name = %k, %position, config_map = %cm_name, from_uid = from_uid.as_deref().unwrap_or(""), "took over the checkpoint of the deleted stream of this name");
    notes.push((
        false,
        "CheckpointRestored".into(),
        format!(
            "resuming at {position}: the checkpoint kept in ConfigMap {cm_name} when the previous BinlogStream of this name{} was deleted{}",
            from_uid.map(|u| format!(" (uid {u})")).unwrap_or_default(),
            retained_at.map(|t| format!(" at {t}")).unwrap_or_default(),
        ),
        "RestoreCheckpoint".into(),
    ));
    Ok(Ok(()))
}

/// A deleted stream with our finalizer: stop the publisher, wait for its pod to go (its final
/// checkpoint lands in this still-existing object), keep that checkpoint in a ConfigMap, then
/// let the deletion finish. One step per reconcile.
async fn retire(ctx: &Context, bls: &BinlogStream) -> Result<Action, Error> {
    let ns = bls.namespace().unwrap_or_default();
    let k = key(bls);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(d) = deployments
        .get_opt(&build::child_name(bls))
        .await
        .map_err(Error::Kube)?
    {
        let running = d.spec.as_ref().and_then(|s| s.replicas) != Some(0);
        if running && d.metadata.deletion_timestamp.is_none() {
            // build::deployment gives a deleted stream 0 replicas.
            apply(&ctx.client, &ns, &build::deployment(bls, &ctx.build)).await?;
            info!(name = %k, "stream deleted: stopping the publisher to keep its final checkpoint");
        }
    }
    let running = live_publisher_pods(ctx, bls).await?;
    let waited = bls
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| Timestamp::now().duration_since(t.0).as_secs())
        .unwrap_or_default();
    if !running.is_empty() {
        if waited < retain::STOP_TIMEOUT_SECS {
            debug!(name = %k, pods = running.len(), "deletion waits for the publisher to stop");
            return Ok(Action::requeue(REQUEST_POLL));
        }
        warn!(name = %k, pods = running.len(), waited_seconds = waited, "the publisher pod did not go; keeping the newest checkpoint it stored");
    }
    let api: Api<BinlogStream> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(live) = api.get_opt(&bls.name_any()).await.map_err(Error::Kube)? else {
        return Ok(Action::await_change());
    };
    if live.uid() != bls.uid() {
        return Ok(Action::await_change());
    }
    let cm_name = retain::config_map_name(&live);
    let note = match live.status.as_ref().and_then(|s| s.checkpoint.as_ref()) {
        Some(cp) => {
            let now = Timestamp::now().to_string();
            let at = requests::display(cp);
            match apply(
                &ctx.client,
                &ns,
                &retain::retained_config_map(&live, cp, &now),
            )
            .await
            {
                Ok(_) => {
                    info!(name = %k, checkpoint = %at, config_map = %cm_name, "stream deleted: checkpoint kept for a stream recreated under this name");
                    format!(
                        "deleted at {at}; the checkpoint is kept in ConfigMap {cm_name}, and a BinlogStream created again under this name resumes there (delete the ConfigMap to start from spec.start instead)"
                    )
                }
                // The namespace goes with everything in it: nothing can be kept there, and
                // holding the deletion would hold the namespace's.
                Err(Error::Kube(kube::Error::Api(e)))
                    if e.code == 403 && e.message.contains("being terminated") =>
                {
                    let cp_json = serde_json::to_string(cp).unwrap_or_default();
                    warn!(name = %k, checkpoint = %at, "stream deleted with its namespace: its checkpoint cannot be kept there");
                    format!("deleted with its namespace at {at}; nothing can be kept in a namespace being deleted, so the checkpoint is only in this Event: {cp_json}")
                }
                Err(e) => return Err(e),
            }
        }
        None => {
            info!(name = %k, "stream deleted before it stored a checkpoint: nothing to keep");
            "deleted before it stored a checkpoint: nothing kept".to_string()
        }
    };
    if let Some(list) = retain::finalizers_with(&live, false) {
        patch_finalizers(ctx, &live, list).await?;
    }
    publish_note(
        ctx,
        &live,
        (false, "CheckpointRetained".into(), note, "Delete".into()),
    )
    .await;
    ctx.forget(&k);
    ctx.metrics.forget_stream(&ns, &live.name_any());
    Ok(Action::await_change())
}

pub async fn reconcile(bls: Arc<BinlogStream>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let started = Instant::now();
    let result = reconcile_inner(bls, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(bls: Arc<BinlogStream>, ctx: &Arc<Context>) -> Result<Action, Error> {
    if bls.meta().deletion_timestamp.is_some() {
        if retain::has_finalizer(&bls) {
            return retire(ctx, &bls).await;
        }
        // Children carry owner references: the garbage collector removes them.
        ctx.forget(&key(&bls));
        ctx.metrics
            .forget_stream(&bls.namespace().unwrap_or_default(), &bls.name_any());
        return Ok(Action::await_change());
    }
    if let Some(list) = retain::finalizers_with(&bls, true) {
        // Before anything can run: a deletion must find the finalizer to keep the checkpoint.
        patch_finalizers(ctx, &bls, list).await?;
    }
    let ns = bls.namespace().unwrap_or_default();
    let client = &ctx.client;
    let k = key(&bls);

    let spec_check: Result<(), Invalid> =
        match validate(&bls.spec).and_then(|()| ctx.tenancy.check(&bls.spec)) {
            Err(e) => Err(e),
            Ok(()) => {
                let generation = bls.metadata.generation;
                let trusted = ctx.remembered(&k, |m| {
                    m.secrets_ok
                        .is_some_and(|(g, at)| g == generation && at.elapsed() < SECRETS_RECHECK)
                });
                if trusted {
                    Ok(())
                } else {
                    let checked = check_secrets(client, &bls).await?;
                    ctx.remembered(&k, |m| {
                        m.secrets_ok = checked.is_ok().then(|| (generation, Instant::now()))
                    });
                    checked
                }
            }
        };
    // The one-shot requests first: their state decides what the Deployment looks like.
    let old = bls.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut notes: Vec<Note> = Vec::new();
    let restored = match &spec_check {
        Ok(()) => restore_step(ctx, &bls, &mut status, &mut notes).await?,
        Err(_) => Ok(()),
    };
    let waiting = match (&spec_check, &restored) {
        (Ok(()), Ok(())) => checkpoint_request_step(ctx, &bls, &mut status, &mut notes).await?,
        _ => false,
    };
    let now_text = Timestamp::now().to_string();
    if let Some(r) = requests::snapshot_request_status(&bls.spec, &status, &now_text) {
        let was_done = old
            .snapshot_request
            .as_ref()
            .is_some_and(|o| o.request_id == r.request_id && o.phase == "Completed")
            || ctx.remembered(&k, |m| {
                m.snapshot_completion_noted.as_deref() == Some(r.request_id.as_str())
            });
        if r.phase == "Completed" && !was_done {
            ctx.remembered(&k, |m| {
                m.snapshot_completion_noted = Some(r.request_id.clone())
            });
            notes.push((
                false,
                "SnapshotRequestCompleted".into(),
                format!(
                    "snapshot request `{}` completed: every existing row of {} was published again",
                    r.request_id,
                    r.tables.join(", ")
                ),
                "Snapshot".into(),
            ));
        }
        status.snapshot_request = Some(r);
    }
    let mut effective = (*bls).clone();
    effective.status = Some(status.clone());
    let bls = Arc::new(effective);
    let applied = match (&spec_check, &restored) {
        (Ok(()), Ok(())) => Some(apply_children(ctx, &bls).await?),
        _ => None,
    };

    let pods = ctx.caches.pods_matching(&ns, &build::selector_labels(&bls));
    let (mut pod, pod_name) = pod_state(&pods);
    if pod == PodState::Missing {
        if let Some(Ok(Some(d))) = &applied {
            pod = replica_failure(d).unwrap_or(pod);
        }
    }
    if let Some(stuck) = pods
        .iter()
        .filter(|_| pod == PodState::Running { ready: false })
        .find(|p| stuck_creating(p, Timestamp::now()))
    {
        if let Some(failure) = mount_failure(client, &ns, stuck).await? {
            pod = failure;
        }
    }

    // Nothing watches ConfigMaps: look again soon for one the user fixed or removed.
    let blocked = restored.is_err();
    let inputs = Inputs {
        bls: &bls,
        spec: spec_check.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        apply: match (&applied, restored) {
            (_, Err(blocked)) => Err(blocked),
            (Some(Err(msg)), _) => Err(msg.clone().into()),
            _ => Ok(()),
        },
        pod,
        now: Timestamp::now(),
    };
    let new_conditions = conditions::compute(&inputs);
    let changed = !same_conditions(&old.conditions, &new_conditions)
        || old.observed_generation != bls.metadata.generation
        || old.publisher_pod != pod_name
        || old.snapshot_request != status.snapshot_request
        || old.checkpoint_request != status.checkpoint_request
        || old.restored_checkpoint != status.restored_checkpoint;
    for note in notes {
        publish_note(ctx, &bls, note).await;
    }
    if changed {
        let mut written = status.clone();
        written.observed_generation = bls.metadata.generation;
        written.publisher_pod = pod_name.clone();
        written.conditions = new_conditions.clone();
        write_operator_status(ctx, &bls, &written).await?;
        for (type_, status, reason, message) in
            conditions::transitions(&old.conditions, &new_conditions)
        {
            // A pause or a checkpoint move is asked for: not a warning.
            let healthy = reason == "Paused"
                || reason == "MovingCheckpoint"
                || type_ == conditions::SNAPSHOTTING
                || matches!(
                    (type_.as_str(), status.as_str()),
                    ("Ready", "True")
                        | ("Lagging", "False")
                        | ("Degraded", "False")
                        | ("BinlogAtRisk", "False")
                );
            let event = Event {
                type_: if healthy {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: reason.clone(),
                note: Some(
                    format!("{type_}={status}: {message}")
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: format!("Update{type_}"),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &bls.object_ref(&())).await {
                warn!(error = %e, "could not record an event");
            }
        }
    }
    ctx.metrics.observe_stream(
        &ns,
        &bls.name_any(),
        crate::metrics::StreamObservation {
            conditions: new_conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
            paused: bls.spec.paused,
            restarts: restarts(&pods),
        },
    );
    if let Ok(mut f) = ctx.failures.lock() {
        f.remove(&key(&bls));
    }
    Ok(match spec_check {
        // Secrets may appear later; the spec itself only changes with a new generation.
        Err(_) => Action::requeue(Duration::from_secs(30)),
        Ok(()) if blocked => Action::requeue(Duration::from_secs(30)),
        Ok(()) if waiting => Action::requeue(REQUEST_POLL),
        Ok(()) => Action::requeue(RESYNC),
    })
}

pub fn error_policy(bls: Arc<BinlogStream>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&crate::metrics::ErrorLabel {
            error: error.metric_label().into(),
        })
        .inc();
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key(&bls)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = Duration::from_secs(1u64 << n.min(8)).min(Duration::from_secs(300));
    warn!(name = %key(&bls), %error, attempt = n, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller until `shutdown` resolves: one for the whole cluster, or one per
/// watched namespace (each with its own namespaced watches, so namespaced Roles suffice).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(shutdown);
    if ctx.namespaces.is_empty() {
        run_in(ctx, None, shutdown).await;
        return;
    }
    let runs = ctx
        .namespaces
        .clone()
        .into_iter()
        .map(|ns| run_in(ctx.clone(), Some(ns), shutdown.clone()));
    futures::future::join_all(runs).await;
}

fn api_in<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_in(
    ctx: Arc<Context>,
    ns: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let streams: Api<BinlogStream> = api_in(&client, ns.as_deref());
    let (caches, watched) = Caches::watch(&client, ns.as_deref());
    let ctx = Arc::new(ctx.for_term(caches));
    let config = controller::Config::default().concurrency(ctx.concurrency);
    let controller = Controller::new(streams, watcher::Config::default()).with_config(config);
    let by_pod = controller.store();
    let metrics = ctx.metrics.clone();
    controller
        .owns_stream(watched.deployments)
        .owns_stream(watched.service_accounts)
        .owns_stream(watched.roles)
        .owns_stream(watched.role_bindings)
        // A pod is owned by a ReplicaSet, not by us: map it back by its instance label.
        .watches_stream(watched.pods, move |pod: Pod| stream_of_pod(&by_pod, &pod))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| {
            // A stream deleted without a finalizer is never reconciled again: drop its
            // series here.
            if let Err(controller::Error::ObjectNotFound(obj)) = &r {
                metrics.forget_stream(obj.namespace.as_deref().unwrap_or(""), &obj.name);
            }
            async move {
                match r {
                    Ok((obj, _)) => debug!(
                        name = %obj.name,
                        namespace = obj.namespace.as_deref().unwrap_or(""),
                        "reconciled"
                    ),
                    Err(controller::Error::ObjectNotFound(obj)) => debug!(
                        name = %obj.name,
                        namespace = obj.namespace.as_deref().unwrap_or(""),
                        "stream deleted"
                    ),
                    Err(e) => warn!(error = %e, "reconcile error"),
                }
            }
        })
        .await;
}

/// The BinlogStream whose publisher `pod` is.
fn stream_of_pod(streams: &Store<BinlogStream>, pod: &Pod) -> Option<ObjectRef<BinlogStream>> {
    let ns = pod.metadata.namespace.as_deref()?;
    let instance = pod
        .metadata
        .labels
        .as_ref()?
        .get("app.kubernetes.io/instance")?;
    streams
        .state()
        .into_iter()
        .find(|b| b.namespace().as_deref() == Some(ns) && &build::instance_label(b) == instance)
        .map(|b| ObjectRef::from_obj(&*b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
    use kube::core::Status;

    fn api(code: u16) -> Error {
        Error::Kube(kube::Error::Api(
            Status::failure("x", "X").with_code(code).boxed(),
        ))
    }

    #[test]
    fn errors_map_to_the_fixed_kinds() {
        for (code, kind) in [
            (409, "conflict"),
            (403, "forbidden"),
            (404, "not_found"),
            (422, "invalid"),
            (429, "throttled"),
            (503, "server_error"),
            (418, "other"),
        ] {
            assert_eq!(api(code).metric_label(), kind, "HTTP {code}");
        }
        let Err(decode) = serde_json::from_str::<u8>("x") else {
            panic!("`x` parsed as a number");
        };
        assert_eq!(
            Error::Kube(kube::Error::SerdeError(decode)).metric_label(),
            "decode"
        );
        for code in [409, 403, 404, 422, 429, 503, 418] {
            assert!(crate::metrics::ERROR_KINDS.contains(&api(code).metric_label()));
        }
    }

    #[test]
    fn restarts_add_up_over_the_streams_pods() {
        let pod = |counts: &[i32]| Pod {
            status: Some(PodStatus {
                container_statuses: Some(
                    counts
                        .iter()
                        .map(|n| ContainerStatus {
                            restart_count: *n,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(restarts(&[]), 0);
        assert_eq!(restarts(&[pod(&[2]), pod(&[1, 0]), Pod::default()]), 3);
    }
}
