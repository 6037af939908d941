//! Node lifecycle: register, heartbeat (with leader reports), mark down, drain, remove.

use runnel_types::{NodeId, ShardId};

use crate::command::{CommandResult, LeaderReport};
use crate::error::MetaError;
use crate::limits::{
    CAPACITY_WEIGHT_MAX, CAPACITY_WEIGHT_MIN, CLUSTER_ID_BYTES_MAX, HEARTBEAT_LEADERS_MAX,
    NODE_ADDRESS_BYTES_MAX, NODE_LABEL_BYTES_MAX, NODE_LABELS_MAX, NODE_TOMBSTONES_MAX, NODES_MAX,
    RETENTION_MS_MIN_DEFAULT, RETENTION_MS_MIN_FLOOR,
};
use crate::state::{
    ClusterIdentity, MetaState, NodeInfo, NodeLabels, NodeLoad, NodeStatus, ReplicaRole,
    ReportedLeader,
};

/// Sets the cluster identity the first time; later calls change nothing.
pub(crate) fn init_cluster(
    state: &mut MetaState,
    cluster_id: String,
    iterator_key: [u8; 16],
    retention_ms_min: Option<u64>,
) -> Result<CommandResult, MetaError> {
    if cluster_id.is_empty() || cluster_id.len() > CLUSTER_ID_BYTES_MAX {
        return Err(MetaError::invalid(
            "cluster_id",
            format!("{cluster_id:?}"),
            format!("1 to {CLUSTER_ID_BYTES_MAX} bytes"),
        ));
    }
    if let Some(min) = retention_ms_min
        && !(RETENTION_MS_MIN_FLOOR..=RETENTION_MS_MIN_DEFAULT).contains(&min)
    {
        return Err(MetaError::invalid(
            "retention_ms_min",
            min.to_string(),
            format!("{RETENTION_MS_MIN_FLOOR} to {RETENTION_MS_MIN_DEFAULT} ms"),
        ));
    }
    if state.identity.is_none() {
        if let Some(min) = retention_ms_min {
            state.settings.retention_ms_min = min;
        }
        state.identity = Some(ClusterIdentity {
            cluster_id,
            iterator_key,
        });
    }
    Ok(CommandResult::Done)
}

pub(crate) fn register(
    state: &mut MetaState,
    node: NodeId,
    address: String,
    labels: NodeLabels,
    capacity_weight: u32,
    now_ms: u64,
) -> Result<CommandResult, MetaError> {
    if node.0 == 0 {
        return Err(MetaError::invalid(
            "node id",
            node,
            "node ids start at 1 (0 is reserved)",
        ));
    }
    validate_address(&address)?;
    validate_labels(&labels)?;
    if !(CAPACITY_WEIGHT_MIN..=CAPACITY_WEIGHT_MAX).contains(&capacity_weight) {
        return Err(MetaError::invalid(
            "capacity_weight",
            capacity_weight,
            format!("must be between {CAPACITY_WEIGHT_MIN} and {CAPACITY_WEIGHT_MAX}"),
        ));
    }
    if let Some(existing) = state.nodes.get_mut(&node) {
        if existing.status == NodeStatus::Removed {
            return Err(MetaError::NodeRemoved { node });
        }
        // A restart: the node may come back with a new address, labels or weight.
        existing.address = address;
        existing.labels = labels;
        existing.capacity_weight = capacity_weight;
        return Ok(CommandResult::Done);
    }
    let live = state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Removed)
        .count();
    if live >= NODES_MAX {
        return Err(MetaError::precondition(
            format!("registering node {node}"),
            format!(
                "the cluster already has {live} nodes, the limit ({NODES_MAX}); remove a node first"
            ),
        ));
    }
    let info = NodeInfo {
        id: node,
        address,
        labels,
        capacity_weight,
        status: NodeStatus::Joining,
        drain_requested: false,
        registered_ms: now_ms,
        last_heartbeat_ms: now_ms,
        down_since_ms: None,
        load: NodeLoad::default(),
    };
    state.nodes.insert(node, info);
    Ok(CommandResult::Done)
}

fn validate_address(address: &str) -> Result<(), MetaError> {
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if address.len() > NODE_ADDRESS_BYTES_MAX
        || !port_ok
        || address.chars().any(char::is_whitespace)
    {
        return Err(MetaError::invalid(
            "address",
            format!("{address:?}"),
            format!("must be host:port, at most {NODE_ADDRESS_BYTES_MAX} bytes, without spaces"),
        ));
    }
    Ok(())
}

fn validate_labels(labels: &NodeLabels) -> Result<(), MetaError> {
    let count = labels.other.len() + usize::from(labels.zone.is_some());
    if count > NODE_LABELS_MAX {
        return Err(MetaError::invalid(
            "labels",
            format!("{count} labels"),
            format!("at most {NODE_LABELS_MAX}"),
        ));
    }
    let texts = labels
        .zone
        .iter()
        .chain(labels.other.keys())
        .chain(labels.other.values());
    for text in texts {
        if text.is_empty()
            || text.len() > NODE_LABEL_BYTES_MAX
            || text.chars().any(char::is_control)
        {
            return Err(MetaError::invalid(
                "label",
                format!("{text:?}"),
                format!(
                    "labels and zone names must be 1 to {NODE_LABEL_BYTES_MAX} bytes without control characters"
                ),
            ));
        }
    }
    Ok(())
}

/// Looks a node up for a command that a removed node may not send.
fn live_node(state: &MetaState, node: NodeId) -> Result<&NodeInfo, MetaError> {
    let info = state
        .nodes
        .get(&node)
        .ok_or_else(|| MetaError::not_found("node", node))?;
    if info.status == NodeStatus::Removed {
        return Err(MetaError::NodeRemoved { node });
    }
    Ok(info)
}

pub(crate) fn heartbeat(
    state: &mut MetaState,
    node: NodeId,
    now_ms: u64,
    load: NodeLoad,
    leaders: Vec<LeaderReport>,
) -> Result<CommandResult, MetaError> {
    live_node(state, node)?;
    if leaders.len() > HEARTBEAT_LEADERS_MAX {
        return Err(MetaError::invalid(
            "leaders",
            format!("{} reports", leaders.len()),
            format!("at most {HEARTBEAT_LEADERS_MAX}"),
        ));
    }
    let info = state
        .nodes
        .get_mut(&node)
        .expect("checked by live_node above");
    info.last_heartbeat_ms = info.last_heartbeat_ms.max(now_ms);
    info.load = load;
    info.status = match info.status {
        NodeStatus::Joining => NodeStatus::Up,
        NodeStatus::Down if info.drain_requested => NodeStatus::Draining,
        NodeStatus::Down => NodeStatus::Up,
        other => other,
    };
    if info.status != NodeStatus::Down {
        info.down_since_ms = None;
    }
    for report in leaders {
        record_leader(state, node, report.shard, report);
    }
    Ok(CommandResult::Done)
}

/// Records a leadership claim if it is news: a voter of the shard, in a term at least as
/// new as the one known. Claims about unknown shards or from non-voters are ignored (a
/// heartbeat races with deletions and moves; the next one will be right).
fn record_leader(state: &mut MetaState, node: NodeId, shard: ShardId, report: LeaderReport) {
    let Some(info) = state.shards.get_mut(&shard) else {
        return;
    };
    if info.role_of(node) != Some(ReplicaRole::Voter) {
        return;
    }
    let newer = match info.leader {
        None => true,
        Some(known) => {
            report.term > known.term || (report.term == known.term && known.node == node)
        }
    };
    if newer {
        info.leader = Some(ReportedLeader {
            node,
            term: report.term,
        });
    }
}

pub(crate) fn mark_down(
    state: &mut MetaState,
    node: NodeId,
    now_ms: u64,
) -> Result<CommandResult, MetaError> {
    live_node(state, node)?;
    let info = state
        .nodes
        .get_mut(&node)
        .expect("checked by live_node above");
    if info.status != NodeStatus::Down {
        info.status = NodeStatus::Down;
        info.down_since_ms = Some(now_ms);
    }
    Ok(CommandResult::Done)
}

pub(crate) fn drain(state: &mut MetaState, node: NodeId) -> Result<CommandResult, MetaError> {
    live_node(state, node)?;
    let info = state
        .nodes
        .get_mut(&node)
        .expect("checked by live_node above");
    info.drain_requested = true;
    if matches!(info.status, NodeStatus::Joining | NodeStatus::Up) {
        info.status = NodeStatus::Draining;
    }
    Ok(CommandResult::Done)
}

pub(crate) fn remove(state: &mut MetaState, node: NodeId) -> Result<CommandResult, MetaError> {
    let info = state
        .nodes
        .get(&node)
        .ok_or_else(|| MetaError::not_found("node", node))?;
    if info.status == NodeStatus::Removed {
        return Ok(CommandResult::Done);
    }
    let hosted = state.shards_on(node).count();
    if hosted > 0 && !matches!(info.status, NodeStatus::Down | NodeStatus::Drained) {
        return Err(MetaError::precondition(
            format!("removing node {node}"),
            format!(
                "it is {:?} and holds {hosted} shard replicas; drain it first (DrainNode) and remove it once it is \
                 Drained, or remove it once it is Down",
                info.status
            ),
        ));
    }
    let tombstones = state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Removed)
        .count();
    if tombstones >= NODE_TOMBSTONES_MAX {
        return Err(MetaError::precondition(
            format!("removing node {node}"),
            format!(
                "{tombstones} removed nodes are remembered already, the limit ({NODE_TOMBSTONES_MAX})"
            ),
        ));
    }
    let info = state.nodes.get_mut(&node).expect("looked up above");
    info.status = NodeStatus::Removed;
    info.down_since_ms = None;
    // Nobody will reclaim this node's replicas of deleting streams: forget them now.
    crate::handlers::streams::forget_deleting_replicas(state, node);
    Ok(CommandResult::Done)
}
