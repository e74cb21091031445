//! Reconciler scenarios against a faked API server: each expected request is checked
//! (method, path, body) and answered in order.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use k8s_openapi::{api::core::v1::Secret, ByteString};
use kube::{client::Body, Client};
use operator::{
    controller::{reconcile, Context},
    crd::{BinlogStream, BinlogStreamSpec},
    metrics::OperatorMetrics,
    reconcile::build::BuildConfig,
};
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

type H = Handle<Request<Body>, Response<Body>>;

fn stream(spec: Value) -> BinlogStream {
    let mut bls = BinlogStream::new(
        "orders",
        serde_json::from_value::<BinlogStreamSpec>(spec).expect("spec"),
    );
    bls.metadata.namespace = Some("shop".into());
    bls.metadata.uid = Some("0b5c6f2e-1111-2222-3333-444455556666".into());
    bls.metadata.generation = Some(3);
    bls.metadata.resource_version = Some("41".into());
    // As after the first reconcile (a_new_stream_gets_the_retain_finalizer_first adds it).
    bls.metadata.finalizers = Some(vec![operator::reconcile::retain::FINALIZER.into()]);
    bls
}

/// The restore check of a stream that never stored a checkpoint: no retained one here.
async fn no_retained_checkpoint(h: &mut H) {
    expect(
        h,
        "GET",
        "/api/v1/namespaces/shop/configmaps/bls-orders-checkpoint",
        |_| not_found(),
    )
    .await;
}

fn valid_spec() -> Value {
    json!({
        "source": {"host": "db.shop", "port": 3306, "user": "repl", "passwordSecretRef": {"name": "db-pw", "key": "password"}},
        "tables": {"include": ["shop.*"]},
        "target": {"stream": "shop-changes", "region": "eu-west-1"},
        "start": "earliest"
    })
}

fn ok_json(v: Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(&v).expect("json")))
        .expect("response")
}

fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from(
            serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}))
                .expect("json"),
        ))
        .expect("response")
}

async fn body_json(req: Request<Body>) -> (String, String, Value) {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let bytes = req.into_body().collect_bytes().await.expect("body");
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json body")
    };
    (method, uri, v)
}

/// Takes the next request, checks method and path prefix, answers with `resp(body)`.
async fn expect(
    h: &mut H,
    method: &str,
    path: &str,
    resp: impl FnOnce(&Value) -> Response<Body>,
) -> Value {
    let Some((req, send)) = h.next_request().await else {
        panic!("the reconciler made no further request (expected {method} {path})");
    };
    let (m, uri, body) = body_json(req).await;
    assert_eq!(m, method, "method of {uri}");
    assert!(
        uri.starts_with(path),
        "expected {method} {path}, got {m} {uri}"
    );
    send.send_response(resp(&body));
    body
}

/// A context whose caches a test may still fill before wrapping it.
fn bare_context(client: Client) -> Context {
    Context::new(
        client,
        BuildConfig {
            publisher_image: "binlogstream/publisher:0.1.0".into(),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
        },
        Arc::new(OperatorMetrics::default()),
    )
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(bare_context(client))
}

fn secret() -> Value {
    let s = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("db-pw".into()),
            namespace: Some("shop".into()),
            labels: Some(
                [(
                    "cdc.binlogstream.io/allow-binlogstreams".to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([("password".to_string(), ByteString(b"pw".to_vec()))].into()),
        ..Default::default()
    };
    serde_json::to_value(s).expect("secret")
}

fn echo(body: &Value) -> Response<Body> {
    ok_json(body.clone())
}

/// Answers a status patch like the API server: the whole object with the new status.
fn with_status(bls: &BinlogStream) -> impl FnOnce(&Value) -> Response<Body> + '_ {
    move |patch: &Value| {
        let mut obj = serde_json::to_value(bls).expect("object");
        obj["status"] = patch["status"].clone();
        ok_json(obj)
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

async fn drain_events(h: &mut H, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            expect(
                h,
                "POST",
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                echo,
            )
            .await,
        );
    }
    out
}

#[tokio::test]
async fn create_applies_every_child_and_reports_starting() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = Arc::new(stream(valid_spec()));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));

    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| ok_json(secret()),
    )
    .await;
    no_retained_checkpoint(&mut h).await;
    let sa = expect(&mut h, "PATCH", "/api/v1/namespaces/shop/serviceaccounts/bls-orders?&force=true&fieldManager=binlogstream-operator", echo).await;
    assert_eq!(sa["metadata"]["ownerReferences"][0]["kind"], "BinlogStream");
    assert_eq!(sa["metadata"]["ownerReferences"][0]["controller"], true);
    let role = expect(
        &mut h,
        "PATCH",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/bls-orders",
        echo,
    )
    .await;
    // Only its own status: no Secret (kubelet mounts them), no other object.
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["cdc.binlogstream.io"], "resources": ["binlogstreams/status"],
                "resourceNames": ["orders"], "verbs": ["get", "patch"]},
               {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "resourceNames": ["bls-orders"], "verbs": ["get", "patch"]}])
    );
    let rb = expect(
        &mut h,
        "PATCH",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/bls-orders",
        echo,
    )
    .await;
    assert_eq!(rb["subjects"][0]["name"], "bls-orders");
    // The fence lease: metadata only, the publishers own its spec.
    let lease = expect(
        &mut h,
        "PATCH",
        "/apis/coordination.k8s.io/v1/namespaces/shop/leases/bls-orders",
        echo,
    )
    .await;
    assert!(lease.get("spec").is_none(), "{lease}");
    let dep = expect(
        &mut h,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
        echo,
    )
    .await;
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let container = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "binlogstream/publisher:0.1.0");
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("").to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("BINLOGSTREAM_SOURCE"), "mysql://repl@db.shop:3306");
    assert_eq!(get("BINLOGSTREAM_CHECKPOINT_KUBERNETES"), "shop/orders");
    assert_eq!(get("BINLOGSTREAM_START"), "earliest");
    assert_eq!(get("BINLOGSTREAM_INCLUDE"), "shop.*");
    let server_id: u32 = get("BINLOGSTREAM_SERVER_ID").parse().expect("server id");
    assert!(
        server_id >= 1 << 30,
        "derived from the UID into a high range"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    // Pods come from the reflector cache: no request.
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status?&force=true&fieldManager=binlogstream-operator-status",
        with_status(&bls),
    )
    .await;
    assert_eq!(status["status"]["observedGeneration"], 3);
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("PublisherStarting"))
    );
    assert_eq!(condition(&status, "Lagging")["status"], "Unknown");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(condition(&status, "BinlogAtRisk")["status"], "Unknown");
    let events = drain_events(&mut h, 4).await;
    assert!(events.iter().any(|e| e["reason"] == "PublisherStarting"));
    let action = task.await.expect("task").expect("reconcile ok");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(operator::controller::RESYNC)
    );
}

#[tokio::test]
async fn an_invalid_spec_is_ready_false_naming_the_field_and_creates_nothing() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut spec = valid_spec();
    spec["source"]["port"] = json!(70000);
    let bls = Arc::new(stream(spec));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    // Pods come from the reflector cache: no request.
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(
        ready["message"],
        "spec.source.port: 70000 is not a TCP port (1-65535)"
    );
    let events = drain_events(&mut h, 4).await;
    assert!(events
        .iter()
        .any(|e| e["type"] == "Warning" && e["reason"] == "InvalidSpec"));
    task.await.expect("task").expect("reconcile ok");
}

#[tokio::test]
async fn a_missing_secret_is_ready_false_naming_the_field() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = Arc::new(stream(valid_spec()));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| not_found(),
    )
    .await;
    // Pods come from the reflector cache: no request.
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    assert_eq!(
        condition(&status, "Ready")["message"],
        "spec.source.passwordSecretRef: secret `db-pw` does not exist in namespace `shop`"
    );
    drain_events(&mut h, 4).await;
    let action = task.await.expect("task").expect("reconcile ok");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(30))
    );
}

#[tokio::test]
async fn a_deleted_stream_is_left_to_the_garbage_collector() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut bls = stream(valid_spec());
    // Its checkpoint already kept (or made before the finalizer existed).
    bls.metadata.finalizers = None;
    bls.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let action = reconcile(Arc::new(bls), ctx).await.expect("ok");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let next = tokio::time::timeout(std::time::Duration::from_millis(50), h.next_request()).await;
    assert!(
        !matches!(next, Ok(Some(_))),
        "no API call for a deleted resource"
    );
}

#[tokio::test]
async fn unchanged_conditions_are_not_rewritten() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut spec = valid_spec();
    spec["source"]["port"] = json!(0);
    let mut bls = stream(spec);
    // The status as the first reconcile would have left it.
    let inputs = operator::reconcile::conditions::Inputs {
        bls: &bls,
        spec: Err("spec.source.port: 0 is not a TCP port (1-65535)".into()),
        apply: Ok(()),
        pod: operator::reconcile::conditions::PodState::Missing,
        now: k8s_openapi::jiff::Timestamp::now(),
    };
    let conds = operator::reconcile::conditions::compute(&inputs);
    bls.status = Some(operator::crd::BinlogStreamStatus {
        observed_generation: Some(3),
        conditions: conds,
        ..Default::default()
    });
    let task = tokio::spawn(reconcile(Arc::new(bls), ctx));
    // Pods come from the reflector cache: no request.
    task.await.expect("task").expect("ok");
    let next = tokio::time::timeout(std::time::Duration::from_millis(50), h.next_request()).await;
    assert!(
        !matches!(next, Ok(Some(_))),
        "no status write or event when nothing changed"
    );
}

#[tokio::test]
async fn a_tls_spec_checks_its_ca_config_map_and_client_secret() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut spec = valid_spec();
    spec["source"]["tls"] = json!({
        "mode": "verify-identity",
        "ca": {"configMapName": "rds-ca", "key": "global-bundle.pem"},
        "clientCertSecretName": "repl-cert"
    });
    let bls = Arc::new(stream(spec));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| ok_json(secret()),
    )
    .await;
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/repl-cert",
        |_| {
            ok_json(
                json!({"kind": "Secret", "apiVersion": "v1", "type": "kubernetes.io/tls",
                "metadata": {"name": "repl-cert", "namespace": "shop",
                             "labels": {"cdc.binlogstream.io/allow-binlogstreams": "true"}},
                "data": {"tls.crt": "Yw==", "tls.key": "aw=="}}),
            )
        },
    )
    .await;
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/configmaps/rds-ca",
        |_| not_found(),
    )
    .await;
    // Pods come from the reflector cache: no request.
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(
        ready["message"],
        "spec.source.tls.ca: config map `rds-ca` does not exist in namespace `shop`"
    );
    drain_events(&mut h, 4).await;
    task.await.expect("task").expect("reconcile ok");
}

#[tokio::test]
async fn a_ca_with_tls_disabled_is_an_invalid_spec() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut spec = valid_spec();
    spec["source"]["tls"] = json!({"ca": {"secretName": "db-ca"}});
    let bls = Arc::new(stream(spec));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    // Pods come from the reflector cache: no request.
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(
        ready["message"],
        "spec.source.tls.ca: is set but spec.source.tls.mode is disabled; set mode to required or verify-identity"
    );
    drain_events(&mut h, 4).await;
    task.await.expect("task").expect("reconcile ok");
}

fn refused(code: u16, message: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("code"))
        .body(Body::from(
            serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": code, "message": message}))
                .expect("json"),
        ))
        .expect("response")
}

#[tokio::test]
async fn a_child_refused_by_admission_is_ready_false_with_the_api_message() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = Arc::new(stream(valid_spec()));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| ok_json(secret()),
    )
    .await;
    no_retained_checkpoint(&mut h).await;
    expect(
        &mut h,
        "PATCH",
        "/api/v1/namespaces/shop/serviceaccounts/bls-orders",
        echo,
    )
    .await;
    expect(
        &mut h,
        "PATCH",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/bls-orders",
        echo,
    )
    .await;
    expect(
        &mut h,
        "PATCH",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/bls-orders",
        echo,
    )
    .await;
    expect(
        &mut h,
        "PATCH",
        "/apis/coordination.k8s.io/v1/namespaces/shop/leases/bls-orders",
        echo,
    )
    .await;
    expect(&mut h, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/bls-orders", |_| {
        refused(403, "admission webhook \"policy.example\" denied the request: images must come from registry.example")
    })
    .await;
    // Pods come from the reflector cache: no request.
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("ApplyFailed"))
    );
    let msg = ready["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("Deployment bls-orders") && msg.contains("images must come from"),
        "{msg}"
    );
    assert_eq!(condition(&status, "Degraded")["reason"], "ApplyFailed");
    let events = drain_events(&mut h, 4).await;
    assert!(events.iter().any(|e| e["reason"] == "ApplyFailed"));
    task.await
        .expect("task")
        .expect("reconcile ok: the refusal is in the status, not an error loop");
}

/// Like the API server: the applied object with a resourceVersion and generation.
fn stored(body: &Value) -> Value {
    let mut v = body.clone();
    v["metadata"]["resourceVersion"] = json!("7");
    v["metadata"]["generation"] = json!(1);
    v
}

#[tokio::test]
async fn an_unchanged_stream_costs_no_api_request() {
    use kube::runtime::{reflector, watcher};
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let (pods, _) = reflector::store();
    let (deployments, mut dw) = reflector::store();
    let (service_accounts, mut sw) = reflector::store();
    let (roles, mut rw) = reflector::store();
    let (role_bindings, mut bw) = reflector::store();
    let mut ctx = bare_context(client);
    ctx.caches = operator::cache::Caches {
        pods,
        deployments,
        service_accounts,
        roles,
        role_bindings,
    };
    let ctx = Arc::new(ctx);
    let bls = stream(valid_spec());
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx.clone()));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| ok_json(secret()),
    )
    .await;
    no_retained_checkpoint(&mut h).await;
    let sa = expect(
        &mut h,
        "PATCH",
        "/api/v1/namespaces/shop/serviceaccounts/bls-orders",
        |b| ok_json(stored(b)),
    )
    .await;
    let role = expect(
        &mut h,
        "PATCH",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/bls-orders",
        |b| ok_json(stored(b)),
    )
    .await;
    let rb = expect(
        &mut h,
        "PATCH",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/bls-orders",
        |b| ok_json(stored(b)),
    )
    .await;
    expect(
        &mut h,
        "PATCH",
        "/apis/coordination.k8s.io/v1/namespaces/shop/leases/bls-orders",
        |b| ok_json(stored(b)),
    )
    .await;
    let dep = expect(
        &mut h,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
        |b| ok_json(stored(b)),
    )
    .await;
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    drain_events(&mut h, 4).await;
    task.await.expect("task").expect("first reconcile");

    // The watches deliver what was applied; the publisher then writes its status again.
    fn seen<K: serde::de::DeserializeOwned>(v: &Value) -> K {
        serde_json::from_value(stored(v)).expect("object")
    }
    dw.apply_watcher_event(&watcher::Event::Apply(seen(&dep)));
    sw.apply_watcher_event(&watcher::Event::Apply(seen(&sa)));
    rw.apply_watcher_event(&watcher::Event::Apply(seen(&role)));
    bw.apply_watcher_event(&watcher::Event::Apply(seen(&rb)));
    let mut again = bls.clone();
    again.status = serde_json::from_value(status["status"].clone()).expect("status");
    if let Some(s) = again.status.as_mut() {
        s.records_published = Some(1234);
    }
    // A request now would wait for an answer the mock never gives: the timeout would fire.
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        reconcile(Arc::new(again.clone()), ctx.clone()),
    )
    .await
    .expect("the second reconcile made an API request");
    second.expect("second reconcile");

    // Someone deletes the Deployment: the next reconcile applies it again.
    dw.apply_watcher_event(&watcher::Event::Delete(seen(&dep)));
    let task = tokio::spawn(reconcile(Arc::new(again), ctx));
    expect(
        &mut h,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
        |b| ok_json(stored(b)),
    )
    .await;
    task.await.expect("task").expect("third reconcile");
}

#[tokio::test]
async fn a_secret_without_the_owners_opt_in_is_refused_and_nothing_mounts_it() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = Arc::new(stream(valid_spec()));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| {
            ok_json(
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "db-pw", "namespace": "shop", "labels": {"team": "payments"}}}),
            )
        },
    )
    .await;
    // No apply: the next request is the status, so no Deployment (no pod) names the Secret.
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    let msg = ready["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("spec.source.passwordSecretRef: secret `db-pw` is not labelled cdc.binlogstream.io/allow-binlogstreams=true"),
        "{msg}"
    );
    drain_events(&mut h, 4).await;
    task.await.expect("task").expect("reconcile ok");
}

#[tokio::test]
async fn secret_values_are_never_requested() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = Arc::new(stream(valid_spec()));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    let (req, send) = h.next_request().await.expect("a request");
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(req.uri().path().ends_with("/secrets/db-pw"));
    assert!(
        accept.contains("as=PartialObjectMetadata"),
        "a Secret is asked for as metadata only, got Accept: {accept}"
    );
    send.send_response(ok_json(secret()));
    task.abort();
}

#[tokio::test]
async fn a_pod_stuck_on_a_missing_secret_key_says_so() {
    use kube::runtime::{reflector, watcher};
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let mut ctx = bare_context(Client::new(svc, "default"));
    let (pods, mut pw) = reflector::store();
    let created = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(300))
        .expect("time");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "bls-orders-7d4-x2", "namespace": "shop", "creationTimestamp": created.to_string(),
                     "labels": {"app.kubernetes.io/name": "binlogstream-publisher", "app.kubernetes.io/instance": "orders"}},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "publisher", "ready": false, "restartCount": 0, "image": "p", "imageID": "",
                   "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    }))
    .expect("pod");
    pw.apply_watcher_event(&watcher::Event::Apply(pod));
    ctx.caches.pods = pods;
    let ctx = Arc::new(ctx);
    let bls = Arc::new(stream(valid_spec()));
    let task = tokio::spawn(reconcile(bls.clone(), ctx));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| ok_json(secret()),
    )
    .await;
    no_retained_checkpoint(&mut h).await;
    for path in [
        "/api/v1/namespaces/shop/serviceaccounts/bls-orders",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/bls-orders",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/bls-orders",
        "/apis/coordination.k8s.io/v1/namespaces/shop/leases/bls-orders",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
    ] {
        expect(&mut h, "PATCH", path, echo).await;
    }
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/events?&fieldSelector=involvedObject.kind%3DPod%2CinvolvedObject.name%3Dbls-orders-7d4-x2",
        |_| {
            ok_json(json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": {"name": "e1", "namespace": "shop"},
                "involvedObject": {"kind": "Pod", "name": "bls-orders-7d4-x2"},
                "reason": "FailedMount", "type": "Warning",
                "message": "MountVolume.SetUp failed for volume \"source-password\" : couldn't find key password in Secret shop/db-pw"
            }]}))
        },
    )
    .await;
    let status = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status",
        with_status(&bls),
    )
    .await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "FailedMount");
    assert!(ready["message"]
        .as_str()
        .unwrap_or("")
        .contains("couldn't find key password in Secret shop/db-pw"));
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    drain_events(&mut h, 4).await;
    task.await.expect("task").expect("reconcile ok");
}

/// Answers event POSTs until the reconcile ends; returns their reasons and the result.
async fn finish_with_events(
    h: &mut H,
    task: tokio::task::JoinHandle<
        Result<kube::runtime::controller::Action, operator::controller::Error>,
    >,
) -> (Vec<String>, kube::runtime::controller::Action) {
    let mut reasons = Vec::new();
    let mut task = task;
    loop {
        tokio::select! {
            r = &mut task => return (reasons, r.expect("task").expect("reconcile ok")),
            next = h.next_request() => {
                let Some((req, send)) = next else {
                    // The client is gone: the reconcile has ended.
                    return (reasons, task.await.expect("task").expect("reconcile ok"));
                };
                let (m, uri, body) = body_json(req).await;
                assert!(m == "POST" && uri.starts_with("/apis/events.k8s.io/v1/namespaces/shop/events"), "unexpected {m} {uri}");
                reasons.push(body["reason"].as_str().unwrap_or_default().to_string());
                send.send_response(ok_json(body));
            }
        }
    }
}

/// The children's applies; the fence lease only on the operator's first reconcile of the
/// stream (it is applied once per operator run and desired state).
async fn children(h: &mut H, first: bool) -> Value {
    for path in [
        "/api/v1/namespaces/shop/serviceaccounts/bls-orders",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/bls-orders",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/bls-orders",
    ] {
        expect(h, "PATCH", path, echo).await;
    }
    if first {
        expect(
            h,
            "PATCH",
            "/apis/coordination.k8s.io/v1/namespaces/shop/leases/bls-orders",
            echo,
        )
        .await;
    }
    expect(
        h,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
        echo,
    )
    .await
}

const STATUS: &str =
    "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status";

/// spec.checkpointRequest, a rewind: the first reconcile records the request and scales the
/// publisher to 0; the next one (no pod left) decides against the publisher's final
/// checkpoint, records it, moves the checkpoint by merge patch under its own manager (the
/// completed snapshot requests kept, the GTID set and in-transaction marks cleared), records
/// `Applied` before the Deployment goes back to 1 replica, and an Event names both positions.
#[tokio::test]
async fn a_rewind_stops_the_publisher_moves_the_checkpoint_once_and_starts_it_again() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut spec = valid_spec();
    spec["checkpointRequest"] = json!({"requestId": "rw-1", "to": "binlog.000009:4"});
    let mut bls = stream(spec);
    let checkpoint = |pos: i64| operator::crd::CheckpointStatus {
        file: "binlog.000009".into(),
        position: pos,
        rows_in_transaction: 2,
        gtid_set: Some("0-1-77".into()),
        display: Some(format!("binlog.000009:{pos}")),
        snapshot: Some(operator::crd::SnapshotCheckpointStatus {
            request_id: "initial".into(),
            completed: vec!["initial".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    bls.status = Some(operator::crd::BinlogStreamStatus {
        checkpoint: Some(checkpoint(900)),
        ..Default::default()
    });
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx.clone()));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| ok_json(secret()),
    )
    .await;
    let dep = children(&mut h, true).await;
    assert_eq!(
        dep["spec"]["replicas"], 0,
        "stopped while the request is applied"
    );
    let accepted = expect(
        &mut h,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/shop/events",
        echo,
    )
    .await;
    assert_eq!(accepted["reason"], "CheckpointRequestAccepted");
    let first = expect(&mut h, "PATCH", STATUS, with_status(&bls)).await;
    let rec = &first["status"]["checkpointRequest"];
    assert_eq!(
        (rec["phase"].as_str(), rec["direction"].as_str()),
        (Some("Stopping"), Some("Rewind"))
    );
    assert_eq!(condition(&first, "Ready")["reason"], "MovingCheckpoint");
    let (_, action) = finish_with_events(&mut h, task).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(3))
    );

    // The publisher drained and stored a later checkpoint before it stopped.
    let mut stopped = bls.clone();
    let mut st: operator::crd::BinlogStreamStatus =
        serde_json::from_value(first["status"].clone()).expect("status");
    st.checkpoint = Some(checkpoint(1000));
    stopped.status = Some(st);
    stopped.metadata.resource_version = Some("42".into());
    let live = serde_json::to_value(&stopped).expect("object");
    let task = tokio::spawn(reconcile(Arc::new(stopped.clone()), ctx));
    expect(&mut h, "GET", STATUS, |_| ok_json(live.clone())).await;
    expect(&mut h, "GET", "/api/v1/namespaces/shop/pods?&labelSelector=app.kubernetes.io%2Finstance%3Dorders%2Capp.kubernetes.io%2Fname%3Dbinlogstream-publisher", |_| {
        ok_json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}))
    })
    .await;
    expect(&mut h, "GET", STATUS, |_| ok_json(live.clone())).await;
    let applying = expect(&mut h, "PATCH", STATUS, with_status(&stopped)).await;
    assert_eq!(applying["status"]["checkpointRequest"]["phase"], "Applying");
    assert_eq!(
        applying["status"]["checkpointRequest"]["from"],
        "binlog.000009:1000"
    );
    assert!(
        applying["status"]["conditions"].is_array(),
        "an apply keeps the conditions"
    );
    // A merge patch: the API server removes the keys set to null.
    fn strip_nulls(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(strip_nulls);
        }
    }
    let moved = expect(
        &mut h,
        "PATCH",
        &format!("{STATUS}?&fieldManager=binlogstream-operator-checkpoint"),
        |patch: &Value| {
            let mut obj = serde_json::to_value(&stopped).expect("object");
            let mut st = patch["status"].clone();
            strip_nulls(&mut st);
            obj["status"] = st;
            ok_json(obj)
        },
    )
    .await;
    assert_eq!(moved["metadata"]["resourceVersion"], "42");
    assert_eq!(
        moved["metadata"]["uid"],
        "0b5c6f2e-1111-2222-3333-444455556666"
    );
    let cp = &moved["status"]["checkpoint"];
    assert_eq!(
        (cp["file"].as_str(), cp["position"].as_i64()),
        (Some("binlog.000009"), Some(4))
    );
    assert_eq!(cp["rowsInTransaction"], 0);
    assert!(
        cp["gtidSet"].is_null() && cp.get("gtidSet").is_some(),
        "cleared by name: {cp}"
    );
    assert_eq!(cp["snapshot"]["completed"], json!(["initial"]));
    let applied = expect(&mut h, "PATCH", STATUS, with_status(&stopped)).await;
    let rec = &applied["status"]["checkpointRequest"];
    assert_eq!(rec["phase"], "Applied");
    let dep = children(&mut h, false).await;
    assert_eq!(
        dep["spec"]["replicas"], 1,
        "started again only after Applied is recorded"
    );
    let ev = expect(
        &mut h,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/shop/events",
        echo,
    )
    .await;
    assert_eq!(ev["reason"], "CheckpointRewound");
    let note = ev["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("binlog.000009:1000") && note.contains("binlog.000009:4"),
        "{note}"
    );
    let last = expect(&mut h, "PATCH", STATUS, with_status(&stopped)).await;
    assert_eq!(last["status"]["checkpointRequest"]["phase"], "Applied");
    assert_ne!(condition(&last, "Ready")["reason"], "MovingCheckpoint");
    finish_with_events(&mut h, task).await;
}

/// A skip without `acknowledgeSkip`: nothing is stopped or moved, Ready=False with reason
/// SkipNotAcknowledged and a Warning Event.
#[tokio::test]
async fn a_skip_without_the_acknowledgement_changes_nothing() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut spec = valid_spec();
    spec["checkpointRequest"] = json!({"requestId": "sk-1", "to": "latest"});
    let mut bls = stream(spec);
    bls.status = Some(operator::crd::BinlogStreamStatus {
        checkpoint: Some(operator::crd::CheckpointStatus {
            file: "binlog.000009".into(),
            position: 900,
            ..Default::default()
        }),
        ..Default::default()
    });
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx));
    expect(
        &mut h,
        "GET",
        "/api/v1/namespaces/shop/secrets/db-pw",
        |_| ok_json(secret()),
    )
    .await;
    let dep = children(&mut h, true).await;
    assert_eq!(dep["spec"]["replicas"], 1, "the publisher keeps running");
    let refused = expect(
        &mut h,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/shop/events",
        echo,
    )
    .await;
    assert_eq!(
        (refused["reason"].as_str(), refused["type"].as_str()),
        (Some("SkipNotAcknowledged"), Some("Warning"))
    );
    let st = expect(&mut h, "PATCH", STATUS, with_status(&bls)).await;
    assert!(
        st["status"].get("checkpoint").is_none(),
        "the operator never writes the checkpoint by apply"
    );
    assert_eq!(st["status"]["checkpointRequest"]["phase"], "Refused");
    let ready = condition(&st, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("SkipNotAcknowledged"))
    );
    assert!(ready["message"]
        .as_str()
        .unwrap_or_default()
        .contains("acknowledgeSkip: true"));
    finish_with_events(&mut h, task).await;
}

/// The first reconcile of a stream adds the finalizer before anything else, guarded by the
/// resourceVersion it read (a merge patch replaces the list whole).
#[tokio::test]
async fn a_new_stream_gets_the_retain_finalizer_first() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let mut bls = stream(valid_spec());
    bls.metadata.finalizers = Some(vec!["other.example/keep".into()]);
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx));
    let patch = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders?",
        echo,
    )
    .await;
    assert_eq!(
        patch,
        json!({"metadata": {"resourceVersion": "41", "finalizers": ["other.example/keep", operator::reconcile::retain::FINALIZER]}})
    );
    drop(h);
    let _ = task.await;
}

fn deleting(mut bls: BinlogStream) -> BinlogStream {
    bls.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    bls
}

/// Deleting a stream: its publisher is scaled to 0 and the deletion waits while a pod is
/// left; once none is, the final checkpoint (read live) goes into a ConfigMap without owner,
/// the finalizer goes, and an Event says where the checkpoint is.
#[tokio::test]
async fn a_deleted_stream_stops_its_publisher_then_keeps_its_checkpoint() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = deleting(stream(valid_spec()));
    let running = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bls-orders", "namespace": "shop"}, "spec": {"replicas": 1,
        "selector": {}, "template": {}}});
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx.clone()));
    expect(
        &mut h,
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
        |_| ok_json(running.clone()),
    )
    .await;
    let scaled = expect(
        &mut h,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
        echo,
    )
    .await;
    assert_eq!(scaled["spec"]["replicas"], 0);
    expect(&mut h, "GET", "/api/v1/namespaces/shop/pods?", |_| {
        ok_json(
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [{"metadata": {"name": "bls-orders-1", "namespace": "shop"}}]}),
        )
    })
    .await;
    let action = task.await.expect("task").expect("first reconcile");
    assert_ne!(
        action,
        kube::runtime::controller::Action::await_change(),
        "must come back while the pod drains"
    );

    let checkpoint = json!({"file": "binlog.000009", "position": 777, "rowsInTransaction": 0, "gtidSet": "0-1-42"});
    let mut live = serde_json::to_value(&bls).expect("object");
    live["status"] = json!({"checkpoint": checkpoint});
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx));
    expect(
        &mut h,
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments/bls-orders",
        |_| {
            let mut d = running.clone();
            d["spec"]["replicas"] = json!(0);
            ok_json(d)
        },
    )
    .await;
    expect(&mut h, "GET", "/api/v1/namespaces/shop/pods?", |_| {
        ok_json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}))
    })
    .await;
    expect(
        &mut h,
        "GET",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders",
        |_| ok_json(live.clone()),
    )
    .await;
    let cm = expect(
        &mut h,
        "PATCH",
        "/api/v1/namespaces/shop/configmaps/bls-orders-checkpoint?&force=true&fieldManager=binlogstream-operator",
        echo,
    )
    .await;
    assert!(cm["metadata"].get("ownerReferences").is_none(), "{cm}");
    let kept: Value =
        serde_json::from_str(cm["data"]["checkpoint.json"].as_str().expect("data")).expect("json");
    assert_eq!(kept, checkpoint);
    assert_eq!(
        cm["metadata"]["annotations"]["cdc.binlogstream.io/stream-uid"],
        "0b5c6f2e-1111-2222-3333-444455556666"
    );
    let fin = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders?",
        |_| ok_json(live.clone()),
    )
    .await;
    assert_eq!(fin["metadata"]["finalizers"], json!([]));
    let (reasons, action) = finish_with_events(&mut h, task).await;
    assert_eq!(reasons, vec!["CheckpointRetained".to_string()]);
    assert_eq!(action, kube::runtime::controller::Action::await_change());
}

/// The Secret check, then the retained checkpoint found with `metadata` and `checkpoint.json`.
async fn secret_then_retained(h: &mut H, metadata: Value, data: String) {
    expect(h, "GET", "/api/v1/namespaces/shop/secrets/db-pw", |_| {
        ok_json(secret())
    })
    .await;
    expect(
        h,
        "GET",
        "/api/v1/namespaces/shop/configmaps/bls-orders-checkpoint",
        |_| {
            ok_json(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                "data": {"checkpoint.json": data}}),
            )
        },
    )
    .await;
}

/// A stream created under the name of a deleted one takes its retained checkpoint over before
/// any child exists (so its publisher starts there, not at spec.start), records it, and
/// removes the ConfigMap.
#[tokio::test]
async fn a_recreated_stream_resumes_from_the_retained_checkpoint() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = stream(valid_spec());
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx));
    let checkpoint = json!({"file": "binlog.000009", "position": 777, "rowsInTransaction": 0, "gtidSet": "0-1-42"});
    secret_then_retained(
        &mut h,
        json!({"name": "bls-orders-checkpoint", "namespace": "shop", "uid": "cm-uid",
            "annotations": {"cdc.binlogstream.io/stream-uid": "uid-of-the-deleted-one",
                            "cdc.binlogstream.io/retained-at": "2026-12-01T10:00:00Z"}}),
        checkpoint.to_string(),
    )
    .await;
    let moved = expect(
        &mut h,
        "PATCH",
        "/apis/cdc.binlogstream.io/v1alpha1/namespaces/shop/binlogstreams/orders/status?&fieldManager=binlogstream-operator-checkpoint",
        with_status(&bls),
    )
    .await;
    assert_eq!(moved["status"]["checkpoint"], checkpoint);
    assert_eq!(
        moved["metadata"]["uid"],
        "0b5c6f2e-1111-2222-3333-444455556666"
    );
    let recorded = expect(&mut h, "PATCH", STATUS, with_status(&bls)).await;
    let restored = &recorded["status"]["restoredCheckpoint"];
    assert_eq!(restored["position"], "binlog.000009:777 (GTID set 0-1-42)");
    assert_eq!(restored["fromUid"], "uid-of-the-deleted-one");
    assert_eq!(restored["configMap"], "bls-orders-checkpoint");
    let (_, uri, body) = {
        let (req, send) = h.next_request().await.expect("the ConfigMap removal");
        let r = body_json(req).await;
        send.send_response(ok_json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ));
        r
    };
    assert!(
        uri.starts_with("/api/v1/namespaces/shop/configmaps/bls-orders-checkpoint"),
        "{uri}"
    );
    assert_eq!(body["preconditions"]["uid"], "cm-uid");
    // Only now the children: the Deployment that starts the publisher comes after the move.
    children(&mut h, true).await;
    let note = drain_events(&mut h, 1).await;
    assert_eq!(note[0]["reason"], "CheckpointRestored");
    assert!(
        note[0]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("binlog.000009:777"),
        "{note:?}"
    );
    let last = expect(&mut h, "PATCH", STATUS, with_status(&bls)).await;
    assert_eq!(
        last["status"]["restoredCheckpoint"]["position"],
        restored["position"]
    );
    finish_with_events(&mut h, task).await;
}

/// A retained ConfigMap that cannot be read blocks the stream (no child, no pod) with a
/// condition naming it: starting from spec.start would skip changes silently.
#[tokio::test]
async fn an_unreadable_retained_checkpoint_blocks_the_stream_naming_it() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(svc, "default"));
    let bls = stream(valid_spec());
    let task = tokio::spawn(reconcile(Arc::new(bls.clone()), ctx));
    secret_then_retained(
        &mut h,
        json!({"name": "bls-orders-checkpoint", "namespace": "shop"}),
        "not json".into(),
    )
    .await;
    let status = expect(&mut h, "PATCH", STATUS, with_status(&bls)).await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "RetainedCheckpointUnreadable");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bls-orders-checkpoint"),
        "{ready}"
    );
    let (_, action) = finish_with_events(&mut h, task).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(30))
    );
}
