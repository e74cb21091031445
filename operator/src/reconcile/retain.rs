//! The checkpoint that outlives its BinlogStream. Deleting a stream keeps its last
//! checkpoint in a ConfigMap (`bls-<name>-checkpoint`, no owner reference, so the garbage
//! collector leaves it); a stream created later under the same name in the same namespace
//! resumes from it. A finalizer holds the deletion until the publisher has stopped and its
//! final checkpoint is kept. Pure: the controller does the API calls.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::ResourceExt;

use crate::{
    crd::{BinlogStream, CheckpointStatus},
    reconcile::build,
};

/// Held on every BinlogStream the operator manages, removed once the checkpoint is kept.
pub const FINALIZER: &str = "cdc.binlogstream.io/retain-checkpoint";
/// On the retained ConfigMap: the name of the stream it belongs to (fitted to a label).
pub const RETAINED_OF_LABEL: &str = "cdc.binlogstream.io/retained-checkpoint-of";
const UID_ANNOTATION: &str = "cdc.binlogstream.io/stream-uid";
const RETAINED_AT_ANNOTATION: &str = "cdc.binlogstream.io/retained-at";
/// The checkpoint, exactly as `status.checkpoint` held it.
pub const DATA_KEY: &str = "checkpoint.json";
/// How long a deletion waits for the publisher pod to go (a node that is gone never reports
/// it) before it keeps the newest checkpoint stored so far.
pub const STOP_TIMEOUT_SECS: i64 = 300;

/// Name of the retained ConfigMap: the child name plus `-checkpoint` (a DNS subdomain).
pub fn config_map_name(bls: &BinlogStream) -> String {
    format!("{}-checkpoint", build::child_name(bls))
}

pub fn has_finalizer(bls: &BinlogStream) -> bool {
    bls.finalizers().iter().any(|f| f == FINALIZER)
}

/// The finalizer list with ours added (`Some`) or removed, or `None` when nothing changes.
pub fn finalizers_with(bls: &BinlogStream, ours: bool) -> Option<Vec<String>> {
    let has = has_finalizer(bls);
    if has == ours {
        return None;
    }
    let mut list: Vec<String> = bls
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != FINALIZER)
        .cloned()
        .collect();
    if ours {
        list.push(FINALIZER.into());
    }
    Some(list)
}

/// The ConfigMap that keeps `checkpoint` after `bls` is gone.
pub fn retained_config_map(
    bls: &BinlogStream,
    checkpoint: &CheckpointStatus,
    now: &str,
) -> ConfigMap {
    let mut labels = BTreeMap::from([(RETAINED_OF_LABEL.to_string(), build::instance_label(bls))]);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "binlogstream-operator".into(),
    );
    let mut annotations = BTreeMap::from([(RETAINED_AT_ANNOTATION.to_string(), now.to_string())]);
    if let Some(uid) = bls.uid() {
        annotations.insert(UID_ANNOTATION.into(), uid);
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(bls)),
            namespace: bls.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            DATA_KEY.to_string(),
            serde_json::to_string(checkpoint).unwrap_or_default(),
        )])),
        ..Default::default()
    }
}

/// What a retained ConfigMap offers the stream `bls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    /// Resume from this checkpoint.
    Restore {
        checkpoint: Box<CheckpointStatus>,
        from_uid: Option<String>,
        retained_at: Option<String>,
    },
    /// Kept from this very object (never handed to itself).
    Own,
    /// Present but not readable: the stream must not start from `spec.start` silently.
    Unreadable(String),
}

pub fn read(cm: &ConfigMap, bls: &BinlogStream) -> Retained {
    let name = cm.name_any();
    let annotations = cm.annotations();
    let from_uid = annotations.get(UID_ANNOTATION).cloned();
    if from_uid.is_some() && from_uid == bls.uid() {
        return Retained::Own;
    }
    let unreadable = |why: String| {
        Retained::Unreadable(format!(
            "ConfigMap {name} holds the checkpoint of a deleted BinlogStream of this name, but {why}; \
             fix it, or delete it to start from spec.start (the changes since that stream stopped are then not published)"
        ))
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
        return unreadable(format!("it has no `{DATA_KEY}` key"));
    };
    match serde_json::from_str::<CheckpointStatus>(text) {
        Ok(cp) if cp.file.is_empty() || cp.position < 4 => {
            unreadable(format!("its `{DATA_KEY}` names no binlog position"))
        }
        Ok(checkpoint) => Retained::Restore {
            checkpoint: Box::new(checkpoint),
            from_uid,
            retained_at: annotations.get(RETAINED_AT_ANNOTATION).cloned(),
        },
        Err(e) => unreadable(format!("its `{DATA_KEY}` is not a checkpoint: {e}")),
    }
}

/// Whether the stream may take over a retained checkpoint: only before any publisher of its
/// own has reported or stored one.
pub fn may_restore(bls: &BinlogStream) -> bool {
    let st = bls.status.clone().unwrap_or_default();
    st.checkpoint.is_none() && st.publisher.is_none() && st.restored_checkpoint.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BinlogStreamSpec, BinlogStreamStatus, PublisherReport};

    fn stream(name: &str, uid: &str) -> BinlogStream {
        let spec: BinlogStreamSpec = serde_json::from_value(serde_json::json!({
            "source": {"host": "db", "user": "repl", "passwordSecretRef": {"name": "pw", "key": "password"}},
            "target": {"stream": "s"}
        }))
        .expect("spec");
        let mut b = BinlogStream::new(name, spec);
        b.metadata.namespace = Some("shop".into());
        b.metadata.uid = Some(uid.into());
        b
    }

    fn cp() -> CheckpointStatus {
        CheckpointStatus {
            file: "binlog.000007".into(),
            position: 1234,
            gtid_set: Some("0-1-99".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_retained_checkpoint_goes_to_the_next_stream_of_that_name_unchanged() {
        let old = stream("orders", "uid-old");
        let cm = retained_config_map(&old, &cp(), "2026-12-01T10:00:00Z");
        assert_eq!(cm.metadata.name.as_deref(), Some("bls-orders-checkpoint"));
        assert!(
            cm.metadata.owner_references.is_none(),
            "must outlive the stream"
        );
        let new = stream("orders", "uid-new");
        assert_eq!(
            read(&cm, &new),
            Retained::Restore {
                checkpoint: Box::new(cp()),
                from_uid: Some("uid-old".into()),
                retained_at: Some("2026-12-01T10:00:00Z".into()),
            }
        );
        assert_eq!(read(&cm, &old), Retained::Own);
    }

    #[test]
    fn a_damaged_retained_checkpoint_is_refused_naming_the_config_map() {
        let new = stream("orders", "uid-new");
        let mut cm = retained_config_map(&stream("orders", "uid-old"), &cp(), "t");
        cm.data = Some(BTreeMap::from([(DATA_KEY.into(), "{\"file\": 3}".into())]));
        let Retained::Unreadable(msg) = read(&cm, &new) else {
            panic!("accepted a damaged checkpoint");
        };
        assert!(
            msg.contains("bls-orders-checkpoint") && msg.contains("delete it"),
            "{msg}"
        );
        cm.data = None;
        assert!(
            matches!(read(&cm, &new), Retained::Unreadable(m) if m.contains("no `checkpoint.json`"))
        );
        cm.data = Some(BTreeMap::from([(
            DATA_KEY.into(),
            "{\"file\":\"\",\"position\":0}".into(),
        )]));
        assert!(matches!(read(&cm, &new), Retained::Unreadable(_)));
    }

    #[test]
    fn long_names_fit() {
        let b = stream(&format!("shop-{}", "x".repeat(240)), "u");
        assert!(config_map_name(&b).len() <= 253);
        let cm = retained_config_map(&b, &cp(), "t");
        assert!(cm.labels()[RETAINED_OF_LABEL].len() <= build::MAX_LABEL);
    }

    #[test]
    fn the_finalizer_is_added_once_and_removed_keeping_the_others() {
        let mut b = stream("orders", "u");
        b.metadata.finalizers = Some(vec!["other.io/x".into()]);
        let added = finalizers_with(&b, true).expect("added");
        assert_eq!(added, vec!["other.io/x".to_string(), FINALIZER.to_string()]);
        b.metadata.finalizers = Some(added);
        assert!(has_finalizer(&b));
        assert_eq!(finalizers_with(&b, true), None);
        assert_eq!(
            finalizers_with(&b, false),
            Some(vec!["other.io/x".to_string()])
        );
    }

    #[test]
    fn only_a_stream_that_never_stored_a_checkpoint_takes_one_over() {
        let mut b = stream("orders", "u");
        assert!(may_restore(&b));
        b.status = Some(BinlogStreamStatus {
            publisher: Some(PublisherReport::default()),
            ..Default::default()
        });
        assert!(
            !may_restore(&b),
            "its own publisher already started from spec.start"
        );
        b.status = Some(BinlogStreamStatus {
            checkpoint: Some(cp()),
            ..Default::default()
        });
        assert!(!may_restore(&b));
    }
}
