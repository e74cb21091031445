//! Kinesis Data Streams sink: PutRecords batches filled to the service limits, several
//! requests in flight, per-key order, retries, and acknowledgement tracking for checkpoints.
//!
//! Records are spread over `max_in_flight` lanes by partition key. A lane has at most one
//! request in flight and one batch filling, so a key (always in the same lane) is never in
//! two concurrent requests, and memory is bounded by lanes × two batches whatever the
//! backlog: when a lane's batch is full while its request is still out, `write_row` waits
//! (back-pressure into the reader).
//!
//! With `aggregate`, rows are packed into KPL aggregates, one lane per shard (from
//! ListShards): each row joins the aggregate of the shard its key hashes to, an aggregate
//! closes at `aggregate_max_bytes` (256 KiB unless set, at most 1 MiB) or when the linger
//! expires, and a request carries one aggregate, so a key's rows are never split over two
//! requests in flight. The shard map follows reshards (see `reshard`): a lane checks where
//! each aggregate landed and re-sends, before its next request, the rows the receiving shard
//! does not hold (packed up to the 1 MiB record limit, not `aggregate_max_bytes`); a changed
//! map is read again (also every 60 s), and before any row is routed by it every lane is
//! drained, so no key has an older row in an aggregate of the old map behind a newer one of
//! the new map.
//!
//! Memory: a lane holds one batch filling and one request out; each request is a task that
//! is joined as soon as it ends; the acknowledgement queue holds one slot per row in flight
//! and one per boundary between them (back-to-back boundaries share a slot).
//!
//! With primary-key partition keys a batch also holds at most one record per key: a second
//! change of the same row closes the batch. Then a record that fails inside a request never
//! has a newer change of its row already written behind it, so per-row order is strict.
//! With table or constant keys that would mean one record per request, so those batches
//! hold many records of a key and a failed record is re-sent with every later record of its
//! key from the batch (the later ones may then appear twice, the last copy in order).

pub mod deliver;
pub mod key;
pub mod kpl;
pub mod reshard;
pub mod retry;

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_kinesis::{primitives::Blob, types::StreamStatus, Client};
use tokio::task::{JoinError, JoinSet};
use tracing::{error, info, warn};

use self::{
    deliver::{deliver, Delivery, Record},
    key::{key_only_marker, partition_key, Oversize, PartitionKey, MAX_RECORD_BYTES},
    reshard::{deliver_placed, list_shards, ShardMap},
    retry::Backoff,
};
use super::{ack::AckTracker, Sink, SinkError};
use crate::{
    decode::RowChange,
    metrics::{Action, Metrics},
    position::Checkpoint,
};

/// PutRecords limits: 500 records and 5 MiB (data + keys) per call.
pub const MAX_BATCH_RECORDS: usize = 500;
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;

/// Default aggregate size. Every byte of an aggregate is held about four times while it is
/// out (the record, the SDK's copy, its base64 JSON body grown by doubling), per lane; at
/// 256 KiB that stays a few MiB in all, and a lane still sends far more than a shard's
/// 1 MiB/s write limit.
pub const DEFAULT_AGGREGATE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct KinesisConfig {
    pub stream: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub partition_key: PartitionKey,
    pub oversize: Oversize,
    pub max_in_flight: usize,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub backoff: Backoff,
    pub max_attempts: Option<u32>,
    /// Pack rows into KPL aggregated records (consumers need a de-aggregating reader).
    pub aggregate: bool,
    /// The largest aggregate (data + key), at most `MAX_RECORD_BYTES`.
    pub aggregate_max_bytes: usize,
}

impl KinesisConfig {
    pub fn new(stream: impl Into<String>) -> KinesisConfig {
        KinesisConfig {
            stream: stream.into(),
            endpoint: None,
            region: None,
            partition_key: PartitionKey::PrimaryKey,
            oversize: Oversize::Fail,
            max_in_flight: 4,
            max_batch_records: MAX_BATCH_RECORDS,
            max_batch_bytes: MAX_BATCH_BYTES,
            backoff: Backoff::default(),
            max_attempts: None,
            aggregate: false,
            aggregate_max_bytes: DEFAULT_AGGREGATE_BYTES,
        }
    }
}

/// A client from the standard AWS chain (env, profile, web identity for IRSA, instance
/// metadata) with the endpoint and region overrides. The SDK's own retries are off: the sink
/// retries itself, per record, and reports it.
pub async fn client(cfg: &KinesisConfig) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &cfg.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &cfg.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await;
    Client::new(&shared)
}

/// Checks the stream exists and is ACTIVE before any row is read.
pub async fn preflight(client: &Client, cfg: &KinesisConfig) -> Result<(), SinkError> {
    let where_ = format!(
        "region {}{}",
        client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "(none)".into()),
        cfg.endpoint
            .as_deref()
            .map(|e| format!(", endpoint {e}"))
            .unwrap_or_default()
    );
    match client
        .describe_stream_summary()
        .stream_name(&cfg.stream)
        .send()
        .await
    {
        Ok(out) => {
            let status = out
                .stream_description_summary()
                .map(|s| s.stream_status().clone());
            match status {
                Some(StreamStatus::Active) | Some(StreamStatus::Updating) => Ok(()),
                other => Err(SinkError::Fatal(format!(
                    "Kinesis stream {} in {where_} is {:?}, not ACTIVE; wait for it or check the name",
                    cfg.stream,
                    other.map(|s| s.as_str().to_string()).unwrap_or_default()
                ))),
            }
        }
        Err(e) => {
            use aws_sdk_kinesis::error::ProvideErrorMetadata;
            let code = e.code().unwrap_or("").to_string();
            let msg = if code == "ResourceNotFoundException" {
                format!("Kinesis stream {} does not exist in {where_}; create it or fix --stream/--region", cfg.stream)
            } else {
                format!(
                    "cannot describe Kinesis stream {} in {where_}: {} {}",
                    cfg.stream,
                    code,
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                )
            };
            Err(SinkError::Fatal(msg))
        }
    }
}

struct Lane {
    /// Aggregation mode: the aggregate being filled, the rows in it and their newest event.
    agg: kpl::Aggregator,
    agg_seqs: Vec<u64>,
    agg_ts: u32,
    /// Lowest and highest hash of the aggregate's keys.
    agg_hashes: Option<(u128, u128)>,
    filling: Vec<Record>,
    filling_bytes: usize,
    /// Row keys in `filling` (primary-key mode).
    filling_keys: std::collections::HashSet<String>,
    busy: bool,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            agg: Default::default(),
            agg_seqs: Vec::new(),
            agg_ts: 0,
            agg_hashes: None,
            filling: Vec::new(),
            filling_bytes: 0,
            filling_keys: Default::default(),
            busy: false,
        }
    }
}

struct LaneDone {
    lane: usize,
    result: Result<Vec<Record>, SinkError>,
    /// The shard map, when the request had to read it again.
    map: Option<Arc<ShardMap>>,
}

/// What a sink task ends with.
enum Done {
    Lane(LaneDone),
    /// The periodic shard-map read.
    Shards(Result<ShardMap, SinkError>),
}

/// How often the shard map is read again in aggregation mode when nothing forces it.
const REFRESH_SHARDS: Duration = Duration::from_secs(60);

pub struct KinesisSink {
    cfg: KinesisConfig,
    delivery: Arc<Delivery>,
    lanes: Vec<Lane>,
    tracker: AckTracker,
    /// One task per busy lane (and the shard-map read); each is joined (reaped) as soon as it
    /// finishes, so a finished request keeps no memory.
    tasks: JoinSet<Done>,
    metrics: Arc<Metrics>,
    failed: Option<String>,
    /// The stream's shards (aggregation mode): one lane per open shard, in its order.
    shards: Arc<ShardMap>,
    /// A newer map, routed by once every lane is drained.
    pending_map: Option<Arc<ShardMap>>,
    refreshing: bool,
    next_refresh: Instant,
}

/// The stream's shards, for routing aggregates.
pub async fn shard_ranges(client: &Client, stream: &str) -> Result<ShardMap, SinkError> {
    list_shards(client, stream).await
}

impl KinesisSink {
    pub fn new(client: Client, cfg: KinesisConfig, metrics: Arc<Metrics>) -> KinesisSink {
        let lanes = (0..cfg.max_in_flight.max(1)).map(|_| Lane::new()).collect();
        KinesisSink {
            delivery: Arc::new(Delivery {
                client,
                stream: cfg.stream.as_str().into(),
                backoff: cfg.backoff.clone(),
                max_attempts: cfg.max_attempts,
                metrics: metrics.clone(),
            }),
            cfg,
            lanes,
            tracker: AckTracker::default(),
            tasks: JoinSet::new(),
            metrics,
            failed: None,
            shards: Arc::new(ShardMap::default()),
            pending_map: None,
            refreshing: false,
            next_refresh: Instant::now() + REFRESH_SHARDS,
        }
    }

    /// Aggregation mode: one lane per open shard of `map` (from [`shard_ranges`]).
    pub fn set_shards(&mut self, map: ShardMap) {
        self.lanes = (0..map.len()).map(|_| Lane::new()).collect();
        self.shards = Arc::new(map);
        self.cfg.max_batch_records = 1;
    }

    fn aggregating(&self) -> bool {
        self.cfg.aggregate && !self.shards.is_empty()
    }

    /// Turns the lane's aggregate into a record in its batch (waiting for the lane if needed).
    async fn close_aggregate(&mut self, lane: usize) -> Result<(), SinkError> {
        let l = &mut self.lanes[lane];
        if l.agg.is_empty() {
            return Ok(());
        }
        let (key, data) = l.agg.finish();
        let record = Record {
            seqs: std::mem::take(&mut l.agg_seqs),
            key,
            row_key: false,
            data: Blob::new(data),
            ts: std::mem::take(&mut l.agg_ts),
            sub_hashes: l.agg_hashes.take(),
            shard: None,
        };
        self.push(record).await
    }

    fn lane_of(&self, key: &str) -> usize {
        if self.aggregating() {
            return self.shards.route(kpl::hash_key(key));
        }
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    fn check_failed(&self) -> Result<(), SinkError> {
        match &self.failed {
            Some(msg) => Err(SinkError::Fatal(msg.clone())),
            None => Ok(()),
        }
    }

    fn on_joined(&mut self, joined: Result<Done, JoinError>) {
        match joined {
            Ok(Done::Lane(done)) => self.on_done(done),
            Ok(Done::Shards(result)) => {
                self.refreshing = false;
                match result {
                    Ok(map) => self.offer_map(Arc::new(map)),
                    Err(e) => {
                        warn!(error = %e, "cannot read the shard map; routing by the one known")
                    }
                }
            }
            Err(e) => {
                // The lane stays busy: nothing more is sent, and the pipeline stops.
                error!(error = %e, "Kinesis delivery task failed");
                self.failed
                    .get_or_insert_with(|| format!("Kinesis delivery task failed: {e}"));
            }
        }
        self.gauges();
    }

    /// A map read by a task: routed by once the lanes are drained, if it routes differently.
    fn offer_map(&mut self, map: Arc<ShardMap>) {
        if !map.routes_like(&self.shards) {
            self.pending_map = Some(map);
        }
    }

    fn on_done(&mut self, done: LaneDone) {
        self.lanes[done.lane].busy = false;
        if let Some(map) = done.map {
            self.offer_map(map);
        }
        match done.result {
            Ok(records) => {
                for r in records {
                    self.metrics.acknowledged_event(r.ts);
                    for seq in r.seqs {
                        self.tracker.ack(seq);
                    }
                }
            }
            Err(e) => {
                error!(error = %e, "Kinesis delivery failed");
                self.failed.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn gauges(&self) {
        let m = &self.metrics;
        m.in_flight_records.set(self.tracker.unacked() as i64);
        m.ack_queue_len.set(self.tracker.queued() as i64);
        m.sink_tasks.set(self.tasks.len() as i64);
    }

    fn collect_done(&mut self) {
        while let Some(joined) = self.tasks.try_join_next() {
            self.on_joined(joined);
        }
    }

    /// Waits for the next request to finish.
    async fn join_one(&mut self) -> Result<(), SinkError> {
        match self.tasks.join_next().await {
            Some(joined) => {
                self.on_joined(joined);
                self.check_failed()
            }
            None => Err(SinkError::Fatal("Kinesis delivery tasks ended".into())),
        }
    }

    /// Waits until `lane` has no request out.
    async fn wait_lane(&mut self, lane: usize) -> Result<(), SinkError> {
        while self.lanes[lane].busy {
            self.join_one().await?;
        }
        self.check_failed()
    }

    fn dispatch(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        if l.filling.is_empty() || l.busy {
            return;
        }
        let batch = std::mem::take(&mut l.filling);
        l.filling_bytes = 0;
        l.filling_keys.clear();
        l.busy = true;
        let delivery = self.delivery.clone();
        if self.aggregating() {
            let map = self.shards.clone();
            self.tasks.spawn(async move {
                let (result, map) = match deliver_placed(&delivery, batch, map).await {
                    Ok((acked, map)) => (Ok(acked), map),
                    Err(e) => (Err(e), None),
                };
                Done::Lane(LaneDone { lane, result, map })
            });
        } else {
            self.tasks.spawn(async move {
                let result = deliver(&delivery, batch).await;
                Done::Lane(LaneDone {
                    lane,
                    result,
                    map: None,
                })
            });
        }
        self.metrics.sink_tasks.set(self.tasks.len() as i64);
    }

    async fn push(&mut self, record: Record) -> Result<(), SinkError> {
        let lane = self.lane_of(&record.key);
        let size = record.size();
        let full = {
            let l = &self.lanes[lane];
            l.filling.len() >= self.cfg.max_batch_records
                || l.filling_bytes + size > self.cfg.max_batch_bytes
                || (record.row_key && l.filling_keys.contains(&record.key))
        };
        if full {
            self.wait_lane(lane).await?;
            self.dispatch(lane);
        }
        let l = &mut self.lanes[lane];
        if record.row_key {
            l.filling_keys.insert(record.key.clone());
        }
        l.filling.push(record);
        l.filling_bytes += size;
        if l.filling.len() >= self.cfg.max_batch_records {
            // Send eagerly when the lane is free; otherwise it goes when the lane frees up.
            if !l.busy {
                self.dispatch(lane);
            }
        }
        Ok(())
    }
}

impl KinesisSink {
    /// Sends everything buffered and waits until every task has ended.
    async fn settle(&mut self) -> Result<(), SinkError> {
        if self.aggregating() {
            for lane in 0..self.lanes.len() {
                self.close_aggregate(lane).await?;
            }
        }
        loop {
            self.collect_done();
            self.check_failed()?;
            for lane in 0..self.lanes.len() {
                self.dispatch(lane);
            }
            let idle = self.lanes.iter().all(|l| !l.busy && l.filling.is_empty());
            if idle && !self.refreshing {
                break;
            }
            self.join_one().await?;
        }
        self.check_failed()
    }

    /// Routes by the newer shard map, once every aggregate built on the old one is sent and
    /// its rows are in the shards that hold them: a key's rows under the new map then never
    /// overtake its rows under the old one.
    async fn switch_map(&mut self) -> Result<(), SinkError> {
        self.settle().await?;
        if let Some(map) = self.pending_map.take() {
            info!(
                stream = %self.cfg.stream,
                open_shards_before = self.shards.len(),
                open_shards = map.len(),
                "routing aggregates by the new shard map"
            );
            self.lanes = (0..map.len()).map(|_| Lane::new()).collect();
            self.shards = map;
        }
        Ok(())
    }
}

impl Sink for KinesisSink {
    async fn write_row(&mut self, row: RowChange) -> Result<(), SinkError> {
        self.collect_done();
        self.check_failed()?;
        if self.pending_map.is_some() && self.aggregating() {
            self.switch_map().await?;
        }
        let key = partition_key(&self.cfg.partition_key, &row);
        let size = row.body.len() + key.len();
        let seq = self.tracker.push_row(&row.position);
        let body = if size > MAX_RECORD_BYTES {
            let what = format!(
                "row of {}.{} (partition key {key}) at {}:{} is {size} bytes, over Kinesis's {MAX_RECORD_BYTES}-byte record limit",
                row.schema, row.table, row.position.file, row.position.pos
            );
            match self.cfg.oversize {
                Oversize::Fail => {
                    self.metrics
                        .oversize
                        .get_or_create(&Action {
                            action: "fail".into(),
                        })
                        .inc();
                    return Err(SinkError::Fatal(format!(
                        "{what}; stopping (choose --oversize skip or --oversize key-only to go on)"
                    )));
                }
                Oversize::Skip => {
                    self.metrics
                        .oversize
                        .get_or_create(&Action {
                            action: "skip".into(),
                        })
                        .inc();
                    warn!(schema = %row.schema, table = %row.table, key = %key, size, "{what}; skipped (--oversize skip)");
                    self.tracker.ack(seq);
                    return Ok(());
                }
                Oversize::KeyOnly => {
                    self.metrics
                        .oversize
                        .get_or_create(&Action {
                            action: "key_only".into(),
                        })
                        .inc();
                    warn!(schema = %row.schema, table = %row.table, key = %key, size, "{what}; published a key-only marker");
                    key_only_marker(&row, size)
                }
            }
        } else {
            row.body
        };
        if self.aggregating() {
            let hash = kpl::hash_key(&key);
            let lane = self.shards.route(hash);
            let max = self.cfg.aggregate_max_bytes;
            let fits = self.lanes[lane].agg.size_with(&key, body.len()) <= max;
            if !fits {
                self.close_aggregate(lane).await?;
            }
            if self.lanes[lane].agg.size_with(&key, body.len()) <= max {
                let l = &mut self.lanes[lane];
                l.agg.push(&key, body);
                l.agg_seqs.push(seq);
                l.agg_ts = l.agg_ts.max(row.position.ts);
                l.agg_hashes = Some(match l.agg_hashes {
                    Some((lo, hi)) => (lo.min(hash), hi.max(hash)),
                    None => (hash, hash),
                });
                self.gauges();
                return Ok(());
            }
            // Too big to share an aggregate even alone: send it as a plain record, which
            // de-aggregating readers pass through unchanged.
        }
        let row_key =
            self.cfg.partition_key == PartitionKey::PrimaryKey && row.primary_key.is_some();
        let record = Record {
            seqs: vec![seq],
            key,
            row_key,
            data: Blob::new(body),
            ts: row.position.ts,
            sub_hashes: None,
            shard: None,
        };
        self.push(record).await?;
        self.gauges();
        Ok(())
    }

    async fn boundary(&mut self, cp: Checkpoint) -> Result<(), SinkError> {
        if cp.rows_done == 0 && self.tracker.unacked() == 0 {
            // Nothing outstanding: an idle heartbeat or a filtered transaction is as current as
            // the source.
            self.metrics.acknowledged_event(cp.event_ts);
        }
        self.tracker.push_boundary(cp);
        self.gauges();
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        self.collect_done();
        self.check_failed()?;
        if self.aggregating() {
            for lane in 0..self.lanes.len() {
                // Close only where that cannot wait: a busy lane keeps filling its aggregate.
                let l = &self.lanes[lane];
                if !l.busy && l.filling.is_empty() && !l.agg.is_empty() {
                    self.close_aggregate(lane).await?;
                }
            }
        }
        for lane in 0..self.lanes.len() {
            self.dispatch(lane);
        }
        if self.aggregating() && !self.refreshing && Instant::now() >= self.next_refresh {
            // Reshards are found by where records land; this finds them when nothing lands
            // (and a merge, which lands nothing wrong).
            self.refreshing = true;
            self.next_refresh = Instant::now() + REFRESH_SHARDS;
            let delivery = self.delivery.clone();
            self.tasks.spawn(async move {
                Done::Shards(list_shards(&delivery.client, &delivery.stream).await)
            });
            self.gauges();
        }
        Ok(self.tracker.take_durable())
    }

    async fn drain(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        self.settle().await?;
        Ok(self.tracker.take_durable())
    }

    fn acknowledged(&mut self) -> Option<Checkpoint> {
        self.collect_done();
        self.tracker.take_durable()
    }

    fn busy(&self) -> bool {
        self.tracker.unacked() > 0
    }
}
