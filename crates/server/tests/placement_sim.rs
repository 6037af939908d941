//! The basic placement scenario under madsim: three nodes bootstrap a cluster, register,
//! and a stream of four shards is placed and goes ACTIVE. Each node runs on its own
//! simulated IP with a `SimDisk` and a `MemStore` owned by the test. Replay a failure
//! with the seed madsim prints:
//! `MADSIM_TEST_SEED=<seed> RUSTFLAGS="--cfg madsim" cargo test -p runnel-server --test placement_sim`.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use madsim::runtime::{Handle, NodeHandle as SimHandle};
use runnel_log::SimDisk;
use runnel_meta::{Command, MetaState, NodeStatus, PlannerConfig, StreamStatus};
use runnel_nodemeta::MemStore;
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::context::NodeContext;
use runnel_server::node::{Node, NodeOptions};
use runnel_server::placement::PlacementConfig;
use runnel_types::{NodeId, StreamName};

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
    let (disk, meta, slot) = (SimDisk::new(), MemStore::new(), Slot::default());
    let (d, m, s, voters) = (disk.clone(), meta.clone(), slot.clone(), voters.clone());
    let handle = Handle::current()
        .create_node()
        .name(format!("node-{id}"))
        .ip(format!("10.0.0.{id}").parse().expect("a valid ip"))
        .init(move || {
            let (d, m, s, voters) = (d.clone(), m.clone(), s.clone(), voters.clone());
            async move {
                let config = Config {
                    node_id: NodeId(id),
                    listen: addr(id).parse().expect("a valid address"),
                    advertise: addr(id),
                    admin_listen: "127.0.0.1:0".parse().expect("a valid address"),
                    data_dir: format!("/node-{id}").into(),
                    bootstrap: Bootstrap::Initial(voters),
                    labels: BTreeMap::new(),
                    log_format: LogFormat::Text,
                    default_replication: 3,
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
