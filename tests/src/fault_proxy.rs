//! An HTTP proxy between the Kinesis SDK and the emulator that misbehaves on demand, since
//! neither emulator throttles or fails: whole-request throttling, per-record failures inside
//! a PutRecords, 500s, delays, connection resets, and responses lost after the write went
//! through (the case that makes duplicates).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Request, Response, StatusCode,
};
use hyper_util::{client::legacy::Client, rt::TokioExecutor, rt::TokioIo};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

/// Probabilities (0..1) of each fault per PutRecords request (per record for `fail_record`).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub throttle_request: f64,
    pub fail_record: f64,
    pub error_500: f64,
    pub reset: f64,
    /// The emulator gets the request, the client gets a dropped connection.
    pub lose_response: f64,
    pub delay: Duration,
    /// Every request fails with a connection reset (the emulator "down").
    pub down: bool,
    /// Every PutRecords is answered with this non-retriable error code (HTTP 400), as
    /// Kinesis does for AccessDeniedException; other calls (preflight) pass.
    pub refuse: Option<&'static str>,
}

#[derive(Debug, Default, Clone)]
pub struct Injected {
    pub put_records: u64,
    pub throttled: u64,
    pub failed_records: u64,
    pub errors_500: u64,
    pub resets: u64,
    pub lost_responses: u64,
}

struct State {
    faults: Faults,
    rng: StdRng,
    injected: Injected,
}

pub struct FaultProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

type Body = Full<Bytes>;

fn json_response(status: StatusCode, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

async fn forward(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{}", parts.uri));
    for (k, v) in parts.headers.iter() {
        if k != "content-length" && k != "host" {
            req = req.header(k, v);
        }
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

enum Verdict {
    Respond(Response<Body>),
    Reset,
}

async fn handle(
    state: Arc<Mutex<State>>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    upstream: String,
    req: Request<Incoming>,
) -> Verdict {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Verdict::Reset;
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let is_put_records = target.ends_with(".PutRecords");
    // Decide every fault up front, under the lock, then act without it.
    let (faults, throttle, e500, reset, lose, fails): (Faults, bool, bool, bool, bool, Vec<bool>) = {
        let mut s = state.lock().expect("lock");
        let f = s.faults.clone();
        if f.down {
            s.injected.resets += 1;
            return Verdict::Reset;
        }
        if !is_put_records {
            (f, false, false, false, false, Vec::new())
        } else {
            s.injected.put_records += 1;
            let n = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["Records"].as_array().map(|a| a.len()))
                .unwrap_or(0);
            let throttle = s.rng.gen_bool(f.throttle_request.clamp(0.0, 1.0));
            let e500 = !throttle && s.rng.gen_bool(f.error_500.clamp(0.0, 1.0));
            let reset = !throttle && !e500 && s.rng.gen_bool(f.reset.clamp(0.0, 1.0));
            let lose =
                !throttle && !e500 && !reset && s.rng.gen_bool(f.lose_response.clamp(0.0, 1.0));
            let fails: Vec<bool> = (0..n)
                .map(|_| s.rng.gen_bool(f.fail_record.clamp(0.0, 1.0)))
                .collect();
            (f, throttle, e500, reset, lose, fails)
        }
    };
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let bump = |f: fn(&mut Injected)| {
        if let Ok(mut s) = state.lock() {
            f(&mut s.injected);
        }
    };
    if let Some(code) = faults.refuse.filter(|_| is_put_records) {
        return Verdict::Respond(json_response(
            StatusCode::BAD_REQUEST,
            json!({"__type": code, "message": "refused (injected)"}),
        ));
    }
    if throttle {
        bump(|i| i.throttled += 1);
        return Verdict::Respond(json_response(
            StatusCode::BAD_REQUEST,
            json!({"__type": "ProvisionedThroughputExceededException", "message": "Rate exceeded for shard (injected)"}),
        ));
    }
    if e500 {
        bump(|i| i.errors_500 += 1);
        return Verdict::Respond(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"__type": "InternalFailure", "message": "injected"}),
        ));
    }
    if reset {
        bump(|i| i.resets += 1);
        return Verdict::Reset;
    }
    if !is_put_records || !fails.iter().any(|f| *f) {
        let result = forward(&client, &upstream, &parts, body).await;
        if lose {
            bump(|i| i.lost_responses += 1);
            return Verdict::Reset;
        }
        return match result {
            Ok((status, bytes)) => Verdict::Respond(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(Full::new(bytes))
                    .expect("response"),
            ),
            Err(_) => Verdict::Reset,
        };
    }
    // Some records fail: forward only the others, then answer for all in the original order.
    let mut request: Value = serde_json::from_slice(&body).expect("PutRecords JSON");
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let kept: Vec<Value> = records
        .iter()
        .zip(&fails)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.clone())
        .collect();
    let mut upstream_results: Vec<Value> = Vec::new();
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        match forward(&client, &upstream, &parts, Bytes::from(request.to_string())).await {
            Ok((status, bytes)) if status.is_success() => {
                let v: Value = serde_json::from_slice(&bytes).expect("upstream JSON");
                upstream_results = v["Records"].as_array().cloned().unwrap_or_default();
            }
            _ => return Verdict::Reset,
        }
    }
    let mut it = upstream_results.into_iter();
    let mut failed = 0u64;
    let merged: Vec<Value> = fails
        .iter()
        .map(|f| {
            if *f {
                failed += 1;
                json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard (injected)"})
            } else {
                it.next().unwrap_or(Value::Null)
            }
        })
        .collect();
    if let Ok(mut s) = state.lock() {
        s.injected.failed_records += failed;
    }
    Verdict::Respond(json_response(
        StatusCode::OK,
        json!({"FailedRecordCount": failed, "Records": merged}),
    ))
}

impl FaultProxy {
    pub async fn start(upstream_port: u16, seed: u64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(seed),
            injected: Injected::default(),
        }));
        let upstream = format!("http://127.0.0.1:{upstream_port}");
        let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)): Result<(tokio::net::TcpStream, SocketAddr), _> =
                    listener.accept().await
                else {
                    continue;
                };
                let st = st.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let client = client.clone();
                        let upstream = upstream.clone();
                        async move {
                            match handle(st, client, upstream, req).await {
                                Verdict::Respond(r) => Ok::<_, std::io::Error>(r),
                                Verdict::Reset => Err(std::io::Error::new(
                                    std::io::ErrorKind::ConnectionReset,
                                    "injected reset",
                                )),
                            }
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy { port, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, faults: Faults) {
        self.state.lock().expect("lock").faults = faults;
    }

    pub fn injected(&self) -> Injected {
        self.state.lock().expect("lock").injected.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
