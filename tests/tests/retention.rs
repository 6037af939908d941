//! Retention against three real runneld processes started with `--min-retention 2s`
//! (issue 5: "retention trimming, with a short retention"): a stream below the cluster's
//! floor is refused; records older than the stream's retention are trimmed by the
//! nodes' own retention loop and no longer served, newer ones are all still there, in
//! order, and a read positioned below the trim point starts at the oldest retained
//! record, as Kinesis does.

#![cfg(not(madsim))]

use std::time::Duration;

use anyhow::{Context, ensure};
use runnel_client::{
    Client, ClientError, ConsumedRecord, ConsumerConfig, CreateStream, StartPosition,
};
use runnel_e2e::ledger::Ledger;
use runnel_e2e::procs::ProcCluster;
use runnel_e2e::workload::{create_stream, produce};
use runnel_types::SeqNo;

const STREAM: &str = "e2e-retention";
/// The stream's retention: long enough that the "new" records written after the wait
/// cannot expire while a slow machine reads them back.
const RETENTION: Duration = Duration::from_secs(20);
/// Bound on every wait for progress (a hang guard, not a threshold).
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_past_a_short_retention_are_trimmed_and_no_longer_served() -> anyhow::Result<()> {
    let mut cluster = ProcCluster::start(3, &["--min-retention", "2s"]).await?;
    let result = scenario(&cluster).await;
    if result.is_err() {
        cluster.print_logs();
    }
    let _ = cluster.wait_all_up().await;
    result
}

async fn scenario(cluster: &ProcCluster) -> anyhow::Result<()> {
    let client = cluster.client()?;

    // Below the floor the cluster was bootstrapped with: refused, naming the field.
    let low = client
        .admin()
        .create_stream(
            "too-short",
            CreateStream {
                shard_count: 1,
                replication_factor: Some(3),
                retention: Some(Duration::from_secs(1)),
            },
        )
        .await;
    ensure!(
        matches!(&low, Err(ClientError::InvalidArgument { field, .. }) if field.contains("retention")),
        "a retention below --min-retention: {low:?}"
    );

    create_stream(
        &client,
        STREAM,
        CreateStream {
            shard_count: 1,
            replication_factor: Some(3),
            retention: Some(RETENTION),
        },
        DEADLINE,
    )
    .await?;
    let old = Ledger::new();
    let outcome = produce(client.clone(), STREAM.into(), 0, 100, 256, old.clone()).await?;
    ensure!(outcome.failed == 0, "writes failed: {outcome:?}");
    tokio::time::sleep(RETENTION + Duration::from_secs(1)).await;
    let new = Ledger::new();
    let outcome = produce(client.clone(), STREAM.into(), 1, 50, 256, new.clone()).await?;
    ensure!(outcome.failed == 0, "writes failed: {outcome:?}");

    let shard = client
        .admin()
        .list_shards(STREAM)
        .await?
        .first()
        .map(|s| s.shard_id.clone())
        .context("one shard")?;
    let old_seqs: Vec<SeqNo> = old
        .acked_in(&shard)
        .iter()
        .map(|a| a.sequence_number)
        .collect();
    let new_acked = new.acked_in(&shard);
    ensure!(
        old_seqs.len() == 100 && new_acked.len() == 50,
        "all in one shard"
    );

    // The retention loop runs every quarter of the floor: wait until the old records
    // are gone from a TRIM_HORIZON read.
    let until = tokio::time::Instant::now() + DEADLINE;
    let retained = loop {
        let all = read_from(&client, &shard, StartPosition::TrimHorizon).await?;
        if all.iter().all(|r| !old_seqs.contains(&r.sequence_number)) {
            break all;
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "records older than the retention are still served after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let got: Vec<(SeqNo, &[u8])> = retained
        .iter()
        .map(|r| (r.sequence_number, r.data.as_ref()))
        .collect();
    let want: Vec<(SeqNo, &[u8])> = new_acked
        .iter()
        .map(|a| (a.sequence_number, a.data.as_ref()))
        .collect();
    ensure!(
        got == want,
        "after trimming, the shard must hold exactly the newer records, in order, byte-identical"
    );

    // A position below the trim point starts at the oldest retained record.
    let below = read_from(
        &client,
        &shard,
        StartPosition::AtSequenceNumber(old_seqs[10]),
    )
    .await?;
    ensure!(
        below.first().map(|r| r.sequence_number) == Some(new_acked[0].sequence_number),
        "AT_SEQUENCE_NUMBER below the trim point starts at {:?}, not the oldest retained {}",
        below.first().map(|r| r.sequence_number),
        new_acked[0].sequence_number
    );
    Ok(())
}

/// Reads `shard` from `start` until caught up.
async fn read_from(
    client: &Client,
    shard: &str,
    start: StartPosition,
) -> Result<Vec<ConsumedRecord>, ClientError> {
    let config = ConsumerConfig {
        get_records_limit: 100,
        idle_poll_interval: Duration::from_millis(50),
        ..ConsumerConfig::default()
    };
    let mut reader = client.consumer(STREAM, config).read_shard(shard, start);
    let mut out = Vec::new();
    while let Some(b) = reader.next().await? {
        let done = b.records.is_empty() && b.millis_behind_latest == 0;
        out.extend(b.records);
        if done {
            break;
        }
    }
    Ok(out)
}
