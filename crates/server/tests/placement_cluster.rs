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
    nodes: BTreeMap<NodeId, NodeHandle>,
}

impl TestCluster {
    fn new() -> TestCluster {
        TestCluster {
            addrs: BTreeMap::new(),
            dirs: BTreeMap::new(),
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
        };
        let handle = Node::start_with(
            config,
            RealDisk::shared(),
            Arc::new(MemStore::new()),
            options(),
        )
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
