//! The public calls against three real runneld processes (issue 5, item 7, at process
//! level): create, describe, list, put, get with every iterator type, the error paths a
//! client meets (AlreadyExists, InvalidArgument, NotFound, NotLeader with the leader's
//! address), a push subscription across a leader change, and SIGTERM: the node exits
//! cleanly, leadership moves on, no write fails and no acknowledged record is lost.

#![cfg(not(madsim))]

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use runnel_client::{
    Client, ClientConfig, ClientError, ConsumedRecord, ConsumerConfig, CreateStream, ReadMode,
    Record, StartPosition, StreamStatus,
};
use runnel_e2e::ledger::{Ledger, check_stream};
use runnel_e2e::procs::ProcCluster;
use runnel_e2e::workload::{create_stream, produce};
use runnel_proto::v1 as pb;

const STREAM: &str = "e2e-api";
/// Bound on every wait for progress: far above what a healthy run needs.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_calls_and_a_graceful_shutdown_against_three_processes() -> anyhow::Result<()> {
    let mut cluster = ProcCluster::start(3, &[]).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs();
    }
    result
}

async fn scenario(cluster: &mut ProcCluster) -> anyhow::Result<()> {
    let client = cluster.client()?;
    streams(&client).await?;
    let ledger = Ledger::new();
    let outcome = produce(client.clone(), STREAM.into(), 0, 400, 64, ledger.clone()).await?;
    ensure!(outcome.failed == 0, "writes failed: {outcome:?}");
    let shard = busiest_shard(&client, &ledger).await?;
    iterators(&client, &ledger, &shard).await?;
    not_leader(&client, &shard).await?;
    graceful_shutdown(cluster, &client, &ledger, &shard).await?;
    check_stream(&client, STREAM, &ledger, DEADLINE)
        .await?
        .assert_ok();
    Ok(())
}

/// Create, describe, list, and their error paths.
async fn streams(client: &Client) -> anyhow::Result<()> {
    let admin = client.admin();
    let d = create_stream(
        client,
        STREAM,
        CreateStream {
            shard_count: 2,
            replication_factor: Some(3),
            retention: None,
        },
        DEADLINE,
    )
    .await?;
    ensure!(
        d.status == StreamStatus::Active && d.replication_factor == 3 && d.open_shard_count == 2
    );
    ensure!(
        d.retention == Duration::from_secs(24 * 3600),
        "default retention: {d:?}"
    );
    ensure!(admin.list_streams().await?.contains(&STREAM.to_string()));
    let again = admin
        .create_stream(STREAM, CreateStream::with_shards(2))
        .await;
    ensure!(
        matches!(again, Err(ClientError::AlreadyExists { .. })),
        "{again:?}"
    );
    let zero = admin
        .create_stream("e2e-zero", CreateStream::with_shards(0))
        .await;
    ensure!(
        matches!(&zero, Err(ClientError::InvalidArgument { field, .. }) if field == "shard_count"),
        "{zero:?}"
    );
    let missing = admin.describe_stream("e2e-missing").await;
    ensure!(
        matches!(missing, Err(ClientError::NotFound { .. })),
        "{missing:?}"
    );
    let put = client
        .producer("e2e-missing", Default::default())?
        .send(Record::new("k", "v"))
        .await;
    ensure!(matches!(put, Err(ClientError::NotFound { .. })), "{put:?}");
    // Every shard is led and has three replicas, one per process.
    for s in admin.list_shards(STREAM).await? {
        ensure!(s.leader.is_some() && s.replicas.len() == 3, "{s:?}");
    }
    Ok(())
}

/// The shard holding the most acknowledged records.
async fn busiest_shard(client: &Client, ledger: &Ledger) -> anyhow::Result<String> {
    client
        .admin()
        .list_shards(STREAM)
        .await?
        .into_iter()
        .map(|s| s.shard_id)
        .max_by_key(|id| ledger.acked_in(id).len())
        .context("the stream has no shard")
}

fn reader_config() -> ConsumerConfig {
    ConsumerConfig {
        get_records_limit: 50,
        idle_poll_interval: Duration::from_millis(50),
        ..ConsumerConfig::default()
    }
}

/// Reads `shard` from `start` until caught up.
async fn read_from(
    client: &Client,
    shard: &str,
    start: StartPosition,
) -> Result<Vec<ConsumedRecord>, ClientError> {
    let mut reader = client
        .consumer(STREAM, reader_config())
        .read_shard(shard, start);
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

/// Every iterator type reads what it should, against the acknowledged records.
async fn iterators(client: &Client, ledger: &Ledger, shard: &str) -> anyhow::Result<()> {
    let acked = ledger.acked_in(shard);
    let all = read_from(client, shard, StartPosition::TrimHorizon).await?;
    let seqs = |rs: &[ConsumedRecord]| rs.iter().map(|r| r.sequence_number).collect::<Vec<_>>();
    ensure!(
        seqs(&all) == acked.iter().map(|a| a.sequence_number).collect::<Vec<_>>(),
        "TRIM_HORIZON read is not what was acknowledged"
    );
    ensure!(all.len() >= 4, "too few records in {shard}: {}", all.len());
    let mid = all.len() / 2;
    let at = read_from(
        client,
        shard,
        StartPosition::AtSequenceNumber(all[mid].sequence_number),
    )
    .await?;
    ensure!(seqs(&at) == seqs(&all[mid..]), "AT_SEQUENCE_NUMBER");
    let after = read_from(
        client,
        shard,
        StartPosition::AfterSequenceNumber(all[mid].sequence_number),
    )
    .await?;
    ensure!(
        seqs(&after) == seqs(&all[mid + 1..]),
        "AFTER_SEQUENCE_NUMBER"
    );
    let t = all[mid].arrival_time_ms;
    let first = all.partition_point(|r| r.arrival_time_ms < t);
    let at_time = read_from(client, shard, StartPosition::AtTimestamp(t)).await?;
    ensure!(seqs(&at_time) == seqs(&all[first..]), "AT_TIMESTAMP {t}");
    let future = now_ms() + 3_600_000;
    let bad = read_from(client, shard, StartPosition::AtTimestamp(future)).await;
    ensure!(
        matches!(bad, Err(ClientError::InvalidArgument { .. })),
        "{bad:?}"
    );
    let missing = read_from(client, "shardId-000000099999", StartPosition::TrimHorizon).await;
    ensure!(
        matches!(missing, Err(ClientError::NotFound { .. })),
        "{missing:?}"
    );

    // LATEST: nothing old, then exactly what is written after it.
    let mut latest = client
        .consumer(STREAM, reader_config())
        .read_shard(shard, StartPosition::Latest);
    let first_batch = latest.next().await?.context("LATEST ended")?;
    ensure!(
        first_batch.records.is_empty(),
        "LATEST returned old records"
    );
    let key = acked[0].partition_key.clone();
    let put = client
        .producer(STREAM, Default::default())?
        .send(Record::new(key.clone(), "after latest"))
        .await?;
    ledger.acked(&key, &bytes::Bytes::from_static(b"after latest"), &put);
    ensure!(put.shard_id == shard);
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let b = latest.next().await?.context("LATEST ended")?;
        if let Some(r) = b.records.first() {
            ensure!(b.records.len() == 1 && r.sequence_number == put.sequence_number);
            ensure!(&r.data[..] == b"after latest");
            break;
        }
        if tokio::time::Instant::now() >= until {
            bail!("LATEST never saw the new record");
        }
    }
    Ok(())
}

/// A follower answers a data call with NOT_LEADER naming the leader.
async fn not_leader(client: &Client, shard: &str) -> anyhow::Result<()> {
    let info = client
        .admin()
        .list_shards(STREAM)
        .await?
        .into_iter()
        .find(|s| s.shard_id == shard)
        .context("shard gone")?;
    let leader = info.leader.clone().context("no leader")?;
    let follower = info
        .replicas
        .iter()
        .map(|r| r.address.clone())
        .find(|a| *a != leader)
        .context("no follower")?;
    let mut raw = pb::records_client::RecordsClient::connect(format!("http://{follower}")).await?;
    let status = raw
        .get_shard_iterator(pb::GetShardIteratorRequest {
            stream_name: STREAM.into(),
            shard_id: shard.into(),
            shard_iterator_type: pb::ShardIteratorType::TrimHorizon as i32,
            starting_sequence_number: String::new(),
            timestamp_ms: 0,
        })
        .await
        .err()
        .context("a follower served a data call")?;
    let err = ClientError::from_status(&status, &follower);
    // The leader may have changed since the map was read; a hint is all that matters.
    ensure!(
        matches!(
            &err,
            ClientError::NotLeader {
                leader: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    // The SDK, seeded with the follower only, follows the hint.
    let via_follower = Client::new([follower], ClientConfig::default())?;
    let read = read_from(&via_follower, shard, StartPosition::TrimHorizon).await?;
    ensure!(!read.is_empty());
    Ok(())
}

/// SIGTERM of `shard`'s leader while a producer writes and a subscriber follows the
/// shard: the node exits with success, the shard gets another leader, every write
/// succeeds, the subscriber sees every record of the shard in order, and a client with
/// the old shard map is redirected once the node is back.
async fn graceful_shutdown(
    cluster: &mut ProcCluster,
    client: &Client,
    ledger: &Ledger,
    shard: &str,
) -> anyhow::Result<()> {
    let stale = Client::new(cluster.endpoints(), ClientConfig::default())?;
    let map = stale.shard_map(STREAM).await?;
    let leader = map
        .get(shard)
        .and_then(|s| s.leader.clone())
        .context("no leader")?;
    let victim = cluster
        .id_of(&leader)
        .context("leader is not one of ours")?;
    let from = ledger.max_acked().get(shard).copied();

    let sub_config = ConsumerConfig {
        mode: ReadMode::Subscribe,
        ..reader_config()
    };
    let start = from.map_or(
        StartPosition::TrimHorizon,
        StartPosition::AfterSequenceNumber,
    );
    let mut sub = client.consumer(STREAM, sub_config).read_shard(shard, start);
    let writer = tokio::spawn(produce(
        client.clone(),
        STREAM.into(),
        1,
        3_000,
        64,
        ledger.clone(),
    ));
    let until = tokio::time::Instant::now() + DEADLINE;
    while ledger.acked_count() < 1_000 + 400 {
        if tokio::time::Instant::now() >= until {
            bail!("no progress before the SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = cluster.terminate(victim).await?;
    ensure!(
        status.success(),
        "node {victim} exited with {status} after SIGTERM"
    );
    let outcome = writer.await??;
    ensure!(
        outcome.failed == 0,
        "writes failed across the shutdown: {outcome:?}"
    );
    loop {
        let now_led_by = client
            .admin()
            .list_shards(STREAM)
            .await?
            .into_iter()
            .find(|s| s.shard_id == shard)
            .and_then(|s| s.leader);
        if now_led_by.as_ref().is_some_and(|l| *l != leader) {
            break;
        }
        if tokio::time::Instant::now() >= until {
            bail!("{shard} is led by {now_led_by:?} after {leader} stopped");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The subscription delivered the shard's new records across the change.
    let want: Vec<_> = ledger
        .acked_in(shard)
        .into_iter()
        .filter(|a| from.is_none_or(|f| a.sequence_number > f))
        .collect();
    let mut got: Vec<ConsumedRecord> = Vec::new();
    while got.last().map(|r| r.sequence_number) < want.last().map(|a| a.sequence_number) {
        if tokio::time::Instant::now() >= until {
            bail!(
                "the subscription stopped at {:?}",
                got.last().map(|r| r.sequence_number)
            );
        }
        let b = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .context("the subscription went quiet")??
            .context("the subscription ended")?;
        got.extend(b.records);
    }
    let acked_seen: Vec<_> = got
        .iter()
        .filter(|r| want.iter().any(|a| a.sequence_number == r.sequence_number))
        .map(|r| (r.sequence_number, r.data.clone()))
        .collect();
    let expected: Vec<_> = want
        .iter()
        .map(|a| (a.sequence_number, a.data.clone()))
        .collect();
    ensure!(
        acked_seen == expected,
        "the subscription missed or reordered records"
    );
    ensure!(
        got.windows(2)
            .all(|w| w[0].sequence_number < w[1].sequence_number)
    );

    cluster.restart(victim).await?;
    cluster.wait_all_up().await?;
    // The old map names the stopped leader; the SDK follows NOT_LEADER (or the node
    // leads again) and the read succeeds.
    let read = read_from(&stale, shard, StartPosition::TrimHorizon).await?;
    ensure!(read.len() >= want.len());
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
