//! Reads a whole stream (parents before children) and prints each record.
//!
//! ```text
//! cargo run -p runnel-client --example consume -- --endpoint 127.0.0.1:7100 --stream demo --subscribe
//! ```

use clap::Parser;
use runnel_client::{Client, ClientConfig, ConsumerConfig, ReadMode, StartPosition};

#[derive(Parser)]
#[command(about = "Read every shard of a Runnel stream")]
struct Args {
    /// A node of the cluster, host:port (repeat for more).
    #[arg(long, env = "RUNNEL_ENDPOINT", default_value = "127.0.0.1:7100")]
    endpoint: Vec<String>,
    /// The stream to read.
    #[arg(long, default_value = "demo")]
    stream: String,
    /// Push subscription instead of GetRecords polling.
    #[arg(long)]
    subscribe: bool,
    /// Only records stored from now on (default: from the oldest retained).
    #[arg(long)]
    latest: bool,
    /// Stop after this many records (0: never).
    #[arg(long, default_value_t = 0)]
    limit: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(args.endpoint, ClientConfig::default())?;
    let mode = if args.subscribe {
        ReadMode::Subscribe
    } else {
        ReadMode::Poll
    };
    let config = ConsumerConfig {
        mode,
        ..ConsumerConfig::default()
    };
    let start = if args.latest {
        StartPosition::Latest
    } else {
        StartPosition::TrimHorizon
    };
    let mut reader = client
        .consumer(&args.stream, config)
        .read_stream(start)
        .await?;
    let mut seen = 0u64;
    while let Some(batch) = reader.next().await? {
        for r in &batch.records {
            let data = String::from_utf8_lossy(&r.data);
            println!(
                "{} {} {} {data}",
                batch.shard_id, r.sequence_number, r.partition_key
            );
            seen += 1;
            if args.limit > 0 && seen >= args.limit {
                return Ok(());
            }
        }
    }
    println!("every shard is closed and read to its end");
    Ok(())
}
