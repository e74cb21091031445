//! Delivers one batch: PutRecords, then re-sends what failed until everything is in, keeping
//! each partition key's records in order.

use std::{collections::HashSet, sync::Arc, time::Instant};

use aws_sdk_kinesis::{primitives::Blob, types::PutRecordsRequestEntry, Client};
use tracing::warn;

use super::retry::{classify_record_error, classify_request_error, Backoff, Failure};
use crate::{
    metrics::{Metrics, Reason},
    sink::SinkError,
};

#[derive(Debug, Clone)]
pub struct Record {
    /// Rows this record carries: one, or every row of a KPL aggregate.
    pub seqs: Vec<u64>,
    pub key: String,
    /// The key names one row: it may appear only once per request (see `KinesisSink`).
    pub row_key: bool,
    pub data: Blob,
    pub ts: u32,
    /// KPL aggregates: the lowest and highest hash of their rows' keys, to check that the
    /// shard they land on holds them all (see `reshard`).
    pub sub_hashes: Option<(u128, u128)>,
    /// The shard an aggregate landed on, from the PutRecords answer.
    pub shard: Option<String>,
}

impl Record {
    /// What Kinesis counts against its limits: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.as_ref().len() + self.key.len()
    }
}

pub struct Delivery {
    pub client: Client,
    pub stream: Arc<str>,
    pub backoff: Backoff,
    /// Give up after this many attempts of one batch (None: never).
    pub max_attempts: Option<u32>,
    pub metrics: Arc<Metrics>,
}

/// Sends `batch` until every record is acknowledged. Returns the records in the order they
/// were finally acknowledged.
///
/// When some records of a response fail, the retry carries each failed record and every
/// later record of the same partition key from the batch, in order, so a key's records never
/// land older-after-newer (the later ones may land twice: at-least-once).
pub async fn deliver(d: &Delivery, mut batch: Vec<Record>) -> Result<Vec<Record>, SinkError> {
    let mut acked = Vec::with_capacity(batch.len());
    let mut attempt = 0u32;
    let started = Instant::now();
    while !batch.is_empty() {
        let entries: Vec<PutRecordsRequestEntry> = batch
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(r.data.clone())
                    .partition_key(&r.key)
                    .build()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| SinkError::Fatal(format!("building a PutRecords entry: {e}")))?;
        d.metrics.batches.inc();
        let reason = match d
            .client
            .put_records()
            .stream_name(&*d.stream)
            .set_records(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let results = out.records();
                if results.len() != batch.len() {
                    return Err(SinkError::Fatal(format!(
                        "PutRecords answered {} results for {} records",
                        results.len(),
                        batch.len()
                    )));
                }
                let mut failed_keys: HashSet<String> = HashSet::new();
                let mut again = Vec::new();
                let mut reason = None;
                for (mut r, result) in batch.into_iter().zip(results) {
                    if let Some(code) = result.error_code() {
                        match classify_record_error(code, result.error_message()) {
                            Failure::Retry(why) => reason = Some(why),
                            Failure::Fatal(msg) => {
                                return Err(SinkError::Fatal(format!(
                                    "Kinesis refused a record of stream {} (key {}): {msg}",
                                    d.stream, r.key
                                )))
                            }
                        }
                        failed_keys.insert(r.key.clone());
                        again.push(r);
                    } else if failed_keys.contains(&r.key) {
                        again.push(r);
                    } else {
                        if r.sub_hashes.is_some() {
                            r.shard = result.shard_id().map(str::to_string);
                        }
                        d.metrics.records_published.inc_by(r.seqs.len() as u64);
                        d.metrics
                            .bytes_published
                            .inc_by(r.data.as_ref().len() as u64);
                        acked.push(r);
                    }
                }
                batch = again;
                match reason {
                    None => break,
                    Some(why) => why,
                }
            }
            Err(e) => match classify_request_error(&e) {
                Failure::Retry(why) => why,
                Failure::Fatal(msg) => {
                    return Err(SinkError::Fatal(format!(
                        "Kinesis stream {}: {msg}",
                        d.stream
                    )));
                }
            },
        };
        d.metrics
            .retries
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
        attempt += 1;
        if d.max_attempts.is_some_and(|max| attempt >= max) {
            return Err(SinkError::Fatal(format!(
                "Kinesis stream {}: gave up after {attempt} attempts ({reason})",
                d.stream
            )));
        }
        let wait = d.backoff.delay(attempt - 1);
        warn!(
            stream = %d.stream,
            reason,
            attempt,
            records = batch.len(),
            retrying_for_s = started.elapsed().as_secs(),
            wait_ms = wait.as_millis() as u64,
            "Kinesis did not take every record; retrying"
        );
        d.metrics.set_ready(
            false,
            Some(format!("Kinesis retrying: {reason} (attempt {attempt})")),
        );
        tokio::time::sleep(wait).await;
    }
    if attempt > 0 {
        d.metrics.set_ready(true, None);
    }
    Ok(acked)
}
