//! Three real runneld processes, a stream of 8 shards, 4 producers writing 100,000
//! records through the SDK `Producer`, a shard leader SIGKILLed midway and restarted; a
//! consumer group of 2 members, one killed (its task aborted, never leaving the group)
//! and restarted. At the end every acknowledged record reads back once, per shard in
//! sequence order, byte-identical; and the group delivered every record at least once,
//! and exactly once counting checkpoints (issue 6, item 4).
//!
//! Every wait is bounded (a stalled cluster fails the test with the nodes' logs, never
//! hangs it); none is a performance assertion.

#![cfg(not(madsim))]

use std::time::Duration;

use anyhow::{Context, bail};
use runnel_client::{Client, CreateStream};
use runnel_e2e::deliveries::DeliveryLog;
use runnel_e2e::ledger::{Ledger, ShardReads, read_stream};
use runnel_e2e::procs::ProcCluster;
use runnel_e2e::workload::{ProduceOutcome, create_stream, produce, spawn_member};

const STREAM: &str = "e2e-orders";
const SHARDS: u32 = 8;
const PRODUCERS: usize = 4;
const RECORDS_TOTAL: usize = 100_000;
const RECORD_BYTES: usize = 100;
const GROUP: &str = "e2e-billing";
/// Short, so that the killed member's leases lapse soon (the server's minimum is 1 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on every wait for progress: far above what a healthy run needs.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producers_and_a_consumer_group_survive_a_killed_leader_and_member() -> anyhow::Result<()> {
    let mut cluster = ProcCluster::start(3, &[]).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs();
    }
    result
}

async fn scenario(cluster: &mut ProcCluster) -> anyhow::Result<()> {
    let client = cluster.client()?;
    create_stream(
        &client,
        STREAM,
        CreateStream {
            shard_count: SHARDS,
            replication_factor: Some(3),
            retention: None,
        },
        PROGRESS_DEADLINE,
    )
    .await?;

    let ledger = Ledger::new();
    let log = DeliveryLog::new();
    let member = |id: &str| {
        spawn_member(
            client.clone(),
            STREAM,
            GROUP,
            id,
            SESSION_TIMEOUT,
            log.clone(),
        )
    };
    let m1 = member("member-1");
    let m2 = member("member-2");
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            tokio::spawn(produce(
                client.clone(),
                STREAM.to_string(),
                p,
                RECORDS_TOTAL / PRODUCERS,
                RECORD_BYTES,
                ledger.clone(),
            ))
        })
        .collect();

    // A quarter in: a group member dies without leaving.
    wait_acked(&ledger, RECORDS_TOTAL / 4).await?;
    m2.kill().await;
    // Halfway: the leader of a shard dies, with whatever it had not synced.
    wait_acked(&ledger, RECORDS_TOTAL / 2).await?;
    let victim = leader_of_a_shard(cluster, &client).await?;
    eprintln!(
        "killing node {victim} (a shard leader) at {} acknowledged records",
        ledger.acked_count()
    );
    cluster.kill(victim)?;
    // The two survivors keep taking writes.
    wait_acked(&ledger, RECORDS_TOTAL * 3 / 5).await?;
    cluster.restart(victim).await?;
    let m2 = member("member-2");

    let mut outcome = ProduceOutcome::default();
    for p in producers {
        let o = p.await??;
        outcome.acked += o.acked;
        outcome.failed += o.failed;
        outcome.errors.extend(o.errors);
    }
    eprintln!(
        "producers: {} acknowledged, {} failed {:?}",
        outcome.acked, outcome.failed, outcome.errors
    );
    assert_eq!(outcome.acked + outcome.failed, RECORDS_TOTAL);
    assert!(
        outcome.acked >= RECORDS_TOTAL / 2,
        "too few records acknowledged for the check to mean much: {outcome:?}"
    );

    let reads = read_stream(&client, STREAM, &ledger, PROGRESS_DEADLINE).await?;
    let report = ledger.verify(&reads);
    eprintln!("stream check: {report}");
    report.assert_ok();

    wait_checkpointed(&client, &reads).await?;
    m1.leave().await?;
    m2.leave().await?;
    let report = log.verify(&reads);
    eprintln!(
        "group check: {} sessions, {} deliveries; {report}",
        log.session_count(),
        log.delivered_count()
    );
    report.assert_ok();
    assert!(
        log.session_count() > SHARDS as usize,
        "the killed member's shards were never taken over"
    );
    for id in cluster.ids() {
        assert!(cluster.is_running(id), "node {id} exited");
    }
    Ok(())
}

/// Waits until `n` records are acknowledged.
async fn wait_acked(ledger: &Ledger, n: usize) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + PROGRESS_DEADLINE;
    while ledger.acked_count() < n {
        if tokio::time::Instant::now() >= until {
            bail!(
                "only {} of {n} records acknowledged within {PROGRESS_DEADLINE:?}",
                ledger.acked_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The node leading the first shard that has a leader now.
async fn leader_of_a_shard(cluster: &ProcCluster, client: &Client) -> anyhow::Result<u64> {
    let shards = client.admin().list_shards(STREAM).await?;
    shards
        .iter()
        .filter_map(|s| s.leader.as_deref())
        .find_map(|a| cluster.id_of(a))
        .context("no shard has a known leader")
}

/// Waits until the group's stored checkpoint of every shard is its last record.
async fn wait_checkpointed(client: &Client, reads: &ShardReads) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + PROGRESS_DEADLINE;
    loop {
        let stored = client.admin().get_checkpoints(STREAM, GROUP).await?;
        let behind: Vec<String> = reads
            .iter()
            .filter_map(|(shard, records)| {
                let last = records.last()?.sequence_number.to_string();
                let at = stored
                    .iter()
                    .find(|c| &c.shard_id == shard)
                    .and_then(|c| c.sequence_number.clone());
                (at.as_deref() != Some(last.as_str()))
                    .then(|| format!("{shard} at {at:?}, last {last}"))
            })
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            bail!("the group did not checkpoint every shard's last record: {behind:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
