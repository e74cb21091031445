//! The objects one BinlogStream owns, built as plain values (no API calls): a ServiceAccount,
//! a Role and RoleBinding that let the publisher read its own resource and patch only its
//! status, and a one-replica Recreate Deployment (never two publishers on one source).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        coordination::v1::Lease,
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource, EnvVar,
            HTTPGetAction, KeyToPath, LocalObjectReference, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, SeccompProfile, SecretEnvSource, SecretVolumeSource,
            SecurityContext, ServiceAccount, Volume, VolumeMount,
        },
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};

use super::requests;
use crate::crd::{BinlogStream, TlsMode};

pub const METRICS_PORT: i32 = 9464;
/// Pod annotation holding the BinlogStream's name, for scrape relabeling.
pub const STREAM_NAME_ANNOTATION: &str = "binlogstream.io/name";

/// Operator-wide settings the children depend on.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub publisher_image: String,
    pub image_pull_policy: Option<String>,
    /// Pull secrets for publisher pods; each must exist in the stream's namespace.
    pub image_pull_secrets: Vec<String>,
}

/// FNV-1a: stable across releases and platforms (std's hasher is not), which names and
/// server ids derived from it must be.
fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Longest label value (and DNS-1123 label) Kubernetes accepts.
pub const MAX_LABEL: usize = 63;

/// `text` as it is when it fits in `max` characters; otherwise a prefix and a hash of the
/// whole, so two long names that share a prefix still get different results.
pub fn fit(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let hash = format!("{:08x}", fnv1a(text));
    // Object names are ASCII (DNS-1123), so byte and char positions agree.
    let keep = max.saturating_sub(hash.len() + 1);
    let prefix = text[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

/// Name of every child object: `bls-<name>`, fitted to a DNS-1123 label (pods and service
/// accounts take their names from it).
pub fn child_name(bls: &BinlogStream) -> String {
    fit(&format!("bls-{}", bls.name_any()), MAX_LABEL)
}

/// The `app.kubernetes.io/instance` label: the resource's name, fitted to a label value.
pub fn instance_label(bls: &BinlogStream) -> String {
    fit(&bls.name_any(), MAX_LABEL)
}

pub fn labels(bls: &BinlogStream) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "binlogstream-publisher".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            instance_label(bls),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "binlogstream-operator".to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "publisher".to_string(),
        ),
    ])
}

pub fn selector_labels(bls: &BinlogStream) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "binlogstream-publisher".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            instance_label(bls),
        ),
    ])
}

fn meta(bls: &BinlogStream) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(bls)),
        namespace: bls.namespace(),
        labels: Some(labels(bls)),
        owner_references: bls.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// A server id derived from the resource's UID: stable for the resource's life, different
/// between resources, in a range real servers rarely use.
pub fn derived_server_id(bls: &BinlogStream) -> u32 {
    let uid = bls
        .uid()
        .unwrap_or_else(|| format!("{}/{}", bls.namespace().unwrap_or_default(), bls.name_any()));
    0x4000_0000 | (fnv1a(&uid) & 0x3fff_ffff)
}

pub fn service_account(bls: &BinlogStream) -> ServiceAccount {
    let mut m = meta(bls);
    m.annotations = bls.spec.publisher.service_account_annotations.clone();
    ServiceAccount {
        metadata: m,
        ..Default::default()
    }
}

/// The publisher may read and write its own BinlogStream's status and hold its own lease, and
/// nothing else: its Secrets reach it as kubelet mounts, which need no RBAC.
pub fn role(bls: &BinlogStream) -> Role {
    Role {
        metadata: meta(bls),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![crate::crd::GROUP.into()]),
                resources: Some(vec!["binlogstreams/status".into()]),
                resource_names: Some(vec![bls.name_any()]),
                verbs: vec!["get".into(), "patch".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                resource_names: Some(vec![child_name(bls)]),
                verbs: vec!["get".into(), "patch".into()],
                ..Default::default()
            },
        ]),
    }
}

/// The publisher's fence: a replacement pod streams only once it holds this lease, which the
/// old pod releases after its final checkpoint (or which expires when it died). The operator
/// creates it (metadata only; the publishers own its spec) so that publishers need no
/// `create`, which RBAC cannot restrict to one name.
pub fn publisher_lease(bls: &BinlogStream) -> Lease {
    Lease {
        metadata: meta(bls),
        spec: None,
    }
}

pub fn role_binding(bls: &BinlogStream) -> RoleBinding {
    RoleBinding {
        metadata: meta(bls),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: child_name(bls),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: child_name(bls),
            namespace: bls.namespace(),
            ..Default::default()
        }]),
    }
}

/// What the one-shot requests in the spec and their status records ask of the pod.
fn overrides_of(bls: &BinlogStream) -> requests::Overrides {
    let mut o = requests::overrides(&bls.spec, &bls.status.clone().unwrap_or_default());
    // Being deleted: the publisher stops and stores its final checkpoint for the next stream.
    o.stopped |= bls.metadata.deletion_timestamp.is_some();
    o
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The publisher's settings, as the environment variables its command line reads.
pub fn publisher_env(bls: &BinlogStream) -> Vec<EnvVar> {
    let s = &bls.spec;
    let over = overrides_of(bls);
    let ns = bls.namespace().unwrap_or_default();
    let mut v = vec![
        env(
            "BINLOGSTREAM_SOURCE",
            format!(
                "mysql://{}@{}:{}",
                s.source.user, s.source.host, s.source.port
            ),
        ),
        env(
            "BINLOGSTREAM_PASSWORD_FILE",
            "/etc/binlogstream/source/password",
        ),
        env(
            "BINLOGSTREAM_SERVER_ID",
            s.source
                .server_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| derived_server_id(bls).to_string()),
        ),
        env(
            "BINLOGSTREAM_START",
            over.start
                .clone()
                .or_else(|| s.start.clone())
                .unwrap_or_else(|| "latest".into()),
        ),
        env("BINLOGSTREAM_SINK", "kinesis"),
        env("BINLOGSTREAM_STREAM", s.target.stream.clone()),
        env(
            "BINLOGSTREAM_CHECKPOINT_KUBERNETES",
            format!("{ns}/{}", bls.name_any()),
        ),
        env(
            "BINLOGSTREAM_CHECKPOINT_KUBERNETES_UID",
            bls.uid().unwrap_or_default(),
        ),
        env("BINLOGSTREAM_LEASE", child_name(bls)),
        env(
            "BINLOGSTREAM_METRICS_ADDR",
            format!("0.0.0.0:{METRICS_PORT}"),
        ),
        env("BINLOGSTREAM_LOG_FORMAT", "json"),
        env("BINLOGSTREAM_POSITION", s.output.position.to_string()),
        env("BINLOGSTREAM_AGGREGATE", s.output.aggregate.to_string()),
        env("AWS_EC2_METADATA_DISABLED", "false"),
    ];
    if !s.tables.include.is_empty() {
        v.push(env("BINLOGSTREAM_INCLUDE", s.tables.include.join(",")));
    }
    if !s.tables.exclude.is_empty() {
        v.push(env("BINLOGSTREAM_EXCLUDE", s.tables.exclude.join(",")));
    }
    if let Some((id, tables)) = &over.snapshot {
        v.push(env("BINLOGSTREAM_SNAPSHOT_REQUEST_ID", id.clone()));
        v.push(env("BINLOGSTREAM_SNAPSHOT_TABLES", tables.join(",")));
    }
    if let Some(r) = &s.target.region {
        v.push(env("BINLOGSTREAM_REGION", r.clone()));
        v.push(env("AWS_REGION", r.clone()));
    }
    if let Some(e) = &s.target.endpoint {
        v.push(env("BINLOGSTREAM_ENDPOINT", e.clone()));
    }
    if let Some(pk) = &s.target.partition_key {
        v.push(env("BINLOGSTREAM_PARTITION_KEY", pk.clone()));
    }
    if let Some(o) = &s.output.oversize {
        v.push(env("BINLOGSTREAM_OVERSIZE", o.clone()));
    }
    if let Some(tls) = s
        .source
        .tls
        .as_ref()
        .filter(|t| t.mode != TlsMode::Disabled)
    {
        v.push(env("BINLOGSTREAM_SOURCE_TLS", tls.mode.as_str()));
        if tls.ca.is_some() {
            v.push(env(
                "BINLOGSTREAM_SOURCE_TLS_CA",
                format!("{TLS_CA_DIR}/ca.pem"),
            ));
        }
        if tls.client_cert_secret_name.is_some() {
            v.push(env(
                "BINLOGSTREAM_SOURCE_TLS_CERT",
                format!("{TLS_CLIENT_DIR}/tls.crt"),
            ));
            v.push(env(
                "BINLOGSTREAM_SOURCE_TLS_KEY",
                format!("{TLS_CLIENT_DIR}/tls.key"),
            ));
        }
        if let Some(n) = &tls.server_name {
            v.push(env("BINLOGSTREAM_SOURCE_TLS_SERVER_NAME", n.clone()));
        }
    }
    v
}

/// Where the TLS files are mounted. Whole volumes (no subPath), so a rotated CA or client
/// certificate reaches the pod and the publisher's next reconnect reads it.
pub const TLS_CA_DIR: &str = "/etc/binlogstream/source-tls-ca";
pub const TLS_CLIENT_DIR: &str = "/etc/binlogstream/source-tls-client";

fn items(pairs: &[(&str, &str)]) -> Option<Vec<KeyToPath>> {
    Some(
        pairs
            .iter()
            .map(|(key, path)| KeyToPath {
                key: (*key).into(),
                path: (*path).into(),
                ..Default::default()
            })
            .collect(),
    )
}

/// Volumes and read-only mounts for `spec.source.tls` (none while it is disabled).
fn tls_volumes(bls: &BinlogStream) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let Some(tls) = bls
        .spec
        .source
        .tls
        .as_ref()
        .filter(|t| t.mode != TlsMode::Disabled)
    else {
        return (volumes, mounts);
    };
    let mut mount = |name: &str, path: &str| {
        mounts.push(VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: Some(true),
            ..Default::default()
        })
    };
    if let Some(ca) = &tls.ca {
        let ca_items = items(&[(&ca.key, "ca.pem")]);
        volumes.push(Volume {
            name: "source-tls-ca".into(),
            secret: ca.secret_name.as_ref().map(|n| SecretVolumeSource {
                secret_name: Some(n.clone()),
                items: ca_items.clone(),
                ..Default::default()
            }),
            config_map: ca.config_map_name.as_ref().map(|n| ConfigMapVolumeSource {
                name: n.clone(),
                items: ca_items.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        mount("source-tls-ca", TLS_CA_DIR);
    }
    if let Some(name) = &tls.client_cert_secret_name {
        volumes.push(Volume {
            name: "source-tls-client".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                items: items(&[("tls.crt", "tls.crt"), ("tls.key", "tls.key")]),
                // The key is private: group-readable for the pod's fsGroup, like the password.
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mount("source-tls-client", TLS_CLIENT_DIR);
    }
    (volumes, mounts)
}

pub fn deployment(bls: &BinlogStream, cfg: &BuildConfig) -> Deployment {
    let s = &bls.spec;
    let name = child_name(bls);
    let mut volumes = vec![Volume {
        name: "source-password".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(s.source.password_secret_ref.name.clone()),
            items: Some(vec![KeyToPath {
                key: s.source.password_secret_ref.key.clone(),
                path: "password".into(),
                ..Default::default()
            }]),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "source-password".into(),
        mount_path: "/etc/binlogstream/source".into(),
        read_only: Some(true),
        ..Default::default()
    }];
    let (tls_volumes, tls_mounts) = tls_volumes(bls);
    volumes.extend(tls_volumes);
    mounts.extend(tls_mounts);
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(METRICS_PORT),
            ..Default::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let container = Container {
        name: "publisher".into(),
        image: Some(
            s.publisher
                .image
                .clone()
                .unwrap_or_else(|| cfg.publisher_image.clone()),
        ),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(vec!["run".into()]),
        env: Some(publisher_env(bls)),
        env_from: s.target.credentials_secret_ref.as_ref().map(|c| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: c.name.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..probe("/healthz")
        }),
        resources: s.publisher.resources.clone(),
        // A publisher that stops before its first status report still explains itself
        // through the pod's termination message, which the conditions quote.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod_labels = labels(bls);
    pod_labels.extend(selector_labels(bls));
    Deployment {
        metadata: meta(bls),
        spec: Some(DeploymentSpec {
            // Paused, or a checkpoint request being applied: no pod. Its SIGTERM drain stores
            // the final checkpoint first.
            replicas: Some(if overrides_of(bls).stopped { 0 } else { 1 }),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(bls)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        (
                            "binlogstream.io/spec-generation".to_string(),
                            bls.meta().generation.unwrap_or(0).to_string(),
                        ),
                        // The full name (the instance label is fitted to 63 characters):
                        // the chart's PodMonitor relabels it into `binlogstream`, the label
                        // the operator's per-stream metrics carry.
                        (STREAM_NAME_ANNOTATION.to_string(), bls.name_any()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name),
                    image_pull_secrets: (!cfg.image_pull_secrets.is_empty()).then(|| {
                        cfg.image_pull_secrets
                            .iter()
                            .map(|n| LocalObjectReference { name: n.clone() })
                            .collect()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: s.publisher.node_selector.clone(),
                    tolerations: s.publisher.tolerations.clone(),
                    // Above the publisher's drain deadline (20 s) plus its final status write (10 s).
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        // Lets uid 65532 read the mounted Secret files (mode 0440).
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BinlogStreamSpec;

    fn stream(tls: serde_json::Value) -> BinlogStream {
        let spec = serde_json::json!({
            "source": {"host": "10.0.0.5", "user": "repl",
                       "passwordSecretRef": {"name": "db-pw", "key": "password"}, "tls": tls},
            "target": {"stream": "s"}
        });
        let mut bls = BinlogStream::new(
            "orders",
            serde_json::from_value::<BinlogStreamSpec>(spec).expect("spec"),
        );
        bls.metadata.namespace = Some("shop".into());
        bls
    }

    fn cfg() -> BuildConfig {
        BuildConfig {
            publisher_image: "p".into(),
            image_pull_policy: None,
            image_pull_secrets: vec!["regcred".into()],
        }
    }

    fn env_of(bls: &BinlogStream) -> BTreeMap<String, String> {
        publisher_env(bls)
            .into_iter()
            .filter(|e| e.name.starts_with("BINLOGSTREAM_SOURCE_TLS"))
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_paused_stream_runs_no_pod() {
        let mut b = stream(serde_json::json!({"mode": "disabled"}));
        assert_eq!(
            deployment(&b, &cfg()).spec.and_then(|s| s.replicas),
            Some(1)
        );
        b.spec.paused = true;
        assert_eq!(
            deployment(&b, &cfg()).spec.and_then(|s| s.replicas),
            Some(0)
        );
    }

    fn all_env(bls: &BinlogStream) -> BTreeMap<String, String> {
        publisher_env(bls)
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn snapshot_start_and_an_on_demand_request_reach_the_publisher() {
        let mut b = stream(serde_json::json!({"mode": "disabled"}));
        b.spec.start = Some("snapshot".into());
        b.spec.snapshot = Some(crate::crd::SnapshotRequestSpec {
            request_id: "re-1".into(),
            tables: vec!["shop.orders".into(), "shop.items".into()],
        });
        let env = all_env(&b);
        assert_eq!(env["BINLOGSTREAM_START"], "snapshot");
        assert_eq!(env["BINLOGSTREAM_SNAPSHOT_REQUEST_ID"], "re-1");
        assert_eq!(
            env["BINLOGSTREAM_SNAPSHOT_TABLES"],
            "shop.orders,shop.items"
        );
        // An applied move to `latest` removed the checkpoint: the pod starts there.
        b.spec.checkpoint_request = Some(crate::crd::CheckpointRequestSpec {
            request_id: "mv-1".into(),
            to: "latest".into(),
            acknowledge_skip: true,
        });
        b.status = Some(crate::crd::BinlogStreamStatus {
            checkpoint_request: Some(crate::crd::CheckpointRequestStatus {
                request_id: "mv-1".into(),
                phase: "Stopping".into(),
                to: "latest".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            deployment(&b, &cfg()).spec.and_then(|s| s.replicas),
            Some(0),
            "stopped while the checkpoint moves"
        );
        if let Some(c) = b
            .status
            .as_mut()
            .and_then(|s| s.checkpoint_request.as_mut())
        {
            c.phase = "Applied".into();
        }
        assert_eq!(
            deployment(&b, &cfg()).spec.and_then(|s| s.replicas),
            Some(1)
        );
        assert_eq!(all_env(&b)["BINLOGSTREAM_START"], "latest");
    }

    #[test]
    fn publisher_pods_carry_the_full_stream_name_for_scrapes() {
        let mut b = stream(serde_json::json!({"mode": "disabled"}));
        let long = format!("{}-a", "x".repeat(80));
        b.metadata.name = Some(long.clone());
        let template = deployment(&b, &cfg()).spec.expect("spec").template;
        let meta = template.metadata.expect("metadata");
        assert_eq!(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(STREAM_NAME_ANNOTATION)),
            Some(&long)
        );
        // The label the PodMonitor falls back to is the fitted name.
        assert_eq!(
            meta.labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/instance")),
            Some(&instance_label(&b))
        );
    }

    #[test]
    fn long_names_fit_labels_and_stay_distinct() {
        let named = |n: &str| {
            let mut b = stream(serde_json::json!({"mode": "disabled"}));
            b.metadata.name = Some(n.into());
            b
        };
        let long_a = format!("{}-a", "x".repeat(80));
        let long_b = format!("{}-b", "x".repeat(80));
        for b in [named(&long_a), named(&long_b)] {
            assert!(child_name(&b).len() <= MAX_LABEL, "{}", child_name(&b));
            assert!(instance_label(&b).len() <= MAX_LABEL);
            assert!(labels(&b).values().all(|v| v.len() <= MAX_LABEL));
            let n = child_name(&b);
            assert!(
                n.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()),
                "{n}"
            );
        }
        assert_ne!(child_name(&named(&long_a)), child_name(&named(&long_b)));
        assert_ne!(
            instance_label(&named(&long_a)),
            instance_label(&named(&long_b))
        );
        // Short names are kept as they are.
        assert_eq!(child_name(&named("shop")), "bls-shop");
        assert_eq!(instance_label(&named("shop")), "shop");
        // Pinned: a name derived once must stay the same in later releases.
        assert_eq!(
            fit(&"y".repeat(70), 63),
            format!("{}-1f6178cb", "y".repeat(54))
        );
    }

    #[test]
    fn verify_identity_mounts_the_ca_and_client_cert_and_points_the_env_at_them() {
        let bls = stream(serde_json::json!({
            "mode": "verify-identity",
            "ca": {"configMapName": "rds-ca", "key": "global-bundle.pem"},
            "clientCertSecretName": "repl-cert",
            "serverName": "db.internal"
        }));
        let env = env_of(&bls);
        let want: BTreeMap<String, String> = [
            ("BINLOGSTREAM_SOURCE_TLS", "verify-identity"),
            (
                "BINLOGSTREAM_SOURCE_TLS_CA",
                "/etc/binlogstream/source-tls-ca/ca.pem",
            ),
            (
                "BINLOGSTREAM_SOURCE_TLS_CERT",
                "/etc/binlogstream/source-tls-client/tls.crt",
            ),
            (
                "BINLOGSTREAM_SOURCE_TLS_KEY",
                "/etc/binlogstream/source-tls-client/tls.key",
            ),
            ("BINLOGSTREAM_SOURCE_TLS_SERVER_NAME", "db.internal"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);

        let pod = deployment(&bls, &cfg())
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod spec");
        let volumes = pod.volumes.expect("volumes");
        let ca = volumes
            .iter()
            .find(|v| v.name == "source-tls-ca")
            .expect("ca volume");
        assert!(ca.secret.is_none());
        let map = ca.config_map.as_ref().expect("config map");
        assert_eq!(map.name, "rds-ca");
        let item = &map.items.as_ref().expect("items")[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            ("global-bundle.pem", "ca.pem")
        );
        let client = volumes
            .iter()
            .find(|v| v.name == "source-tls-client")
            .and_then(|v| v.secret.as_ref())
            .expect("client secret volume");
        assert_eq!(client.secret_name.as_deref(), Some("repl-cert"));
        assert_eq!(client.default_mode, Some(0o440));
        let mounts = pod.containers[0].volume_mounts.clone().expect("mounts");
        for (name, path) in [
            ("source-tls-ca", TLS_CA_DIR),
            ("source-tls-client", TLS_CLIENT_DIR),
        ] {
            let m = mounts.iter().find(|m| m.name == name).expect("mount");
            assert_eq!(m.mount_path, path);
            assert_eq!(m.read_only, Some(true));
            assert!(m.sub_path.is_none(), "subPath would stop rotation");
        }
        // Mounted by the kubelet: the publisher's role grants no Secret at all; only its own
        // status and its own fence lease, each by name.
        let rules = role(&bls).rules.expect("rules");
        assert!(rules.iter().all(|r| r
            .resources
            .iter()
            .flatten()
            .all(|x| x == "binlogstreams/status" || x == "leases")));
        assert!(rules
            .iter()
            .all(|r| r.resource_names.as_ref().is_some_and(|n| n.len() == 1)
                && r.verbs == ["get", "patch"]));
        let lease = publisher_lease(&bls);
        assert_eq!(lease.metadata.name, Some(child_name(&bls)));
        assert!(lease.spec.is_none(), "the publishers own the lease's spec");
        assert!(publisher_env(&bls)
            .iter()
            .any(|e| e.name == "BINLOGSTREAM_LEASE" && e.value == Some(child_name(&bls))));
        assert_eq!(
            pod.image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "regcred".into()
            }])
        );
    }

    #[test]
    fn a_ca_secret_and_required_mode_map_too() {
        let bls =
            stream(serde_json::json!({"mode": "verify-identity", "ca": {"secretName": "db-ca"}}));
        let pod = deployment(&bls, &cfg())
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod spec");
        let ca = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "source-tls-ca")
            .and_then(|v| v.secret)
            .expect("secret volume");
        assert_eq!(ca.secret_name.as_deref(), Some("db-ca"));
        assert_eq!(ca.items.expect("items")[0].key, "ca.crt", "default key");

        let bls = stream(serde_json::json!({"mode": "required"}));
        assert_eq!(
            env_of(&bls),
            BTreeMap::from([("BINLOGSTREAM_SOURCE_TLS".into(), "required".into())])
        );
    }

    #[test]
    fn disabled_or_absent_tls_adds_nothing() {
        for tls in [
            serde_json::json!(null),
            serde_json::json!({"mode": "disabled"}),
        ] {
            let bls = stream(tls);
            assert!(env_of(&bls).is_empty());
            let pod = deployment(&bls, &cfg())
                .spec
                .and_then(|s| s.template.spec)
                .expect("pod spec");
            assert_eq!(pod.volumes.expect("volumes").len(), 1, "only the password");
        }
    }
}
