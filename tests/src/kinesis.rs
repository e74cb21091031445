//! kinesalite (npm) started per test on a private loopback port, and helpers to create
//! streams and read every record back with GetRecords.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aws_sdk_kinesis::{types::ShardIteratorType, Client};

pub const KINESALITE_VERSION: &str = "3.3.3";

pub struct Kinesalite {
    child: Option<Child>,
    pub port: u16,
}

/// One record as read back from the stream.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub shard: String,
    pub sequence: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl StreamRecord {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.data).expect("record is JSON")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A client with static dummy credentials for the emulator (or the proxy in front of it).
pub async fn client_for(endpoint: &str) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .build();
    Client::from_conf(conf)
}

impl Kinesalite {
    pub async fn start() -> Kinesalite {
        crate::ensure_deps();
        let cli = crate::cache_dir().join(format!(
            "kinesalite-{KINESALITE_VERSION}/node_modules/kinesalite/cli.js"
        ));
        let port = free_port();
        let child = Command::new("node")
            .arg(&cli)
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .args([
                // kinesalite refuses more than 10 shards in all by default.
                "--shardLimit",
                "1000",
                "--createStreamMs",
                "0",
                "--deleteStreamMs",
                "0",
                "--updateStreamMs",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting kinesalite ({}): {e}", cli.display()));
        let k = Kinesalite {
            child: Some(child),
            port,
        };
        let client = k.client().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.list_streams().send().await.is_err() {
            assert!(Instant::now() < deadline, "kinesalite did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        k
    }

    /// The emulator's process id (to read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> Client {
        client_for(&self.endpoint()).await
    }

    pub async fn create_stream(&self, name: &str, shards: i32) {
        let client = self.client().await;
        client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .expect("create stream");
        self.wait_active(name).await;
    }

    /// Waits (at most 20 s) until `name` is ACTIVE: after a create, split or merge.
    pub async fn wait_active(&self, name: &str) {
        let client = self.client().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let d = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .expect("describe");
            if d.stream_description_summary()
                .map(|s| s.stream_status().as_str())
                == Some("ACTIVE")
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stream {name} not ACTIVE within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every record of every shard, each shard in sequence order.
    pub async fn read_all(&self, stream: &str) -> Vec<StreamRecord> {
        let client = self.client().await;
        let shards = client
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .expect("list shards");
        let mut out = Vec::new();
        for shard in shards.shards() {
            let id = shard.shard_id().to_string();
            let mut iter = client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(&id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("iterator")
                .shard_iterator()
                .map(str::to_string);
            while let Some(it) = iter {
                let page = client
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await
                    .expect("get records");
                for r in page.records() {
                    out.push(StreamRecord {
                        shard: id.clone(),
                        sequence: r.sequence_number().to_string(),
                        partition_key: r.partition_key().unwrap_or_default().to_string(),
                        data: r.data().as_ref().to_vec(),
                    });
                }
                if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                iter = page.next_shard_iterator().map(str::to_string);
            }
        }
        out
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Feeds records to a de-aggregator script as JSON lines `{shard, key, seq, data (base64)}`
/// and reads back its user records as JSON lines `{shard, key, data (base64)}`.
pub fn run_deaggregator(
    mut cmd: Command,
    name: &str,
    records: &[StreamRecord],
) -> Vec<(String, String, Vec<u8>)> {
    use base64::Engine;
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let mut input = String::new();
    for r in records {
        input.push_str(
            &serde_json::json!({"shard": r.shard, "key": r.partition_key, "seq": r.sequence, "data": b64.encode(&r.data)})
                .to_string(),
        );
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("deaggregator");
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    writer.join().expect("writer").expect("write");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["shard"].as_str().expect("shard").to_string(),
                v["key"].as_str().expect("key").to_string(),
                b64.decode(v["data"].as_str().expect("data"))
                    .expect("base64"),
            )
        })
        .collect()
}
