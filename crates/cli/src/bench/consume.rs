//! `bench consume`: catch-up reading. One reader per shard (open and closed, without
//! waiting for parents: order does not matter to a throughput figure) reads from the
//! oldest retained record until it is caught up, `--records` have been read over all
//! shards, or `--duration` has passed. Latency is that of one `GetRecords` call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use runnel_client::{Client, ConsumerConfig, ShardReader, StartPosition};

use super::stats::{Phase, histogram};
use super::{BenchArgs, progress};
use crate::error::{CliError, Doing};

struct Tally {
    records: u64,
    bytes: u64,
    error: Option<String>,
    latency_us: Histogram<u64>,
}

/// Reads the stream; fails when it holds no record.
pub async fn run(client: &Client, a: &BenchArgs) -> Result<Phase, CliError> {
    let map = client
        .refresh_shard_map(&a.stream)
        .await
        .doing(|| format!("looking up stream {}", a.stream))?;
    let consumer = client.consumer(&a.stream, ConsumerConfig::default());
    let started = Instant::now();
    let deadline = a.duration.map(|d| started + d);
    let read = Arc::new(AtomicU64::new(0));
    let bar = progress(a.records, "consuming");
    let tasks: Vec<_> = map
        .shards()
        .map(|s| {
            let reader = consumer.read_shard(&s.shard_id, StartPosition::TrimHorizon);
            tokio::spawn(read_shard(
                reader,
                a.records,
                deadline,
                read.clone(),
                bar.clone(),
            ))
        })
        .collect();
    let (mut records, mut bytes, mut errors, mut first_error) = (0, 0, 0, None);
    let mut latency_us = histogram();
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| CliError::Failed(format!("a reader task failed: {e}")))?;
        records += tally.records;
        bytes += tally.bytes;
        if let Some(e) = tally.error {
            errors += 1;
            first_error = first_error.or(Some(e));
        }
        let _ = latency_us.add(&tally.latency_us);
    }
    bar.finish_and_clear();
    if records == 0 && errors == 0 {
        return Err(CliError::Failed(format!(
            "stream {} holds no record to read: write some first with `runnel bench produce --stream {}`",
            a.stream, a.stream
        )));
    }
    Ok(Phase {
        name: "consume",
        records,
        bytes,
        errors,
        first_error,
        elapsed: started.elapsed(),
        latency_of: "one GetRecords call",
        latency_us,
    })
}

async fn read_shard(
    mut reader: ShardReader,
    limit: Option<u64>,
    deadline: Option<Instant>,
    read: Arc<AtomicU64>,
    bar: ProgressBar,
) -> Tally {
    let mut t = Tally {
        records: 0,
        bytes: 0,
        error: None,
        latency_us: histogram(),
    };
    loop {
        let over = limit.is_some_and(|l| read.load(Ordering::Relaxed) >= l);
        if over || deadline.is_some_and(|d| Instant::now() >= d) {
            return t;
        }
        let t0 = Instant::now();
        let batch = match reader.next().await {
            Ok(Some(b)) if !b.records.is_empty() => b,
            // Caught up, or a closed shard read to its end.
            Ok(_) => return t,
            Err(e) => {
                t.error = Some(e.to_string());
                return t;
            }
        };
        t.latency_us
            .saturating_record(t0.elapsed().as_micros().max(1) as u64);
        let n = batch.records.len() as u64;
        t.records += n;
        t.bytes += batch
            .records
            .iter()
            .map(|r| r.data.len() as u64)
            .sum::<u64>();
        read.fetch_add(n, Ordering::Relaxed);
        bar.inc(n);
    }
}
