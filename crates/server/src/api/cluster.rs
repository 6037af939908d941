//! The `Cluster` service: status and nodes from the applied meta state (any node
//! answers), drain and remove through the placement service.

use std::collections::BTreeSet;
use std::sync::Arc;

use runnel_meta::{Command, MetaState, MovePhase, NodeStatus, ReplicaRole};
use runnel_proto::v1::cluster_server::Cluster;
use runnel_proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, DrainNodeRequest, DrainNodeResponse, LeaderHint,
    ListNodesRequest, ListNodesResponse, MoveInfo, NodeInfo, RemoveNodeRequest, RemoveNodeResponse,
};
use runnel_types::{GroupId, NodeId};
use tonic::{Request, Response, Status};

use super::{observe, validate};
use crate::context::NodeContext;
use crate::error::ServerError;

pub struct ClusterService {
    ctx: Arc<NodeContext>,
}

impl ClusterService {
    pub fn new(ctx: Arc<NodeContext>) -> ClusterService {
        ClusterService { ctx }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn cluster_status(
        &self,
        _req: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let handler = async {
            let voters = meta_voters(&self.ctx);
            let mut status = self.ctx.placement.read(|st| status(st, &voters));
            status.cluster_id = self.ctx.placement.cluster_id();
            status.meta_leader = self
                .ctx
                .placement
                .meta_leader()
                .map(|(id, address)| LeaderHint {
                    node_id: id.0,
                    address,
                });
            Ok(status)
        };
        observe(&self.ctx, "ClusterStatus", 0, handler).await
    }

    async fn list_nodes(
        &self,
        _req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let handler = async {
            let voters = meta_voters(&self.ctx);
            let nodes = self.ctx.placement.read(|st| nodes(st, &voters));
            Ok(ListNodesResponse { nodes })
        };
        observe(&self.ctx, "ListNodes", 0, handler).await
    }

    async fn drain_node(
        &self,
        req: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        let handler = async {
            let node = validate::node_id(req.get_ref().node_id)?;
            known_node(&self.ctx, node)?;
            self.ctx
                .placement
                .propose(Command::DrainNode { node })
                .await?;
            let voters = meta_voters(&self.ctx);
            let info = self
                .ctx
                .placement
                .read(|st| nodes(st, &voters).into_iter().find(|n| n.node_id == node.0));
            Ok(DrainNodeResponse { node: info })
        };
        observe(&self.ctx, "DrainNode", 0, handler).await
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let handler = async {
            let node = validate::node_id(req.get_ref().node_id)?;
            known_node(&self.ctx, node)?;
            self.ctx
                .placement
                .propose(Command::RemoveNode { node })
                .await?;
            Ok(RemoveNodeResponse {})
        };
        observe(&self.ctx, "RemoveNode", 0, handler).await
    }
}

fn known_node(ctx: &NodeContext, node: NodeId) -> Result<(), ServerError> {
    if ctx.placement.read(|st| st.nodes.contains_key(&node)) {
        Ok(())
    } else {
        Err(ServerError::NotFound {
            kind: "node",
            name: node.to_string(),
        })
    }
}

/// The voters of the meta group as this node's replica of it knows them.
pub(crate) fn meta_voters(ctx: &NodeContext) -> BTreeSet<NodeId> {
    match ctx.registry.group(GroupId::META) {
        Ok(g) => g
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .map(NodeId)
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn node_status(s: NodeStatus) -> runnel_proto::v1::NodeStatus {
    use runnel_proto::v1::NodeStatus as P;
    match s {
        NodeStatus::Joining => P::Joining,
        NodeStatus::Up => P::Up,
        NodeStatus::Draining => P::Draining,
        NodeStatus::Drained => P::Drained,
        NodeStatus::Down => P::Down,
        NodeStatus::Removed => P::Removed,
    }
}

/// Every node with its replica and leader counts (pure).
pub fn nodes(st: &MetaState, meta_voters: &BTreeSet<NodeId>) -> Vec<NodeInfo> {
    st.nodes
        .values()
        .map(|n| {
            let replicas = st
                .placed_shards()
                .filter(|(s, _)| s.has_replica(n.id))
                .count();
            let leaders = st
                .placed_shards()
                .filter(|(s, _)| s.leader.is_some_and(|l| l.node == n.id))
                .count();
            let mut labels = n.labels.other.clone();
            if let Some(zone) = &n.labels.zone {
                labels.insert("zone".into(), zone.clone());
            }
            NodeInfo {
                node_id: n.id.0,
                address: n.address.clone(),
                status: node_status(n.status) as i32,
                labels: labels.into_iter().collect(),
                replicas: replicas as u32,
                leaders: leaders as u32,
                last_heartbeat_ms: n.last_heartbeat_ms,
                meta_voter: meta_voters.contains(&n.id),
            }
        })
        .collect()
}

/// The cluster's health from the meta state (pure; the caller fills in the cluster id
/// and the meta leader). A shard is under-replicated when fewer of its voters are up
/// than its stream's replication factor, leaderless when no up node is its reported
/// leader.
pub fn status(st: &MetaState, meta_voters: &BTreeSet<NodeId>) -> ClusterStatusResponse {
    let up = |n: NodeId| st.node_is(n, &[NodeStatus::Up, NodeStatus::Draining]);
    let mut under_replicated = 0;
    let mut leaderless = 0;
    let mut moves = Vec::new();
    for (shard, stream) in st.placed_shards() {
        let live_voters = shard
            .replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Voter && up(r.node))
            .count();
        if live_voters < stream.replication_factor as usize {
            under_replicated += 1;
        }
        if !shard.leader.is_some_and(|l| up(l.node)) {
            leaderless += 1;
        }
        if let Some(m) = &shard.pending_move {
            moves.push(MoveInfo {
                shard_id: shard.id.kinesis_name(),
                add_node_id: m.add.0,
                remove_node_id: m.remove.map(|n| n.0),
                phase: match m.phase {
                    MovePhase::AddingLearner => "adding_learner",
                    MovePhase::Promoting => "promoting",
                    MovePhase::Removing => "removing",
                }
                .into(),
                started_ms: m.started_ms,
            });
        }
    }
    ClusterStatusResponse {
        cluster_id: String::new(),
        meta_leader: None,
        nodes: nodes(st, meta_voters),
        streams: st.streams.len() as u32,
        shards: st.placed_shards().count() as u32,
        under_replicated_shards: under_replicated,
        leaderless_shards: leaderless,
        moves_in_progress: moves,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use runnel_meta::{NodeLabels, Replica, ReportedLeader, apply};
    use runnel_types::{StreamName, Term};

    #[test]
    fn status_counts_health() {
        let mut st = MetaState::default();
        for n in 1..=3u64 {
            let node = NodeId(n);
            let labels = NodeLabels {
                zone: Some(format!("z{n}")),
                ..Default::default()
            };
            let reg = Command::RegisterNode {
                node,
                address: format!("n{n}:7100"),
                labels,
                capacity_weight: 100,
                now_ms: 1,
            };
            apply(&mut st, reg).unwrap();
            apply(
                &mut st,
                Command::Heartbeat {
                    node,
                    now_ms: 2,
                    load: Default::default(),
                    leaders: vec![],
                },
            )
            .unwrap();
        }
        let name = StreamName::new("s").unwrap();
        let create = Command::CreateStream {
            name: name.clone(),
            shard_count: 2,
            replication_factor: 3,
            retention_ms: 24 * 3_600_000,
            now_ms: 3,
        };
        apply(&mut st, create).unwrap();
        let ids = st.streams[&name].shards.clone();
        let voters: Vec<Replica> = (1..=3)
            .map(|n| Replica {
                node: NodeId(n),
                role: ReplicaRole::Voter,
            })
            .collect();
        for id in &ids {
            st.shards.get_mut(id).unwrap().replicas = voters.clone();
        }
        st.shards.get_mut(&ids[0]).unwrap().leader = Some(ReportedLeader {
            node: NodeId(2),
            term: Term(1),
        });
        st.nodes.get_mut(&NodeId(3)).unwrap().status = NodeStatus::Down;
        let s = status(&st, &BTreeSet::from([NodeId(1)]));
        assert_eq!((s.streams, s.shards), (1, 2));
        assert_eq!(s.under_replicated_shards, 2, "node 3 is down");
        assert_eq!(s.leaderless_shards, 1);
        let n2 = s.nodes.iter().find(|n| n.node_id == 2).unwrap();
        assert_eq!((n2.replicas, n2.leaders, n2.meta_voter), (2, 1, false));
        assert_eq!(n2.labels.get("zone").map(String::as_str), Some("z2"));
        assert!(s.nodes.iter().find(|n| n.node_id == 1).unwrap().meta_voter);
    }
}
