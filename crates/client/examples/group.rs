//! A consumer-group member: reads the shards it holds leases on, checkpoints after each
//! batch, and leaves the group on Ctrl-C. Start several with different `--member` ids
//! and watch the shards spread over them.
//!
//! ```text
//! cargo run -p runnel-client --example group -- --endpoint 127.0.0.1:7100 --stream demo --group printers --member a
//! ```

use clap::Parser;
use runnel_client::{Client, ClientConfig, ConsumerGroup, GroupConfig, GroupEvent};

#[derive(Parser)]
#[command(about = "Join a Runnel consumer group and print what it reads")]
struct Args {
    /// A node of the cluster, host:port (repeat for more).
    #[arg(long, env = "RUNNEL_ENDPOINT", default_value = "127.0.0.1:7100")]
    endpoint: Vec<String>,
    /// The stream to read.
    #[arg(long, default_value = "demo")]
    stream: String,
    /// The group's name.
    #[arg(long, default_value = "printers")]
    group: String,
    /// This member's id (stable across restarts keeps its leases).
    #[arg(long, default_value = "member-1")]
    member: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(args.endpoint, ClientConfig::default())?;
    let mut group = ConsumerGroup::join(
        client,
        &args.stream,
        GroupConfig::new(&args.group, &args.member),
    );
    loop {
        let event = tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            e = group.next() => e,
        };
        let Some(event) = event else { break };
        match event {
            GroupEvent::Records(batch) => {
                for r in &batch.records {
                    println!(
                        "{} {} {}",
                        batch.shard_id,
                        r.sequence_number,
                        String::from_utf8_lossy(&r.data)
                    );
                }
                if let Some(seq) = batch.last_sequence_number() {
                    group.checkpoint(&batch.shard_id, seq).await?;
                }
            }
            GroupEvent::ShardEnded { shard_id, children } => {
                println!("{shard_id} read to its end; children {children:?}");
                group.checkpoint_shard_end(&shard_id).await?;
            }
            other => println!("{other:?}"),
        }
    }
    group.leave().await?;
    Ok(())
}
