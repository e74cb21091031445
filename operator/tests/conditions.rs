//! Publisher reports and pod states turned into conditions (pure).

use k8s_openapi::jiff::Timestamp;
use operator::{
    crd::{
        BinlogStream, BinlogStreamSpec, BinlogStreamStatus, CheckpointStatus, PublisherReport,
        SourceBinlogs,
    },
    reconcile::conditions::{compute, transitions, Inputs, PodState},
};
use serde_json::json;

fn bls(status: BinlogStreamStatus) -> BinlogStream {
    let spec: BinlogStreamSpec = serde_json::from_value(json!({
        "source": {"host": "db", "user": "repl", "passwordSecretRef": {"name": "pw", "key": "password"}},
        "target": {"stream": "s"},
        "lag": {"thresholdSeconds": 30}
    }))
    .expect("spec");
    let mut b = BinlogStream::new("x", spec);
    b.metadata.generation = Some(2);
    b.status = Some(status);
    b
}

/// A publisher report written just now (so the lag on record is trusted).
fn reported_now(state: &str) -> Option<PublisherReport> {
    Some(PublisherReport {
        state: state.into(),
        time: Some(Timestamp::now().to_string()),
        ..Default::default()
    })
}

fn get<'a>(
    c: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    c.iter().find(|c| c.type_ == t).expect("condition")
}

fn run(
    b: &BinlogStream,
    pod: PodState,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    compute(&Inputs {
        bls: b,
        spec: Ok(()),
        apply: Ok(()),
        pod,
        now: Timestamp::now(),
    })
}

#[test]
fn streaming_within_threshold_is_ready() {
    let b = bls(BinlogStreamStatus {
        lag_seconds: Some(3),
        publisher: reported_now("Running"),
        ..Default::default()
    });
    let c = run(&b, PodState::Running { ready: true });
    assert_eq!(
        (
            get(&c, "Ready").status.as_str(),
            get(&c, "Ready").reason.as_str()
        ),
        ("True", "Streaming")
    );
    assert_eq!(get(&c, "Lagging").status, "False");
    assert_eq!(get(&c, "Degraded").status, "False");
    assert!(c.iter().all(|c| c.observed_generation == Some(2)));
}

#[test]
fn lag_above_threshold_is_lagging() {
    let b = bls(BinlogStreamStatus {
        lag_seconds: Some(120),
        publisher: reported_now("Running"),
        ..Default::default()
    });
    let c = run(&b, PodState::Running { ready: true });
    let lag = get(&c, "Lagging");
    assert_eq!(
        (lag.status.as_str(), lag.reason.as_str()),
        ("True", "LagAboveThreshold")
    );
    assert_eq!(
        lag.message,
        "replication lag is above the threshold of 30s (see status.lagSeconds)"
    );
    // The number lives in lagSeconds only: a moving lag must not change the condition.
    let mut b2 = b.clone();
    b2.status.as_mut().expect("status").lag_seconds = Some(150);
    assert_eq!(
        get(&run(&b2, PodState::Running { ready: true }), "Lagging").message,
        lag.message
    );
}

#[test]
fn a_retrying_publisher_is_degraded_with_its_reason() {
    let b = bls(BinlogStreamStatus {
        publisher: Some(PublisherReport {
            state: "Retrying".into(),
            reason: Some("KinesisFailing".into()),
            message: Some("Kinesis retrying: connection (attempt 4)".into()),
            time: None,
        }),
        ..Default::default()
    });
    let c = run(&b, PodState::Running { ready: false });
    let d = get(&c, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "KinesisFailing")
    );
    assert_eq!(get(&c, "Ready").status, "False");
}

#[test]
fn a_crash_looping_pod_is_degraded_with_the_publisher_message() {
    let b = bls(BinlogStreamStatus {
        publisher: Some(PublisherReport {
            state: "Failed".into(),
            reason: Some("SourceUnreachable".into()),
            message: Some("source repl@db:3306 is unreachable".into()),
            time: None,
        }),
        ..Default::default()
    });
    let c = run(
        &b,
        PodState::Failing {
            reason: "CrashLoopBackOff".into(),
            message: "back-off 40s restarting failed container".into(),
        },
    );
    let d = get(&c, "Degraded");
    assert_eq!(d.reason, "SourceUnreachable");
    assert!(
        d.message.contains("back-off") && d.message.contains("unreachable"),
        "{}",
        d.message
    );
}

#[test]
fn binlog_at_risk_says_oldest_or_purged() {
    let status = |file: &str, oldest: &str, newest: &str| BinlogStreamStatus {
        checkpoint: Some(CheckpointStatus {
            file: file.into(),
            position: 4,
            ..Default::default()
        }),
        source_binlogs: Some(SourceBinlogs {
            oldest: oldest.into(),
            newest: newest.into(),
            count: 5,
        }),
        ..Default::default()
    };
    let risk = |file: &str, oldest: &str, newest: &str| {
        let c = run(&bls(status(file, oldest, newest)), PodState::Missing);
        let r = get(&c, "BinlogAtRisk");
        (r.status.clone(), r.reason.clone())
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        risk("binlog.000003", "binlog.000005", "binlog.000009"),
        pair("True", "CheckpointPurged")
    );
    assert_eq!(
        risk("binlog.000005", "binlog.000005", "binlog.000009"),
        pair("True", "CheckpointInOldestBinlog")
    );
    assert_eq!(
        risk("binlog.000008", "binlog.000005", "binlog.000009"),
        pair("False", "CheckpointSafe")
    );
    // A source keeping one file: the active file cannot be purged (the demo showed True).
    assert_eq!(
        risk("binlog.000001", "binlog.000001", "binlog.000001"),
        pair("False", "CheckpointInActiveBinlog")
    );
    // Past the six digits of the suffix the server keeps counting: numeric, not text order.
    assert_eq!(
        risk("binlog.999999", "binlog.999998", "binlog.1000000"),
        pair("False", "CheckpointSafe")
    );
    // Another base name (log_bin_basename changed) cannot be ordered: not guessed.
    assert_eq!(
        risk("old-bin.000007", "binlog.000005", "binlog.000009"),
        pair("Unknown", "UnknownBinlogNames")
    );
}

#[test]
fn a_silent_publisher_makes_lagging_unknown() {
    let stale = Timestamp::now()
        .checked_sub(jiff_secs(600))
        .expect("time")
        .to_string();
    let b = bls(BinlogStreamStatus {
        lag_seconds: Some(1),
        checkpoint: Some(CheckpointStatus {
            file: "binlog.000001".into(),
            position: 4,
            written_at: Some(stale.clone()),
            ..Default::default()
        }),
        publisher: Some(PublisherReport {
            state: "Running".into(),
            time: Some(stale),
            ..Default::default()
        }),
        ..Default::default()
    });
    let lag = get(&run(&b, PodState::Running { ready: true }), "Lagging").clone();
    assert_eq!(
        (lag.status.as_str(), lag.reason.as_str()),
        ("Unknown", "PublisherSilent")
    );
    // A fresh checkpoint write is enough to trust the lag again.
    let mut fresh = b.clone();
    if let Some(cp) = fresh.status.as_mut().and_then(|s| s.checkpoint.as_mut()) {
        cp.written_at = Some(Timestamp::now().to_string());
    }
    let lag = get(&run(&fresh, PodState::Running { ready: true }), "Lagging").clone();
    assert_eq!(lag.reason, "LagWithinThreshold");
}

fn jiff_secs(s: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(s)
}

#[test]
fn transition_times_stay_until_the_status_changes() {
    let b = bls(BinlogStreamStatus {
        lag_seconds: Some(1),
        publisher: reported_now("Running"),
        ..Default::default()
    });
    let first = run(&b, PodState::Running { ready: true });
    let mut b2 = b.clone();
    b2.status.as_mut().expect("status").conditions = first.clone();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = run(&b2, PodState::Running { ready: true });
    assert_eq!(
        get(&first, "Ready").last_transition_time,
        get(&second, "Ready").last_transition_time
    );
    assert!(transitions(&first, &second).is_empty());
    b2.status.as_mut().expect("status").lag_seconds = Some(99);
    let third = run(&b2, PodState::Running { ready: true });
    assert_ne!(
        get(&first, "Lagging").last_transition_time,
        get(&third, "Lagging").last_transition_time
    );
    assert_eq!(transitions(&second, &third).len(), 1);
}

#[test]
fn a_refused_apply_is_degraded_with_the_api_message() {
    let b = bls(BinlogStreamStatus::default());
    let c = compute(&Inputs {
        bls: &b,
        spec: Ok(()),
        apply: Err("the API server refused Deployment bls-x: admission webhook denied".into()),
        pod: PodState::Missing,
        now: Timestamp::now(),
    });
    for t in ["Ready", "Degraded"] {
        assert_eq!(get(&c, t).reason, "ApplyFailed");
        assert!(get(&c, t).message.contains("admission webhook denied"));
    }
    assert_eq!(get(&c, "Ready").status, "False");
    assert_eq!(get(&c, "Degraded").status, "True");
}

#[test]
fn a_pod_the_replicaset_cannot_create_is_a_condition() {
    use k8s_openapi::api::apps::v1::Deployment;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bls-x"},
        "status": {"conditions": [{
            "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": "pods \"bls-x-5d9\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1"
        }]}
    }))
    .expect("deployment");
    let pod = operator::controller::replica_failure(&d).expect("failure");
    let b = bls(BinlogStreamStatus::default());
    let c = run(&b, pod);
    let r = get(&c, "Ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "FailedCreate")
    );
    assert!(r.message.contains("exceeded quota"), "{}", r.message);
    assert_eq!(get(&c, "Degraded").status, "True");
}

#[test]
fn a_paused_stream_says_paused_not_degraded() {
    let mut b = bls(BinlogStreamStatus {
        lag_seconds: Some(500),
        publisher: reported_now("Stopped"),
        ..Default::default()
    });
    b.spec.paused = true;
    let c = run(&b, PodState::Missing);
    let r = get(&c, "Ready");
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Paused"));
    assert!(r.message.contains("resumes there"), "{}", r.message);
    assert_eq!(get(&c, "Degraded").status, "False");
    assert_eq!(get(&c, "Lagging").reason, "Paused");
    // While the old pod drains, the message says so.
    let c = run(&b, PodState::Running { ready: false });
    assert!(get(&c, "Ready").message.contains("draining"));
}

#[test]
fn validation_names_fields() {
    use operator::reconcile::validate::validate;
    let mut spec: BinlogStreamSpec = serde_json::from_value(json!({
        "source": {"host": "db", "user": "repl", "passwordSecretRef": {"name": "pw", "key": "password"}},
        "target": {"stream": "s"}
    }))
    .expect("spec");
    assert!(validate(&spec).is_ok());
    spec.start = Some("binlog.000001:2".into());
    assert_eq!(validate(&spec).expect_err("bad").field, "spec.start");
    spec.start = None;
    spec.tables.exclude = vec!["nodot".into()];
    assert_eq!(
        validate(&spec).expect_err("bad").field,
        "spec.tables.exclude[0]"
    );
    spec.tables.exclude.clear();
    spec.target.stream = "bad name".into();
    assert_eq!(
        validate(&spec).expect_err("bad").field,
        "spec.target.stream"
    );
}

#[test]
fn snapshotting_shows_a_running_snapshot_and_streams_without_one_keep_four_conditions() {
    use operator::crd::SnapshotStatus;
    let plain = run(
        &bls(BinlogStreamStatus {
            publisher: reported_now("Running"),
            ..Default::default()
        }),
        PodState::Running { ready: true },
    );
    assert_eq!(
        plain.len(),
        4,
        "no Snapshotting condition without a snapshot"
    );
    let mut b = bls(BinlogStreamStatus {
        publisher: reported_now("Running"),
        snapshot: Some(SnapshotStatus {
            state: "Running".into(),
            request_id: "initial".into(),
            rows: 123,
            ..Default::default()
        }),
        ..Default::default()
    });
    b.spec.start = Some("snapshot".into());
    let c = run(&b, PodState::Running { ready: true });
    let s = get(&c, "Snapshotting");
    assert_eq!(
        (s.status.as_str(), s.reason.as_str()),
        ("True", "SnapshotRunning")
    );
    assert!(s.message.contains("`initial`"), "{}", s.message);
    assert!(
        !s.message.contains("123"),
        "no moving numbers in a condition"
    );
    assert_eq!(
        get(&c, "Ready").status,
        "True",
        "a snapshotting stream streams"
    );
    if let Some(sn) = b.status.as_mut().and_then(|s| s.snapshot.as_mut()) {
        sn.state = "Done".into();
        sn.finished_at = Some("2026-12-01T10:00:00Z".into());
    }
    let c = run(&b, PodState::Running { ready: true });
    let s = get(&c, "Snapshotting");
    assert_eq!(
        (s.status.as_str(), s.reason.as_str()),
        ("False", "SnapshotDone")
    );
}

#[test]
fn a_refused_skip_and_a_checkpoint_being_moved_hold_ready() {
    use operator::crd::{CheckpointRequestSpec, CheckpointRequestStatus};
    let mut b = bls(BinlogStreamStatus {
        publisher: reported_now("Running"),
        checkpoint_request: Some(CheckpointRequestStatus {
            request_id: "mv-1".into(),
            phase: "Refused".into(),
            to: "latest".into(),
            message: Some("checkpointRequest `mv-1` to `latest` moves forward ... set spec.checkpointRequest.acknowledgeSkip: true".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    b.spec.checkpoint_request = Some(CheckpointRequestSpec {
        request_id: "mv-1".into(),
        to: "latest".into(),
        acknowledge_skip: false,
    });
    let c = run(&b, PodState::Running { ready: true });
    let r = get(&c, "Ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "SkipNotAcknowledged")
    );
    assert!(r.message.contains("acknowledgeSkip"), "{}", r.message);
    assert_eq!(get(&c, "Degraded").status, "True");
    if let Some(cr) = b
        .status
        .as_mut()
        .and_then(|s| s.checkpoint_request.as_mut())
    {
        cr.phase = "Stopping".into();
        cr.from = Some("binlog.000003:900".into());
    }
    let c = run(&b, PodState::Missing);
    let r = get(&c, "Ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "MovingCheckpoint")
    );
    assert!(r.message.contains("binlog.000003:900"), "{}", r.message);
    if let Some(cr) = b
        .status
        .as_mut()
        .and_then(|s| s.checkpoint_request.as_mut())
    {
        cr.phase = "Applied".into();
    }
    let c = run(&b, PodState::Running { ready: true });
    assert_eq!(get(&c, "Ready").reason, "Streaming");
}
