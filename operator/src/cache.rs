//! Reflector caches of what the reconciler reads (publisher pods and the children it
//! applies), watched once for all streams, so a reconcile of an idle stream costs no API
//! request. The watch streams also trigger reconciles (`Controller::owns_stream`,
//! `watches_stream`), so each kind is watched once, not twice.

use std::collections::BTreeMap;

use futures::Stream;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    api::Api,
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Client, Resource,
};

/// Every object the operator creates and every publisher pod carries this label.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=binlogstream-operator";

#[derive(Clone)]
pub struct Caches {
    pub pods: Store<Pod>,
    pub deployments: Store<Deployment>,
    pub service_accounts: Store<ServiceAccount>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
}

/// The watch streams behind [`Caches`]; the controller drives them.
pub struct CacheStreams<P, D, S, R, B> {
    pub pods: P,
    pub deployments: D,
    pub service_accounts: S,
    pub roles: R,
    pub role_bindings: B,
}

fn watch<K>(
    client: &Client,
    ns: Option<&str>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().labels(MANAGED_SELECTOR)),
    )
    .default_backoff()
    .touched_objects();
    (reader, stream)
}

impl Caches {
    /// Caches filled by watches of `client` (in `ns`, or everywhere), and the streams that
    /// fill them.
    #[allow(clippy::type_complexity)]
    pub fn watch(
        client: &Client,
        ns: Option<&str>,
    ) -> (
        Caches,
        CacheStreams<
            impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
            impl Stream<Item = Result<Deployment, watcher::Error>> + Send + 'static,
            impl Stream<Item = Result<ServiceAccount, watcher::Error>> + Send + 'static,
            impl Stream<Item = Result<Role, watcher::Error>> + Send + 'static,
            impl Stream<Item = Result<RoleBinding, watcher::Error>> + Send + 'static,
        >,
    ) {
        let (pods, p) = watch::<Pod>(client, ns);
        let (deployments, d) = watch::<Deployment>(client, ns);
        let (service_accounts, s) = watch::<ServiceAccount>(client, ns);
        let (roles, r) = watch::<Role>(client, ns);
        let (role_bindings, b) = watch::<RoleBinding>(client, ns);
        (
            Caches {
                pods,
                deployments,
                service_accounts,
                roles,
                role_bindings,
            },
            CacheStreams {
                pods: p,
                deployments: d,
                service_accounts: s,
                roles: r,
                role_bindings: b,
            },
        )
    }

    /// Empty caches that nothing fills (tests, and before the first watch).
    pub fn empty() -> Caches {
        Caches {
            pods: reflector::store().0,
            deployments: reflector::store().0,
            service_accounts: reflector::store().0,
            roles: reflector::store().0,
            role_bindings: reflector::store().0,
        }
    }

    /// Pods in `ns` carrying every label of `selector`.
    pub fn pods_matching(&self, ns: &str, selector: &BTreeMap<String, String>) -> Vec<Pod> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| {
                let labels = p.metadata.labels.as_ref();
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .map(|p| (*p).clone())
            .collect()
    }
}

/// The cached object `ns/name` of `store`.
pub fn cached<K>(store: &Store<K>, ns: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(ns))
}
