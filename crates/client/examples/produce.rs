//! Produces records to a stream and prints where each batch landed.
//!
//! ```text
//! cargo run -p runnel-client --example produce -- --endpoint 127.0.0.1:7100 --stream demo --count 1000
//! ```

use clap::Parser;
use runnel_client::{Client, ClientConfig, ProducerConfig, Record};

#[derive(Parser)]
#[command(about = "Produce records to a Runnel stream")]
struct Args {
    /// A node of the cluster, host:port (repeat for more).
    #[arg(long, env = "RUNNEL_ENDPOINT", default_value = "127.0.0.1:7100")]
    endpoint: Vec<String>,
    /// The stream to write to.
    #[arg(long, default_value = "demo")]
    stream: String,
    /// How many records to send.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(args.endpoint, ClientConfig::default())?;
    let producer = client.producer(&args.stream, ProducerConfig::default())?;
    let mut handles = Vec::with_capacity(args.count as usize);
    for i in 0..args.count {
        let data = vec![b'x'; args.record_size];
        // `enqueue` waits only when the buffer is full; the handle resolves later.
        handles.push(
            producer
                .enqueue(Record::new(format!("key-{}", i % 64), data))
                .await?,
        );
    }
    producer.flush().await?;
    let mut per_shard = std::collections::BTreeMap::<String, u64>::new();
    for h in handles {
        let put = h.await?;
        *per_shard.entry(put.shard_id).or_default() += 1;
    }
    for (shard, n) in per_shard {
        println!("{shard}: {n} records");
    }
    producer.close().await?;
    Ok(())
}
