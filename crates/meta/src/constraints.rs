//! Hard constraints of placement: which node may hold a replica of which shard, which
//! replicas must be replaced, and the failure domain (zone) of a node.

use std::collections::BTreeSet;

use runnel_types::NodeId;

use crate::planner::PlannerConfig;
use crate::state::{MetaState, NodeInfo, NodeStatus, ShardInfo, majority};

/// A node's failure domain: its zone label, or the node itself when it has none.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZoneKey {
    Zone(String),
    Node(NodeId),
}

pub fn zone_key(node: &NodeInfo) -> ZoneKey {
    match &node.labels.zone {
        Some(z) => ZoneKey::Zone(z.clone()),
        None => ZoneKey::Node(node.id),
    }
}

/// The zone of a node by id (an unknown node is its own zone).
pub fn zone_of(state: &MetaState, node: NodeId) -> ZoneKey {
    state.nodes.get(&node).map_or(ZoneKey::Node(node), zone_key)
}

/// Nodes that may receive new replicas: `Up` ones.
pub fn is_target(state: &MetaState, node: NodeId) -> bool {
    state.node_is(node, &[NodeStatus::Up])
}

/// Nodes whose replicas count as live voters: they run and are not being replaced yet.
pub fn is_live(state: &MetaState, node: NodeId) -> bool {
    state.node_is(node, &[NodeStatus::Up, NodeStatus::Draining])
}

/// May `node` receive a replica of `shard`? It must be `Up` and not hold one already.
pub fn can_host(state: &MetaState, shard: &ShardInfo, node: NodeId) -> bool {
    is_target(state, node) && !shard.has_replica(node)
}

/// Distinct zones of the shard's final replicas, leaving out `without`.
pub fn zones_of(
    state: &MetaState,
    shard: &ShardInfo,
    without: Option<NodeId>,
) -> BTreeSet<ZoneKey> {
    shard
        .final_replicas()
        .filter(|n| Some(*n) != without)
        .map(|n| zone_of(state, n))
        .collect()
}

/// Must the replica on `node` be replaced? When the node is removed or unknown, when it
/// has been down for `down_grace_ms`, or when it is down and was being drained anyway.
pub fn needs_replacement(
    state: &MetaState,
    node: NodeId,
    now_ms: u64,
    config: &PlannerConfig,
) -> bool {
    let Some(info) = state.nodes.get(&node) else {
        return true;
    };
    match info.status {
        NodeStatus::Removed => true,
        NodeStatus::Down => {
            info.drain_requested
                || info
                    .down_since_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= config.down_grace_ms)
        }
        _ => false,
    }
}

/// Does the shard have a live majority of its voters (so that a learner can catch up and
/// a membership change can commit)?
pub fn has_live_majority(state: &MetaState, shard: &ShardInfo) -> bool {
    let voters: Vec<NodeId> = shard.voters().collect();
    let live = voters.iter().filter(|v| is_live(state, **v)).count();
    !voters.is_empty() && live >= majority(voters.len())
}

/// Are all of the shard's replicas on live nodes (no failure being waited out)?
pub fn all_live(state: &MetaState, shard: &ShardInfo) -> bool {
    shard.replicas.iter().all(|r| is_live(state, r.node))
}
