//! An in-process cluster of real nodes (real tokio, loopback ports, temporary
//! directories): bootstrap with an initial cluster, every node registers, a stream of
//! four shards is placed and goes ACTIVE; a fourth node joins and receives replicas;
//! a node is killed and its shards are re-replicated after the grace period, with no
//! committed record lost. No timing thresholds: every wait is bounded only to turn a
//! hang into a clear failure.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use runnel_log::RealDisk;
use runnel_meta::{Command, MetaState, NodeStatus, PlannerConfig, ReplicaRole, StreamStatus};
use runnel_nodemeta::MemStore;
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::node::{Node, NodeHandle, NodeOptions};
use runnel_server::placement::PlacementConfig;
use runnel_types::{GroupId, LogIndex, NodeId, Record, ShardId, StreamName};
use tempfile::TempDir;

/// How long any wait may take before the test fails (a hang guard, not a threshold).
const PATIENCE: Duration = Duration::from_secs(90);

fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn options() -> NodeOptions {
    let planner = PlannerConfig {
        heartbeat_timeout_ms: 2_000,
        down_grace_ms: 2_000,
        ..PlannerConfig::default()
    };
    let placement = PlacementConfig {
        planner,
        plan_interval_ms: 200,
        heartbeat_interval_ms: 300,
        reconcile_interval_ms: 300,
    };
    NodeOptions {
        placement,
        raft: None,
    }
}

struct TestCluster {
    addrs: BTreeMap<NodeId, SocketAddr>,
    dirs: BTreeMap<NodeId, TempDir>,
    /// Node metadata outlives a node, as its directory does, so a node can restart.
    stores: BTreeMap<NodeId, Arc<MemStore>>,
    nodes: BTreeMap<NodeId, NodeHandle>,
}

impl TestCluster {
    fn new() -> TestCluster {
        TestCluster {
            addrs: BTreeMap::new(),
            dirs: BTreeMap::new(),
            stores: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    fn reserve(&mut self, id: u64) -> anyhow::Result<()> {
        self.addrs.insert(NodeId(id), free_addr()?);
        self.dirs.insert(NodeId(id), tempfile::tempdir()?);
        Ok(())
    }

    async fn start(&mut self, id: u64, bootstrap: Bootstrap) -> anyhow::Result<()> {
        let node = NodeId(id);
        let listen = self.addrs[&node];
        let config = Config {
            node_id: node,
            listen,
            advertise: listen.to_string(),
            admin_listen: "127.0.0.1:0".parse()?,
            data_dir: self.dirs[&node].path().to_path_buf(),
            bootstrap,
            labels: BTreeMap::new(),
            log_format: LogFormat::Text,
            default_replication: 3,
            min_retention_ms: None,
        };
        let store = self
            .stores
            .entry(node)
            .or_insert_with(|| Arc::new(MemStore::new()))
            .clone();
        let handle = Node::start_with(config, RealDisk::shared(), store, options())
            .await
            .with_context(|| format!("starting node {id}"))?;
        self.nodes.insert(node, handle);
        Ok(())
    }

    fn initial(&self, ids: &[u64]) -> Bootstrap {
        Bootstrap::Initial(
            ids.iter()
                .map(|i| (NodeId(*i), self.addrs[&NodeId(*i)].to_string()))
                .collect(),
        )
    }

    fn node(&self, id: u64) -> &NodeHandle {
        &self.nodes[&NodeId(id)]
    }

    /// Waits until `pred` holds on every running node's applied meta state.
    async fn wait_all(&self, what: &str, pred: impl Fn(&MetaState) -> bool) -> anyhow::Result<()> {
        wait(what, || {
            self.nodes.values().all(|n| n.ctx.placement.read(&pred))
        })
        .await
    }
}

async fn wait(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > PATIENCE {
            bail!("gave up after {PATIENCE:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn up(s: &MetaState, ids: &[u64]) -> bool {
    ids.iter().all(|i| s.node_is(NodeId(*i), &[NodeStatus::Up]))
}

/// Every shard of `stream` has `rf` voters, no move in flight, a reported leader, and
/// none of its replicas on `not_on`.
fn settled(s: &MetaState, stream: &str, rf: usize, not_on: Option<u64>) -> bool {
    let Some(info) = s.streams.values().find(|st| st.name.as_str() == stream) else {
        return false;
    };
    info.status == StreamStatus::Active
        && info.shards.iter().all(|id| {
            s.shards.get(id).is_some_and(|sh| {
                sh.replicas.len() == rf
                    && sh
                        .replicas
                        .iter()
                        .all(|r| r.role == ReplicaRole::Voter && Some(r.node.0) != not_on)
                    && sh.pending_move.is_none()
                    && sh.leader.is_some_and(|l| Some(l.node.0) != not_on)
            })
        })
}

fn shards_of(s: &MetaState, stream: &str) -> Vec<ShardId> {
    s.streams
        .values()
        .find(|st| st.name.as_str() == stream)
        .map(|st| st.shards.clone())
        .unwrap_or_default()
}

/// Writes one record to each shard through its current leader; returns where each landed.
async fn write_each(
    c: &TestCluster,
    shards: &[ShardId],
    tag: &str,
) -> anyhow::Result<BTreeMap<ShardId, LogIndex>> {
    let mut out = BTreeMap::new();
    for shard in shards {
        let group = GroupId::from(*shard);
        let mut acked = None;
        let start = Instant::now();
        while acked.is_none() {
            for n in c.nodes.values() {
                if let Ok(g) = n.ctx.registry.group(group)
                    && g.is_leader()
                    && let Ok(ack) = g
                        .write(vec![Record::new(
                            tag,
                            format!("{tag} {shard}").into_bytes(),
                        )])
                        .await
                {
                    acked = Some(ack.index);
                    break;
                }
            }
            if start.elapsed() > PATIENCE {
                bail!("no leader of shard {shard} accepted a write within {PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        out.insert(*shard, acked.expect("set in the loop"));
    }
    Ok(out)
}

/// Every running replica of each shard that has committed `index` holds the record.
async fn check_records(
    c: &TestCluster,
    written: &BTreeMap<ShardId, LogIndex>,
    tag: &str,
) -> anyhow::Result<()> {
    for (shard, index) in written {
        let mut holders = 0;
        for n in c.nodes.values() {
            let Ok(g) = n.ctx.registry.group(GroupId::from(*shard)) else {
                continue;
            };
            let mut watch = g.watch_commit();
            tokio::time::timeout(PATIENCE, watch.wait_for(*index))
                .await
                .with_context(|| {
                    format!(
                        "node {} never committed {index} of shard {shard}",
                        n.node_id()
                    )
                })??;
            let read = g.read_committed(*index, 1 << 20).await?;
            let batch = read
                .batches
                .first()
                .with_context(|| format!("shard {shard} entry {index} missing"))?;
            let records = runnel_types::record::decode_batch(&batch.batch)?;
            anyhow::ensure!(
                records.iter().any(|r| r.partition_key == tag),
                "node {} shard {shard} entry {index} lacks the record {tag}",
                n.node_id()
            );
            holders += 1;
        }
        anyhow::ensure!(
            holders >= 3,
            "shard {shard}: only {holders} running replicas hold its record"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_place_join_and_repair() -> anyhow::Result<()> {
    runnel_server::telemetry::init(LogFormat::Text);
    let mut c = TestCluster::new();
    for id in 1..=4 {
        c.reserve(id)?;
    }
    let initial = c.initial(&[1, 2, 3]);
    for id in 1..=3 {
        c.start(id, initial.clone()).await?;
    }
    c.wait_all(
        "nodes 1-3 are registered and Up, and the cluster has an identity",
        |s| up(s, &[1, 2, 3]) && s.identity.is_some(),
    )
    .await?;
    let ids: Vec<String> = c
        .nodes
        .values()
        .map(|n| n.ctx.placement.cluster_id())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "nodes disagree on the cluster id: {ids:?}"
    );

    // Create through a node that is not (necessarily) the meta leader: exercises forwarding.
    let create = Command::CreateStream {
        name: StreamName::new("orders")?,
        shard_count: 4,
        replication_factor: 3,
        retention_ms: 86_400_000,
        now_ms: runnel_server::context::now_ms(),
    };
    c.node(3).ctx.placement.propose(create).await?;
    c.wait_all(
        "stream orders is ACTIVE with 3 voters and a leader per shard",
        |s| settled(s, "orders", 3, None),
    )
    .await?;
    let shards = c.node(1).ctx.placement.read(|s| shards_of(s, "orders"));
    assert_eq!(shards.len(), 4);
    let before = write_each(&c, &shards, "before").await?;
    check_records(&c, &before, "before").await?;

    // A fourth node joins through node 2 and receives replicas (balance moves).
    c.start(4, Bootstrap::Join(c.addrs[&NodeId(2)].to_string()))
        .await?;
    c.wait_all(
        "node 4 is Up and holds replicas, with every move finished",
        |s| {
            up(s, &[1, 2, 3, 4])
                && s.shards_on(NodeId(4)).count() > 0
                && settled(s, "orders", 3, None)
        },
    )
    .await?;
    wait("node 4 hosts the replicas assigned to it", || {
        let n4 = c.node(4);
        let assigned = n4
            .ctx
            .placement
            .read(|s| s.shards_on(NodeId(4)).map(|sh| sh.id).collect::<Vec<_>>());
        assigned
            .iter()
            .all(|id| n4.ctx.registry.group(GroupId::from(*id)).is_ok())
    })
    .await?;

    // Kill node 3: after the grace period its replicas are replaced elsewhere.
    let victim = c.nodes.remove(&NodeId(3)).context("node 3 runs")?;
    victim.kill().await;
    c.wait_all("node 3 is Down and no shard keeps a replica on it", |s| {
        s.node_is(NodeId(3), &[NodeStatus::Down]) && settled(s, "orders", 3, Some(3))
    })
    .await?;
    check_records(&c, &before, "before").await?;
    let after = write_each(&c, &shards, "after").await?;
    check_records(&c, &after, "after").await?;

    for (_, n) in std::mem::take(&mut c.nodes) {
        n.shutdown().await;
    }
    Ok(())
}

/// Starts nodes 1-3 as the initial cluster (and `joining` more, joining through node 1),
/// waits until all are Up, creates `stream` with `shards` shards and waits until it is
/// ACTIVE and settled.
async fn cluster_with_stream(
    joining: &[u64],
    stream: &str,
    shards: u32,
) -> anyhow::Result<(TestCluster, Vec<ShardId>)> {
    runnel_server::telemetry::init(LogFormat::Text);
    let mut c = TestCluster::new();
    for id in (1..=3).chain(joining.iter().copied()) {
        c.reserve(id)?;
    }
    let initial = c.initial(&[1, 2, 3]);
    for id in 1..=3 {
        c.start(id, initial.clone()).await?;
    }
    for id in joining {
        c.start(*id, Bootstrap::Join(c.addrs[&NodeId(1)].to_string()))
            .await?;
    }
    let all: Vec<u64> = c.nodes.keys().map(|n| n.0).collect();
    c.wait_all("every node is registered and Up", |s| {
        up(s, &all) && s.identity.is_some()
    })
    .await?;
    let create = Command::CreateStream {
        name: StreamName::new(stream)?,
        shard_count: shards,
        replication_factor: 3,
        retention_ms: 86_400_000,
        now_ms: runnel_server::context::now_ms(),
    };
    c.node(1).ctx.placement.propose(create).await?;
    c.wait_all("the stream is ACTIVE and settled", |s| {
        settled(s, stream, 3, None)
    })
    .await?;
    let ids = c.node(1).ctx.placement.read(|s| shards_of(s, stream));
    Ok((c, ids))
}

/// Reported leaderships per node, counting every node in `nodes` (zero if it leads none).
fn leader_counts(s: &MetaState, nodes: &[u64]) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for shard in s.shards.values() {
        if let Some(l) = shard.leader {
            *counts.entry(l.node.0).or_default() += 1;
        }
    }
    counts
}

async fn shutdown_all(c: &mut TestCluster) {
    for (_, n) in std::mem::take(&mut c.nodes) {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_gives_up_every_replica_and_reports_drained() -> anyhow::Result<()> {
    let (mut c, shards) = cluster_with_stream(&[4], "drain", 4).await?;
    let before = write_each(&c, &shards, "before").await?;
    check_records(&c, &before, "before").await?;
    let held = c
        .node(1)
        .ctx
        .placement
        .read(|s| s.shards_on(NodeId(1)).count());
    assert!(held > 0, "node 1 holds no replica to drain");

    c.node(2)
        .ctx
        .placement
        .propose(Command::DrainNode { node: NodeId(1) })
        .await?;
    c.wait_all("node 1 is Drained and every shard settled off it", |s| {
        s.node_is(NodeId(1), &[NodeStatus::Drained]) && settled(s, "drain", 3, Some(1))
    })
    .await?;
    wait("node 1 hosts no shard replica any more", || {
        c.node(1)
            .ctx
            .registry
            .group_ids()
            .iter()
            .all(|g| g.is_meta())
    })
    .await?;
    // Every committed record is still on three running replicas, and writes go on.
    check_records(&c, &before, "before").await?;
    let after = write_each(&c, &shards, "after").await?;
    check_records(&c, &after, "after").await?;
    shutdown_all(&mut c).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_finishes_after_the_meta_leader_is_killed() -> anyhow::Result<()> {
    let (mut c, shards) = cluster_with_stream(&[], "moving", 4).await?;
    let before = write_each(&c, &shards, "before").await?;

    // Node 4 joins: balance moves start towards it. Kill the meta leader mid-move.
    c.reserve(4)?;
    c.start(4, Bootstrap::Join(c.addrs[&NodeId(1)].to_string()))
        .await?;
    let moving_to_4 = |s: &MetaState| -> Vec<ShardId> {
        s.shards
            .values()
            .filter(|sh| sh.pending_move.as_ref().is_some_and(|m| m.add == NodeId(4)))
            .map(|sh| sh.id)
            .collect()
    };
    let leader = c
        .nodes
        .iter()
        .find(|(_, n)| n.ctx.placement.is_meta_leader())
        .map(|(id, _)| *id)
        .context("no node leads the meta group")?;
    let begun = Instant::now();
    let in_flight = loop {
        let moving = c.node(leader.0).ctx.placement.read(moving_to_4);
        if !moving.is_empty() {
            break moving;
        }
        if begun.elapsed() > PATIENCE {
            bail!("no move towards node 4 began within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let victim = c.nodes.remove(&leader).context("the meta leader runs")?;
    victim.kill().await;

    // A new meta leader takes over; the interrupted moves finish (node 4 votes in
    // those shards), the dead node is replaced, and nothing committed is lost.
    c.wait_all(
        "the interrupted moves finished and every shard settled",
        |s| {
            settled(s, "moving", 3, Some(leader.0))
                && in_flight
                    .iter()
                    .all(|id| s.shards[id].role_of(NodeId(4)) == Some(ReplicaRole::Voter))
        },
    )
    .await?;
    assert!(
        c.nodes.values().any(|n| n.ctx.placement.is_meta_leader()),
        "no meta leader after the kill"
    );
    check_records(&c, &before, "before").await?;
    let after = write_each(&c, &shards, "after").await?;
    check_records(&c, &after, "after").await?;
    shutdown_all(&mut c).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_node_receives_replicas_and_leaderships() -> anyhow::Result<()> {
    let (mut c, _) = cluster_with_stream(&[], "leaders", 6).await?;
    let three = c
        .node(1)
        .ctx
        .placement
        .read(|s| leader_counts(s, &[1, 2, 3]));
    assert_eq!(three.values().sum::<usize>(), 6, "{three:?}");

    c.reserve(4)?;
    c.start(4, Bootstrap::Join(c.addrs[&NodeId(2)].to_string()))
        .await?;
    // 6 shards on 4 nodes: 18 replicas (4 or 5 each) and 6 leaderships (1 or 2 each),
    // every reported leader the preferred one.
    c.wait_all(
        "replicas and leaders are balanced over the four nodes",
        |s| {
            let leaders = leader_counts(s, &[1, 2, 3, 4]);
            let replicas: Vec<usize> = (1..=4).map(|n| s.shards_on(NodeId(n)).count()).collect();
            settled(s, "leaders", 3, None)
                && replicas.iter().all(|r| (4..=5).contains(r))
                && leaders.values().all(|l| (1..=2).contains(l))
                && s.shards
                    .values()
                    .all(|sh| sh.leader.map(|l| l.node) == sh.preferred_leader)
        },
    )
    .await?;
    // The meta state's leaders are the groups' real leaders.
    let reported: Vec<(ShardId, NodeId)> = c.node(1).ctx.placement.read(|s| {
        s.shards
            .values()
            .filter_map(|sh| Some((sh.id, sh.leader?.node)))
            .collect()
    });
    for (shard, node) in reported {
        let group = c.node(node.0).ctx.registry.group(GroupId::from(shard))?;
        assert!(
            group.is_leader(),
            "node {node} is reported leader of {shard} but does not lead"
        );
    }
    shutdown_all(&mut c).await;
    Ok(())
}

/// Entries of the meta log this node still holds: (first, committed).
fn meta_log(n: &NodeHandle) -> Option<(u64, u64)> {
    let g = n.ctx.registry.group(GroupId::META).ok()?;
    Some((g.first_index()?.0, g.committed().0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_meta_log_is_trimmed_under_snapshots_and_nodes_recover_from_them() -> anyhow::Result<()>
{
    /// Applied entries between two snapshots (heartbeats alone write about 10 a second).
    const EVERY: u64 = 40;
    let (mut c, _) = cluster_with_stream(&[], "snap", 2).await?;
    for n in c.nodes.values() {
        n.ctx.placement.set_snapshot_every(EVERY);
    }
    wait("every node has trimmed its meta log twice over", || {
        c.nodes
            .values()
            .all(|n| meta_log(n).is_some_and(|(first, _)| first > 2 * EVERY))
    })
    .await?;
    // Bounded: a node holds at most the entries since the snapshot before last, i.e.
    // about two periods plus what is written while a snapshot commits and trims.
    let mut firsts = BTreeMap::new();
    for _ in 0..3 {
        wait("every node trims again", || {
            c.nodes.values().all(|n| {
                let first = meta_log(n).map_or(0, |(f, _)| f);
                first > firsts.get(&n.node_id()).copied().unwrap_or(0)
            })
        })
        .await?;
        for n in c.nodes.values() {
            let (first, committed) = meta_log(n).context("meta group hosted")?;
            anyhow::ensure!(
                committed.saturating_sub(first) <= 4 * EVERY,
                "node {} holds meta entries {first}..={committed}: not trimmed",
                n.node_id()
            );
            firsts.insert(n.node_id(), first);
        }
    }

    // A restarted node rebuilds its state from the snapshot in its (trimmed) log.
    let expected = c.node(1).ctx.placement.read(|s| s.streams.clone());
    c.nodes
        .remove(&NodeId(3))
        .context("node 3 runs")?
        .kill()
        .await;
    c.start(3, c.initial(&[1, 2, 3])).await?;
    c.node(3).ctx.placement.set_snapshot_every(EVERY);
    let target = c.node(1).ctx.placement.applied_index();
    wait("node 3 applied the meta log past the restart", || {
        c.node(3).ctx.placement.applied_index() >= target
    })
    .await?;
    let got = c.node(3).ctx.placement.read(|s| s.streams.clone());
    assert_eq!(got, expected, "node 3 rebuilt another state");

    // A node that joins now never sees the start of the log: it rebuilds too.
    c.reserve(4)?;
    c.start(4, Bootstrap::Join(c.addrs[&NodeId(1)].to_string()))
        .await?;
    c.wait_all("node 4 knows the stream and every node is Up", |s| {
        up(s, &[1, 2, 3, 4]) && s.streams.keys().any(|n| n.as_str() == "snap")
    })
    .await?;
    let (first, _) = meta_log(c.node(4)).context("node 4 hosts the meta group")?;
    assert!(first > 1, "node 4 was sent the whole meta log");
    shutdown_all(&mut c).await;
    Ok(())
}
