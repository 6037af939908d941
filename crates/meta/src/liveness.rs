//! Node liveness, a pure function of the state and the time the caller passes in.

use runnel_types::NodeId;

use crate::state::{MetaState, NodeStatus};

/// Nodes that should be marked down: `Joining`, `Up` or `Draining`, and silent for
/// longer than `heartbeat_timeout_ms` at `now_ms`. A node's silence is measured from its
/// last heartbeat (or its registration). The caller (the meta leader) should not act on
/// this until it has led for a full timeout: heartbeats sent to a previous leader were
/// not applied.
pub fn nodes_to_mark_down(
    state: &MetaState,
    now_ms: u64,
    heartbeat_timeout_ms: u64,
) -> Vec<NodeId> {
    state
        .nodes
        .values()
        .filter(|n| {
            matches!(
                n.status,
                NodeStatus::Joining | NodeStatus::Up | NodeStatus::Draining
            )
        })
        .filter(|n| now_ms.saturating_sub(n.last_heartbeat_ms) > heartbeat_timeout_ms)
        .map(|n| n.id)
        .collect()
}
