//! The reconcile loop: applies a BinlogStream's children with server-side apply, reads its
//! publisher pod, and writes conditions and events.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Pod, Secret, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    jiff::Timestamp,
};
use kube::{
    api::{Api, ListParams, Patch, PatchParams},
    runtime::{
        controller::{Action, Controller},
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
    Client, Resource, ResourceExt,
};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    crd::{BinlogStream, OPERATOR_MANAGER, OPERATOR_STATUS_MANAGER},
    metrics::OperatorMetrics,
    reconcile::{
        build::{self, BuildConfig},
        conditions::{self, Inputs, PodState},
        validate::{validate, Invalid},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub build: BuildConfig,
    pub recorder: Recorder,
    pub metrics: Arc<OperatorMetrics>,
    /// Consecutive failures per object, for the exponential requeue.
    pub failures: Mutex<HashMap<String, u32>>,
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
        }
    }
}

fn key(bls: &BinlogStream) -> String {
    format!("{}/{}", bls.namespace().unwrap_or_default(), bls.name_any())
}

/// Secrets (and the CA ConfigMap) the spec names must exist and hold the keys it names.
async fn check_secrets(client: &Client, bls: &BinlogStream) -> Result<Result<(), Invalid>, Error> {
    let ns = bls.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut wanted: Vec<(String, String, Vec<String>)> = vec![(
        "spec.source.passwordSecretRef".into(),
        bls.spec.source.password_secret_ref.name.clone(),
        vec![bls.spec.source.password_secret_ref.key.clone()],
    )];
    let tls = bls.spec.source.tls.as_ref();
    if let Some(name) = tls
        .and_then(|t| t.ca.as_ref())
        .and_then(|c| c.secret_name.as_ref())
    {
        wanted.push((
            "spec.source.tls.ca".into(),
            name.clone(),
            vec![tls
                .and_then(|t| t.ca.as_ref())
                .map(|c| c.key.clone())
                .unwrap_or_default()],
        ));
    }
    if let Some(name) = tls.and_then(|t| t.client_cert_secret_name.as_ref()) {
        wanted.push((
            "spec.source.tls.clientCertSecretName".into(),
            name.clone(),
            vec!["tls.crt".into(), "tls.key".into()],
        ));
    }
    if let Some(c) = &bls.spec.target.credentials_secret_ref {
        wanted.push((
            "spec.target.credentialsSecretRef".into(),
            c.name.clone(),
            vec!["AWS_ACCESS_KEY_ID".into(), "AWS_SECRET_ACCESS_KEY".into()],
        ));
    }
    for (field, name, keys) in wanted {
        match api.get_opt(&name).await.map_err(Error::Kube)? {
            None => {
                return Ok(Err(Invalid {
                    field,
                    message: format!("secret `{name}` does not exist in namespace `{ns}`"),
                }))
            }
            Some(secret) => {
                let data = secret.data.unwrap_or_default();
                let string_data = secret.string_data.unwrap_or_default();
                if let Some(missing) = keys
                    .iter()
                    .find(|k| !data.contains_key(*k) && !string_data.contains_key(*k))
                {
                    return Ok(Err(Invalid {
                        field,
                        message: format!("secret `{name}` has no key `{missing}`"),
                    }));
                }
            }
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

/// Applies the children in order; `Ok(Err(message))` when the API server refused one.
async fn apply_children(
    client: &Client,
    ns: &str,
    bls: &BinlogStream,
    cfg: &BuildConfig,
) -> Result<Result<Deployment, String>, Error> {
    let sa = build::service_account(bls);
    let role = build::role(bls);
    let binding = build::role_binding(bls);
    let deployment = build::deployment(bls, cfg);
    let what = |kind: &str, name: &Option<String>| {
        format!("{kind} {}", name.as_deref().unwrap_or_default())
    };
    let steps = [
        (
            what("ServiceAccount", &sa.metadata.name),
            apply(client, ns, &sa).await.map(|_| ()),
        ),
        (
            what("Role", &role.metadata.name),
            apply(client, ns, &role).await.map(|_| ()),
        ),
        (
            what("RoleBinding", &binding.metadata.name),
            apply(client, ns, &binding).await.map(|_| ()),
        ),
    ];
    for (what, result) in steps {
        match result {
            Ok(()) => {}
            Err(e) => match refused(&e) {
                Some(msg) => return Ok(Err(format!("the API server refused {what}: {msg}"))),
                None => return Err(e),
            },
        }
    }
    match apply(client, ns, &deployment).await {
        Ok(d) => Ok(Ok(d)),
        Err(e) => match refused(&e) {
            Some(msg) => Ok(Err(format!(
                "the API server refused {}: {msg}",
                what("Deployment", &deployment.metadata.name)
            ))),
            None => Err(e),
        },
    }
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

pub async fn reconcile(bls: Arc<BinlogStream>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    if bls.meta().deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let ns = bls.namespace().unwrap_or_default();
    let client = &ctx.client;

    let spec_check: Result<(), Invalid> = match validate(&bls.spec) {
        Err(e) => Err(e),
        Ok(()) => check_secrets(client, &bls).await?,
    };
    let applied = match &spec_check {
        Ok(()) => Some(apply_children(client, &ns, &bls, &ctx.build).await?),
        Err(_) => None,
    };

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = build::selector_labels(&bls)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pod_list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Kube)?;
    let (mut pod, pod_name) = pod_state(&pod_list.items);
    if pod == PodState::Missing {
        if let Some(Ok(d)) = &applied {
            pod = replica_failure(d).unwrap_or(pod);
        }
    }

    let inputs = Inputs {
        bls: &bls,
        spec: spec_check.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        apply: match &applied {
            Some(Err(msg)) => Err(msg.clone()),
            _ => Ok(()),
        },
        pod,
        now: Timestamp::now(),
    };
    let new_conditions = conditions::compute(&inputs);
    let old = bls.status.clone().unwrap_or_default();
    let changed = !same_conditions(&old.conditions, &new_conditions)
        || old.observed_generation != bls.metadata.generation
        || old.publisher_pod != pod_name;
    if changed {
        let api: Api<BinlogStream> = Api::namespaced(client.clone(), &ns);
        let patch = json!({
            "apiVersion": "cdc.binlogstream.io/v1alpha1",
            "kind": "BinlogStream",
            "status": {
                "observedGeneration": bls.metadata.generation,
                "publisherPod": pod_name,
                "conditions": new_conditions,
            }
        });
        api.patch_status(
            &bls.name_any(),
            &PatchParams::apply(OPERATOR_STATUS_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(Error::Kube)?;
        for (type_, status, reason, message) in
            conditions::transitions(&old.conditions, &new_conditions)
        {
            let healthy = matches!(
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
    if let Ok(mut f) = ctx.failures.lock() {
        f.remove(&key(&bls));
    }
    Ok(match spec_check {
        // Secrets may appear later; the spec itself only changes with a new generation.
        Err(_) => Action::requeue(Duration::from_secs(30)),
        Ok(()) => Action::requeue(Duration::from_secs(15)),
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

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let streams: Api<BinlogStream> = Api::all(client.clone());
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=binlogstream-operator");
    Controller::new(streams, watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), owned.clone())
        .owns(Api::<Role>::all(client.clone()), owned.clone())
        .owns(Api::<RoleBinding>::all(client.clone()), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => debug!(
                    name = %obj.name,
                    namespace = obj.namespace.as_deref().unwrap_or(""),
                    "reconciled"
                ),
                Err(e) => warn!(error = %e, "reconcile error"),
            }
        })
        .await;
}
