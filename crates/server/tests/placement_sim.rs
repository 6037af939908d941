//! Placement scenarios under madsim: three nodes bootstrap a cluster, register, and a
//! stream of four shards is placed and goes ACTIVE; a node is drained; the meta leader
//! is killed in the middle of a move; a joining node receives replicas and leaderships.
//! Each node runs on its own simulated IP with a `SimDisk` and a `MemStore` owned by
//! the test. Replay a failure with the seed madsim prints:
//! `MADSIM_TEST_SEED=<seed> RUSTFLAGS="--cfg madsim" cargo test -p runnel-server --test placement_sim`.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use madsim::runtime::{Handle, NodeHandle as SimHandle};
use runnel_log::SimDisk;
use runnel_meta::{Command, MetaState, NodeStatus, PlannerConfig, ReplicaRole, StreamStatus};
use runnel_nodemeta::MemStore;
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::context::NodeContext;
use runnel_server::node::{Node, NodeOptions};
use runnel_server::placement::PlacementConfig;
use runnel_types::{NodeId, ShardId, StreamName};

/// A hang guard in simulated time, not a threshold.
const PATIENCE: Duration = Duration::from_secs(120);

type Slot = Arc<Mutex<Option<Arc<NodeContext>>>>;

struct SimNode {
    handle: SimHandle,
    slot: Slot,
    _disk: SimDisk,
    _meta: MemStore,
}

fn addr(id: u64) -> String {
    format!("10.0.0.{id}:7100")
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

fn start(id: u64, voters: &BTreeMap<NodeId, String>) -> SimNode {
    start_with(id, Bootstrap::Initial(voters.clone()))
}

fn start_with(id: u64, bootstrap: Bootstrap) -> SimNode {
    let (disk, meta, slot) = (SimDisk::new(), MemStore::new(), Slot::default());
    let (d, m, s, bootstrap) = (disk.clone(), meta.clone(), slot.clone(), bootstrap);
    let handle = Handle::current()
        .create_node()
        .name(format!("node-{id}"))
        .ip(format!("10.0.0.{id}").parse().expect("a valid ip"))
        .init(move || {
            let (d, m, s, bootstrap) = (d.clone(), m.clone(), s.clone(), bootstrap.clone());
            async move {
                let config = Config {
                    node_id: NodeId(id),
                    listen: addr(id).parse().expect("a valid address"),
                    advertise: addr(id),
                    admin_listen: "127.0.0.1:0".parse().expect("a valid address"),
                    data_dir: format!("/node-{id}").into(),
                    bootstrap,
                    labels: BTreeMap::new(),
                    log_format: LogFormat::Text,
                    default_replication: 3,
                    min_retention_ms: None,
                };
                let node = Node::start_with(config, d.handle(), Arc::new(m), options())
                    .await
                    .expect("node starts");
                *s.lock().expect("slot") = Some(node.ctx.clone());
                std::future::pending::<()>().await;
                drop(node);
            }
        })
        .build();
    SimNode {
        handle,
        slot,
        _disk: disk,
        _meta: meta,
    }
}

fn ctx(n: &SimNode) -> Option<Arc<NodeContext>> {
    n.slot.lock().ok()?.clone()
}

async fn wait_all(
    nodes: &[SimNode],
    what: &str,
    pred: impl Fn(&MetaState) -> bool,
) -> anyhow::Result<()> {
    let start = madsim::time::Instant::now();
    loop {
        let ok = nodes
            .iter()
            .all(|n| ctx(n).is_some_and(|c| c.placement.read(&pred)));
        if ok {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            bail!("gave up after {PATIENCE:?} (simulated) waiting until {what}");
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}

#[madsim::test]
async fn three_nodes_bootstrap_and_place_a_stream() -> anyhow::Result<()> {
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|i| (NodeId(i), addr(i))).collect();
    let nodes: Vec<SimNode> = (1..=3).map(|i| start(i, &voters)).collect();
    wait_all(
        &nodes,
        "every node is registered and Up and the cluster has an identity",
        |s| (1..=3).all(|i| s.node_is(NodeId(i), &[NodeStatus::Up])) && s.identity.is_some(),
    )
    .await?;

    let c2 = ctx(&nodes[1]).expect("node 2 runs");
    let created = nodes[1]
        .handle
        .spawn(async move {
            let create = Command::CreateStream {
                name: StreamName::new("orders").expect("a valid name"),
                shard_count: 4,
                replication_factor: 3,
                retention_ms: 86_400_000,
                now_ms: runnel_server::context::now_ms(),
            };
            c2.placement.propose(create).await
        })
        .await;
    match created {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => bail!("CreateStream failed: {e}"),
        Err(e) => bail!("the proposing task failed: {e}"),
    }
    wait_all(
        &nodes,
        "stream orders is ACTIVE with every shard led",
        |s| {
            s.streams
                .values()
                .any(|st| st.name.as_str() == "orders" && st.status == StreamStatus::Active)
                && s.shards
                    .values()
                    .all(|sh| sh.replicas.len() == 3 && sh.leader.is_some())
        },
    )
    .await?;
    Ok(())
}

/// Proposes `cmd` from node `n`'s own simulated machine.
async fn propose(n: &SimNode, cmd: Command) -> anyhow::Result<()> {
    let c = ctx(n).ok_or_else(|| anyhow::anyhow!("the node has not started"))?;
    match n
        .handle
        .spawn(async move { c.placement.propose(cmd).await })
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("the proposal failed: {e}"),
        Err(e) => bail!("the proposing task failed: {e}"),
    }
}

/// Nodes 1-3 bootstrap (and `joining` join through node 1); a stream `name` of
/// `shards` shards is created and settles.
async fn cluster_with_stream(
    joining: &[u64],
    name: &str,
    shards: u32,
) -> anyhow::Result<Vec<SimNode>> {
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|i| (NodeId(i), addr(i))).collect();
    let mut nodes: Vec<SimNode> = (1..=3).map(|i| start(i, &voters)).collect();
    for id in joining {
        nodes.push(start_with(*id, Bootstrap::Join(addr(1))));
    }
    let all: Vec<u64> = (1..=3).chain(joining.iter().copied()).collect();
    wait_all(&nodes, "every node is registered and Up", |s| {
        all.iter().all(|i| s.node_is(NodeId(*i), &[NodeStatus::Up])) && s.identity.is_some()
    })
    .await?;
    let create = Command::CreateStream {
        name: StreamName::new(name)?,
        shard_count: shards,
        replication_factor: 3,
        retention_ms: 86_400_000,
        now_ms: runnel_server::context::now_ms(),
    };
    propose(&nodes[0], create).await?;
    wait_all(&nodes, "the stream is ACTIVE and settled", |s| {
        settled(s, name, None)
    })
    .await?;
    Ok(nodes)
}

/// Every shard of `stream`: 3 voters, no move, a leader; nothing on `not_on`.
fn settled(s: &MetaState, stream: &str, not_on: Option<u64>) -> bool {
    let Some(info) = s.streams.values().find(|st| st.name.as_str() == stream) else {
        return false;
    };
    info.status == StreamStatus::Active
        && info.shards.iter().all(|id| {
            s.shards.get(id).is_some_and(|sh| {
                sh.replicas.len() == 3
                    && sh
                        .replicas
                        .iter()
                        .all(|r| r.role == ReplicaRole::Voter && Some(r.node.0) != not_on)
                    && sh.pending_move.is_none()
                    && sh.leader.is_some_and(|l| Some(l.node.0) != not_on)
            })
        })
}

#[madsim::test]
async fn a_drained_node_gives_up_every_replica() -> anyhow::Result<()> {
    let nodes = cluster_with_stream(&[4], "drain", 4).await?;
    propose(&nodes[1], Command::DrainNode { node: NodeId(1) }).await?;
    wait_all(
        &nodes,
        "node 1 is Drained and every shard settled off it",
        |s| s.node_is(NodeId(1), &[NodeStatus::Drained]) && settled(s, "drain", Some(1)),
    )
    .await?;
    let start = madsim::time::Instant::now();
    let n1 = ctx(&nodes[0]).expect("node 1 runs");
    while n1.registry.group_ids().iter().any(|g| !g.is_meta()) {
        if start.elapsed() > PATIENCE {
            bail!("node 1 still hosts shard replicas after draining");
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[madsim::test]
async fn a_move_finishes_after_the_meta_leader_is_killed() -> anyhow::Result<()> {
    let mut nodes = cluster_with_stream(&[], "moving", 4).await?;
    nodes.push(start_with(4, Bootstrap::Join(addr(1))));
    let moving_to_4 = |s: &MetaState| -> Vec<ShardId> {
        s.shards
            .values()
            .filter(|sh| sh.pending_move.as_ref().is_some_and(|m| m.add == NodeId(4)))
            .map(|sh| sh.id)
            .collect()
    };
    let start = madsim::time::Instant::now();
    let (leader, in_flight) = loop {
        let leader = nodes[..3]
            .iter()
            .position(|n| ctx(n).is_some_and(|c| c.placement.is_meta_leader()));
        if let Some(i) = leader {
            let moving = ctx(&nodes[i]).map(|c| c.placement.read(moving_to_4));
            if let Some(m) = moving.filter(|m| !m.is_empty()) {
                break (i, m);
            }
        }
        if start.elapsed() > PATIENCE {
            bail!("no move towards node 4 began");
        }
        madsim::time::sleep(Duration::from_millis(10)).await;
    };
    let victim = nodes.remove(leader);
    Handle::current().kill(victim.handle.id());
    let dead = leader as u64 + 1;
    wait_all(
        &nodes,
        "the interrupted moves finished and every shard settled",
        |s| {
            settled(s, "moving", Some(dead))
                && in_flight
                    .iter()
                    .all(|id| s.shards[id].role_of(NodeId(4)) == Some(ReplicaRole::Voter))
        },
    )
    .await?;
    Ok(())
}

#[madsim::test]
async fn a_joining_node_receives_replicas_and_leaderships() -> anyhow::Result<()> {
    let mut nodes = cluster_with_stream(&[], "leaders", 6).await?;
    nodes.push(start_with(4, Bootstrap::Join(addr(2))));
    wait_all(
        &nodes,
        "replicas and leaders are balanced over four nodes",
        |s| {
            let replicas: Vec<usize> = (1..=4).map(|n| s.shards_on(NodeId(n)).count()).collect();
            let leaders: Vec<usize> = (1..=4)
                .map(|n| {
                    s.shards
                        .values()
                        .filter(|sh| sh.leader.is_some_and(|l| l.node == NodeId(n)))
                        .count()
                })
                .collect();
            settled(s, "leaders", None)
                && replicas.iter().all(|r| (4..=5).contains(r))
                && leaders.iter().all(|l| (1..=2).contains(l))
        },
    )
    .await?;
    Ok(())
}
