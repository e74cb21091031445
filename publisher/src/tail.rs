//! `publisher tail`: prints the records of a Kinesis stream, every shard from its oldest
//! record (or from now), for people checking what consumers receive.

use std::time::Duration;

use aws_sdk_kinesis::{types::ShardIteratorType, Client};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// Stream name.
    #[arg(long, env = "BINLOGSTREAM_STREAM")]
    pub stream: String,
    /// Endpoint override (an emulator).
    #[arg(long, env = "BINLOGSTREAM_ENDPOINT")]
    pub endpoint: Option<String>,
    #[arg(long, env = "BINLOGSTREAM_REGION")]
    pub region: Option<String>,
    /// Start at the oldest record (trim-horizon) or only show new ones (latest).
    #[arg(long, default_value = "trim-horizon")]
    pub from: String,
    /// Keep polling for new records instead of exiting at the end of every shard.
    #[arg(long)]
    pub follow: bool,
    /// Prefix each record with its shard and partition key.
    #[arg(long)]
    pub keys: bool,
}

pub async fn tail(client: &Client, args: &TailArgs) -> anyhow::Result<u64> {
    let from = match args.from.as_str() {
        "trim-horizon" => ShardIteratorType::TrimHorizon,
        "latest" => ShardIteratorType::Latest,
        other => anyhow::bail!("--from: `{other}` is not trim-horizon or latest"),
    };
    let shards = client
        .list_shards()
        .stream_name(&args.stream)
        .send()
        .await?;
    let mut iterators = Vec::new();
    for shard in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(&args.stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(from.clone())
            .send()
            .await?;
        iterators.push((
            shard.shard_id().to_string(),
            it.shard_iterator().map(str::to_string),
        ));
    }
    let mut out = tokio::io::stdout();
    let mut count = 0u64;
    loop {
        let mut any = false;
        for (shard, iter) in iterators.iter_mut() {
            let Some(it) = iter.clone() else { continue };
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await?;
            for r in page.records() {
                if args.keys {
                    out.write_all(
                        format!("{shard} {} ", r.partition_key().unwrap_or("")).as_bytes(),
                    )
                    .await?;
                }
                out.write_all(r.data().as_ref()).await?;
                out.write_all(b"\n").await?;
                count += 1;
                any = true;
            }
            *iter = page.next_shard_iterator().map(str::to_string);
        }
        out.flush().await?;
        if !any {
            if !args.follow {
                return Ok(count);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
