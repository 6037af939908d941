//! The cluster scenarios under madsim: each node on its own simulated IP, its
//! `SimDisk` and `MemStore` owned by the test so that they outlive a kill, and crashed
//! on kill so that unsynced writes are lost. Replay a failure with the seed madsim
//! prints: `MADSIM_TEST_SEED=<seed> RUSTFLAGS="--cfg madsim" cargo test ...`.
#![cfg(madsim)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cluster;
use madsim::runtime::{Handle, NodeHandle};
use runnel_log::SimDisk;
use runnel_nodemeta::{MemStore, NodeMeta};
use runnel_raft::{RaftTimings, Registry, RegistryConfig};
use runnel_types::{GroupId, NodeId};

type Slot = Arc<Mutex<Option<Arc<Registry>>>>;

struct SimNode {
    handle: NodeHandle,
    disk: SimDisk,
    meta: MemStore,
    slot: Slot,
}

#[derive(Default)]
struct SimCluster {
    nodes: BTreeMap<NodeId, SimNode>,
}

fn ip(node: NodeId) -> String {
    format!("10.0.0.{}", node.0)
}

impl SimCluster {
    fn build(&mut self, node: NodeId) {
        let (disk, meta, slot) = (SimDisk::new(), MemStore::new(), Slot::default());
        let addr = format!("{}:7000", ip(node));
        let (d, m, s) = (disk.clone(), meta.clone(), slot.clone());
        let handle = Handle::current()
            .create_node()
            .name(format!("node-{node}"))
            .ip(ip(node).parse().expect("ip"))
            .init(move || {
                let (d, m, s, addr) = (d.clone(), m.clone(), s.clone(), addr.clone());
                async move {
                    let mut cfg = RegistryConfig::new(node, addr.clone(), format!("/node-{node}"));
                    cfg.timings = RaftTimings {
                        heartbeat_interval_ms: 50,
                        election_timeout_ms_min: 300,
                        election_timeout_ms_max: 600,
                    };
                    let meta = Arc::new(NodeMeta::new(Arc::new(m)));
                    let registry =
                        Arc::new(Registry::new(cfg, d.handle(), meta).expect("registry"));
                    registry.open_existing().await.expect("open groups");
                    let svc = registry.service().into_server();
                    *s.lock().expect("slot") = Some(registry);
                    let sock: std::net::SocketAddr = addr.parse().expect("addr");
                    tonic::transport::Server::builder()
                        .add_service(svc)
                        .serve(sock)
                        .await
                        .expect("server");
                }
            })
            .build();
        self.nodes.insert(
            node,
            SimNode {
                handle,
                disk,
                meta,
                slot,
            },
        );
    }
}

impl Cluster for SimCluster {
    fn addr(&self, node: NodeId) -> String {
        format!("{}:7000", ip(node))
    }

    async fn start(&mut self, node: NodeId) -> anyhow::Result<()> {
        match self.nodes.get(&node) {
            None => self.build(node),
            Some(n) => Handle::current().restart(n.handle.id()),
        }
        let slot = self.nodes[&node].slot.clone();
        common::with_patience(self, "the node to start", async || {
            slot.lock().ok()?.clone().map(|_| ())
        })
        .await?;
        madsim::time::sleep(Duration::from_millis(50)).await;
        Ok(())
    }

    async fn kill(&mut self, node: NodeId) -> anyhow::Result<()> {
        if let Some(n) = self.nodes.get(&node) {
            Handle::current().kill(n.handle.id());
            *n.slot.lock().expect("slot") = None;
            n.disk.crash();
            n.meta.crash();
        }
        Ok(())
    }

    fn registry(&self, node: NodeId) -> Option<Arc<Registry>> {
        self.nodes.get(&node)?.slot.lock().ok()?.clone()
    }

    async fn create_group(&self, node: NodeId, group: GroupId) -> anyhow::Result<()> {
        let n = self
            .nodes
            .get(&node)
            .ok_or_else(|| anyhow::anyhow!("no node {node}"))?;
        let reg = self
            .registry(node)
            .ok_or_else(|| anyhow::anyhow!("node {node} is down"))?;
        // Run on the node, so that the group's tasks belong to it (and die with it).
        n.handle
            .spawn(async move { reg.create_group(group).await.map(|_| ()) })
            .await??;
        Ok(())
    }

    async fn sleep(&self, d: Duration) {
        madsim::time::sleep(d).await;
    }
}

fn groups(n: u64) -> Vec<GroupId> {
    (1..=n).map(GroupId).collect()
}

#[madsim::test]
async fn sim_one_group_replicates_fails_over_and_restarts() {
    common::replicate_failover_restart(&mut SimCluster::default(), &groups(1), 10)
        .await
        .expect("scenario");
}

#[madsim::test]
async fn sim_sixty_four_groups_replicate_fail_over_and_restart() {
    common::replicate_failover_restart(&mut SimCluster::default(), &groups(64), 2)
        .await
        .expect("scenario");
}

#[madsim::test]
async fn sim_follower_behind_trim_point_catches_up_by_snapshot() {
    common::follower_behind_trim_point(&mut SimCluster::default(), &groups(1), 10)
        .await
        .expect("scenario");
}

#[madsim::test]
async fn sim_follower_catches_up_by_a_snapshot_of_several_chunks() {
    common::follower_catches_up_by_large_snapshot(&mut SimCluster::default(), GroupId(1))
        .await
        .expect("large snapshot");
}

#[madsim::test]
async fn sim_learner_cancelled_wiped_and_added_again_catches_up() {
    common::learner_cancelled_wiped_and_added_again(&mut SimCluster::default(), GroupId(1))
        .await
        .expect("learner re-added");
}

#[madsim::test]
async fn sim_membership_add_learner_promote_remove_voter() {
    common::membership_change(&mut SimCluster::default(), &groups(1))
        .await
        .expect("scenario");
}

#[madsim::test]
async fn sim_leadership_transfers_to_a_chosen_follower() {
    common::transfer_leadership(&mut SimCluster::default(), &groups(1))
        .await
        .expect("scenario");
}

#[madsim::test]
async fn sim_idle_groups_quiesce_and_still_fail_over() {
    common::idle_groups_quiesce_and_fail_over(&mut SimCluster::default(), &groups(2))
        .await
        .expect("scenario");
}
