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
        pod,
        now: Timestamp::now(),
    })
}

#[test]
fn streaming_within_threshold_is_ready() {
    let b = bls(BinlogStreamStatus {
        lag_seconds: Some(3),
        publisher: Some(PublisherReport {
            state: "Running".into(),
            ..Default::default()
        }),
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
        "replication lag is 120s, above the threshold of 30s"
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
fn binlog_at_risk_says_oldest_or_purged_and_how_far() {
    let status = |file: &str| BinlogStreamStatus {
        checkpoint: Some(CheckpointStatus {
            file: file.into(),
            position: 4,
            ..Default::default()
        }),
        source_binlogs: Some(SourceBinlogs {
            oldest: "binlog.000005".into(),
            newest: "binlog.000009".into(),
            count: 5,
        }),
        ..Default::default()
    };
    let c = run(&bls(status("binlog.000003")), PodState::Missing);
    assert_eq!(get(&c, "BinlogAtRisk").reason, "CheckpointPurged");
    let c = run(&bls(status("binlog.000005")), PodState::Missing);
    assert_eq!(
        (
            get(&c, "BinlogAtRisk").status.as_str(),
            get(&c, "BinlogAtRisk").reason.as_str()
        ),
        ("True", "CheckpointInOldestBinlog")
    );
    let c = run(&bls(status("binlog.000008")), PodState::Missing);
    let r = get(&c, "BinlogAtRisk");
    assert_eq!(r.status, "False");
    assert!(r.message.contains("3 binlog files newer"), "{}", r.message);
}

#[test]
fn transition_times_stay_until_the_status_changes() {
    let b = bls(BinlogStreamStatus {
        lag_seconds: Some(1),
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
