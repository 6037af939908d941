//! Chaos across containers (issue 8, item 3): three runneld containers on a private
//! Docker network, built from this build's runneld by `deploy/docker/build.sh`; producers
//! and a consumer group of two members run throughout while, one after the other:
//!
//! 1. `docker kill` (SIGKILL) and restart of a node, then of a shard leader's node, then
//!    of the meta leader's node;
//! 2. `docker network disconnect` of a shard leader's node, then `connect`;
//! 3. `docker pause` of the meta leader's node, then `unpause`;
//! 4. a rolling restart of all three (`docker stop`: SIGTERM and a graceful shutdown).
//!
//! Writes must go on while each fault lasts (two nodes are a majority) and after it
//! heals, and the cluster must be whole again (every node up, every shard with a leader
//! and three voters, nothing under-replicated, no move left) before the next fault. At
//! the end: every acknowledged record reads back once, per shard in sequence order,
//! byte-identical; the group delivered every record at least once and exactly once
//! counting checkpoints; every shard is fully replicated.
//!
//! Load is light on purpose (rounds of 100 records with a short rest between them, two
//! producers): the faults are the point, and the machine is small. Every wait is bounded
//! (a stalled cluster fails with the containers' logs, never hangs); none is a
//! performance assertion. Without a Docker engine the test prints SKIPPED, except under
//! `CI`, where it fails.

#![cfg(not(madsim))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use runnel_client::{Client, CreateStream, NodeStatus};
use runnel_e2e::deliveries::DeliveryLog;
use runnel_e2e::docker::{DockerCluster, Engine, engine_or_skip};
use runnel_e2e::ledger::{Ledger, ShardReads, read_stream};
use runnel_e2e::workload::{ProduceOutcome, create_stream, produce, spawn_member};
use tokio::task::JoinHandle;

const NODES: u64 = 3;
const STREAM: &str = "chaos-orders";
const SHARDS: u32 = 4;
const GROUP: &str = "chaos-billing";
/// Producers writing at once; each writes rounds of [`ROUND_RECORDS`].
const PRODUCERS: usize = 2;
const ROUND_RECORDS: usize = 100;
/// Rest between two rounds of a producer: bounds the requests, not a timing assertion.
const ROUND_REST: Duration = Duration::from_millis(250);
const RECORD_BYTES: usize = 100;
/// Acknowledgements that must arrive while a fault lasts, and again after it heals.
const PROGRESS_RECORDS: usize = 200;
/// Short, so that leases of a member cut off from the cluster lapse soon.
const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on every wait for progress or repair: far above what a healthy run needs.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producers_and_a_group_survive_kills_a_partition_a_pause_and_a_rolling_restart()
-> anyhow::Result<()> {
    let test =
        "containers::producers_and_a_group_survive_kills_a_partition_a_pause_and_a_rolling_restart";
    if let Engine::Skipped = engine_or_skip(test)? {
        return Ok(());
    }
    let started = Instant::now();
    let cluster = DockerCluster::start(NODES).await?;
    eprintln!(
        "cluster of {NODES} containers up after {:.1?}",
        started.elapsed()
    );
    let result = scenario(&cluster).await;
    if result.is_err() {
        cluster.print_logs();
    }
    eprintln!("test took {:.1?}", started.elapsed());
    result
}

async fn scenario(cluster: &DockerCluster) -> anyhow::Result<()> {
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
    wait_whole(cluster, &client).await?;

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
    let members = [member("member-1"), member("member-2")];
    let load = Load::start(&client, &ledger);
    wait_progress(&ledger, "before any fault").await?;

    let chaos = Chaos {
        cluster,
        client: &client,
        ledger: &ledger,
    };
    chaos.faults().await?;

    let outcome = load.stop().await?;
    eprintln!(
        "producers: {} acknowledged, {} failed {:?}",
        outcome.acked, outcome.failed, outcome.errors
    );
    assert_eq!(outcome.acked, ledger.acked_count());

    let reads = read_stream(&client, STREAM, &ledger, PROGRESS_DEADLINE).await?;
    let report = ledger.verify(&reads);
    eprintln!("stream check: {report}");
    report.assert_ok();

    wait_checkpointed(&client, &reads).await?;
    for m in members {
        m.leave().await?;
    }
    let report = log.verify(&reads);
    eprintln!(
        "group check: {} sessions, {} deliveries; {report}",
        log.session_count(),
        log.delivered_count()
    );
    report.assert_ok();

    if let Err(why) = whole(cluster, &client).await {
        bail!("at the end the cluster is not whole: {why}");
    }
    for id in cluster.ids() {
        assert!(cluster.is_running(id), "node {id}'s container exited");
    }
    Ok(())
}

/// The faults, in turn; each one's victim is chosen from the cluster's state just before.
struct Chaos<'a> {
    cluster: &'a DockerCluster,
    client: &'a Client,
    ledger: &'a Ledger,
}

impl Chaos<'_> {
    async fn faults(&self) -> anyhow::Result<()> {
        let meta = self.meta_leader().await?;
        let plain = self
            .cluster
            .ids()
            .into_iter()
            .rev()
            .find(|id| *id != meta)
            .context("no node besides the meta leader")?;
        self.kill_and_restart("a node", plain).await?;
        // A shard leader that is not also the meta leader, if there is one: the meta
        // leader has its own turn next.
        let meta = self.meta_leader().await?;
        let shard_leader = self.shard_leader(Some(meta)).await?;
        self.kill_and_restart("a shard leader", shard_leader)
            .await?;
        let meta = self.meta_leader().await?;
        self.kill_and_restart("the meta leader", meta).await?;

        let victim = self.shard_leader(None).await?;
        self.announce(&format!(
            "disconnecting node {victim} (a shard leader) from the network"
        ));
        self.cluster.disconnect(victim).await?;
        wait_progress(self.ledger, "while a node is cut off").await?;
        self.cluster.connect(victim).await?;
        self.healed(victim).await?;

        let victim = self.meta_leader().await?;
        self.announce(&format!("pausing node {victim} (the meta leader)"));
        self.cluster.pause(victim).await?;
        wait_progress(self.ledger, "while a node is paused").await?;
        self.cluster.unpause(victim).await?;
        self.healed(victim).await?;

        for id in self.cluster.ids() {
            self.announce(&format!("rolling restart: stopping node {id} (SIGTERM)"));
            self.cluster.stop(id).await?;
            wait_progress(self.ledger, "while a node is stopped").await?;
            self.cluster.restart(id).await?;
            self.healed(id).await?;
        }
        Ok(())
    }

    async fn kill_and_restart(&self, what: &str, victim: u64) -> anyhow::Result<()> {
        self.announce(&format!("killing node {victim} ({what}) with SIGKILL"));
        self.cluster.kill(victim).await?;
        wait_progress(self.ledger, "while a node is dead").await?;
        self.cluster.restart(victim).await?;
        self.healed(victim).await
    }

    /// After a fault ends: the node is ready, the cluster whole, writes go on.
    async fn healed(&self, id: u64) -> anyhow::Result<()> {
        self.cluster.wait_ready(id).await?;
        wait_whole(self.cluster, self.client).await?;
        wait_progress(self.ledger, "after the fault healed").await
    }

    fn announce(&self, what: &str) {
        eprintln!(
            "{what} at {} acknowledged records",
            self.ledger.acked_count()
        );
    }

    /// The meta leader's node, once there is one (a node rejoining after a partition
    /// may call an election, so there can be a moment without).
    async fn meta_leader(&self) -> anyhow::Result<u64> {
        self.eventually("a meta leader", || async {
            let status = self.client.admin().cluster_status().await?;
            let (id, _) = status.meta_leader.context("no meta leader")?;
            Ok(id.0)
        })
        .await
    }

    /// The node leading the first shard that has a leader now, preferring one that is
    /// not `besides`.
    async fn shard_leader(&self, besides: Option<u64>) -> anyhow::Result<u64> {
        self.eventually("a shard leader", || async {
            let shards = self.client.admin().list_shards(STREAM).await?;
            let leaders: Vec<u64> = shards
                .iter()
                .filter_map(|s| s.leader.as_deref())
                .filter_map(|a| self.cluster.id_of(a))
                .collect();
            leaders
                .iter()
                .find(|id| Some(**id) != besides)
                .or(leaders.first())
                .copied()
                .context("no shard has a known leader")
        })
        .await
    }

    /// Retries `f` until it succeeds, for at most [`PROGRESS_DEADLINE`].
    async fn eventually<F, Fut>(&self, what: &str, f: F) -> anyhow::Result<u64>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<u64>>,
    {
        let until = tokio::time::Instant::now() + PROGRESS_DEADLINE;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if tokio::time::Instant::now() >= until => {
                    return Err(e.context(format!("no {what} within {PROGRESS_DEADLINE:?}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// Producers writing rounds of records until stopped; each round is a fresh producer
/// index, so every record of the run is distinct.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<anyhow::Result<ProduceOutcome>>>,
}

impl Load {
    fn start(client: &Client, ledger: &Ledger) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..PRODUCERS)
            .map(|first| {
                let (client, ledger, stop) = (client.clone(), ledger.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut total = ProduceOutcome::default();
                    for round in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let p = first + PRODUCERS * round;
                        let o = produce(
                            client.clone(),
                            STREAM.to_string(),
                            p,
                            ROUND_RECORDS,
                            RECORD_BYTES,
                            ledger.clone(),
                        )
                        .await?;
                        total.acked += o.acked;
                        total.failed += o.failed;
                        total.errors.extend(o.errors);
                        tokio::time::sleep(ROUND_REST).await;
                    }
                    Ok(total)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn stop(self) -> anyhow::Result<ProduceOutcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = ProduceOutcome::default();
        for t in self.tasks {
            let o = t.await??;
            all.acked += o.acked;
            all.failed += o.failed;
            all.errors.extend(o.errors);
        }
        all.errors.truncate(10);
        Ok(all)
    }
}

/// Waits until [`PROGRESS_RECORDS`] more records are acknowledged than now.
async fn wait_progress(ledger: &Ledger, when: &str) -> anyhow::Result<()> {
    let want = ledger.acked_count() + PROGRESS_RECORDS;
    let until = tokio::time::Instant::now() + PROGRESS_DEADLINE;
    while ledger.acked_count() < want {
        if tokio::time::Instant::now() >= until {
            bail!(
                "no progress {when}: {} acknowledged, {want} awaited within {PROGRESS_DEADLINE:?}",
                ledger.acked_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until [`whole`] holds.
async fn wait_whole(cluster: &DockerCluster, client: &Client) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + PROGRESS_DEADLINE;
    loop {
        let why = match whole(cluster, client).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= until {
            bail!("the cluster is not whole within {PROGRESS_DEADLINE:?}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the cluster is whole again: ClusterStatus shows a meta leader, every node up, no shard
/// under-replicated or leaderless and no move in progress; ListShards shows every shard
/// of the stream with a leader and a voter on each of the nodes. Otherwise, why not.
async fn whole(cluster: &DockerCluster, client: &Client) -> Result<(), String> {
    let status = client
        .admin()
        .cluster_status()
        .await
        .map_err(|e| format!("ClusterStatus: {e}"))?;
    let down: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| n.status != NodeStatus::Up)
        .map(|n| format!("node {} {:?}", n.node_id.0, n.status))
        .collect();
    if status.meta_leader.is_none() {
        return Err("no meta leader".into());
    }
    if !down.is_empty() || status.nodes.len() != cluster.ids().len() {
        return Err(format!(
            "nodes not all up: {down:?} of {}",
            status.nodes.len()
        ));
    }
    if status.under_replicated_shards > 0
        || status.leaderless_shards > 0
        || !status.moves_in_progress.is_empty()
    {
        return Err(format!(
            "{} under-replicated, {} leaderless, moves {:?}",
            status.under_replicated_shards, status.leaderless_shards, status.moves_in_progress
        ));
    }
    let shards = client
        .admin()
        .list_shards(STREAM)
        .await
        .map_err(|e| format!("ListShards: {e}"))?;
    if shards.len() != SHARDS as usize {
        return Err(format!("{} shards listed, {SHARDS} created", shards.len()));
    }
    for s in &shards {
        let mut voters: Vec<u64> = s
            .replicas
            .iter()
            .filter(|r| r.role == "voter")
            .map(|r| r.node_id)
            .collect();
        voters.sort_unstable();
        if s.leader.is_none() || voters != cluster.ids() {
            return Err(format!(
                "{}: leader {:?}, voters {voters:?}",
                s.shard_id, s.leader
            ));
        }
    }
    Ok(())
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
