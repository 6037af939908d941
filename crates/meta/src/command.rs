//! The commands the meta group's Raft log carries, and [`apply`]: the deterministic
//! state machine step. `apply` is pure: the time comes in the command (`now_ms`), maps
//! are ordered, nothing is random, and a command that fails validation changes nothing.
//!
//! The commands are grouped by operation; each group's handlers live in `handlers/`.

use runnel_types::{LogIndex, NodeId, SeqNo, ShardId, StreamName, Term};
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::MetaError;
use crate::handlers;
use crate::names::{GroupName, MemberId};
use crate::state::{Checkpoint, MetaState, NodeLabels, NodeLoad};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    // ---- cluster ----
    /// Fixes the cluster's identity. Proposed by the meta leader after bootstrap (the
    /// values are random, chosen by the proposer); only the first one takes effect,
    /// later ones are accepted and change nothing, so racing proposers are harmless.
    InitCluster {
        cluster_id: String,
        iterator_key: [u8; 16],
        /// The shortest retention a stream may have, if the bootstrapping node was
        /// started with `--min-retention` (1 hour otherwise). Fixed with the identity,
        /// by the first command, so every node enforces the same floor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_ms_min: Option<u64>,
    },

    /// A copy of the whole state as applied up to meta log entry `up_to`, written into
    /// the log by the meta leader so that every node can trim its copy of the log up to
    /// `up_to`. A node whose log starts after its applied state (restarted after a trim,
    /// joined late, or sent the retained log as a Raft snapshot) reads on to the first
    /// such entry, loads the state and replays the entries after `up_to`. Applying it
    /// changes nothing: every node that applied the log up to here has this state.
    SnapshotState {
        up_to: LogIndex,
        state: Box<MetaState>,
    },

    // ---- nodes ----
    /// A node announces itself (first start, or restart with new address or labels).
    RegisterNode {
        node: NodeId,
        address: String,
        labels: NodeLabels,
        capacity_weight: u32,
        now_ms: u64,
    },
    /// A node is alive; it reports its load and the shards it currently leads.
    Heartbeat {
        node: NodeId,
        now_ms: u64,
        load: NodeLoad,
        leaders: Vec<LeaderReport>,
    },
    /// The meta leader saw no heartbeat for too long (see [`crate::nodes_to_mark_down`]).
    MarkDown {
        node: NodeId,
        now_ms: u64,
    },
    /// An operator asks to move every replica off the node.
    DrainNode {
        node: NodeId,
    },
    /// An operator takes the node out for good (drained, down, or never given replicas).
    RemoveNode {
        node: NodeId,
    },

    // ---- streams and shards ----
    CreateStream {
        name: StreamName,
        shard_count: u32,
        replication_factor: u32,
        retention_ms: u64,
        now_ms: u64,
    },
    DeleteStream {
        name: StreamName,
    },
    UpdateRetention {
        name: StreamName,
        retention_ms: u64,
    },
    MarkStreamActive {
        name: StreamName,
    },
    /// A node deleted its replica of a shard of a deleting stream.
    ShardReclaimed {
        shard: ShardId,
        node: NodeId,
    },
    /// A shard leader reports progress of the shard's pending move.
    ReportMove {
        shard: ShardId,
        node: NodeId,
        step: MoveStep,
        now_ms: u64,
    },
    /// The planner's actions, proposed by the meta leader. Each is validated and applied
    /// on its own; the result lists the ones rejected (planned from a stale state).
    ApplyPlacement {
        now_ms: u64,
        actions: Vec<Action>,
    },

    // ---- consumer groups ----
    JoinGroup {
        group: GroupName,
        stream: StreamName,
        member: MemberId,
        session_timeout_ms: u64,
        now_ms: u64,
    },
    GroupHeartbeat {
        group: GroupName,
        stream: StreamName,
        member: MemberId,
        now_ms: u64,
    },
    LeaveGroup {
        group: GroupName,
        stream: StreamName,
        member: MemberId,
        now_ms: u64,
    },
    Checkpoint {
        group: GroupName,
        stream: StreamName,
        member: MemberId,
        shard: ShardId,
        lease_counter: u64,
        position: Checkpoint,
        now_ms: u64,
    },
}

/// "I lead `shard` in `term`": part of a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderReport {
    pub shard: ShardId,
    pub term: Term,
}

/// What a shard leader reports about a move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStep {
    /// The learner `node` has caught up with the log.
    CaughtUp,
    /// The membership now has `node` as a voter.
    Promoted,
    /// The membership no longer has `node`.
    Removed,
}

/// What a successful command returns to its proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    StreamCreated {
        shards: Vec<ShardId>,
    },
    Placement {
        applied: u32,
        rejected: Vec<RejectedAction>,
    },
    /// The member's leases after a join or heartbeat.
    Leases {
        leases: Vec<LeaseGrant>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedAction {
    /// Position of the action in the command.
    pub index: u32,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub shard: ShardId,
    pub counter: u64,
    pub expiry_ms: u64,
    /// Where to resume: the group's checkpoint for the shard, if any.
    pub checkpoint: Option<SeqNo>,
}

/// Applies one committed command. Deterministic: the same state and command give the
/// same new state and result on every replica. On `Err` the state is unchanged.
pub fn apply(state: &mut MetaState, cmd: Command) -> Result<CommandResult, MetaError> {
    match cmd {
        Command::InitCluster {
            cluster_id,
            iterator_key,
            retention_ms_min,
        } => handlers::nodes::init_cluster(state, cluster_id, iterator_key, retention_ms_min),
        Command::SnapshotState { .. } => Ok(CommandResult::Done),
        Command::RegisterNode {
            node,
            address,
            labels,
            capacity_weight,
            now_ms,
        } => handlers::nodes::register(state, node, address, labels, capacity_weight, now_ms),
        Command::Heartbeat {
            node,
            now_ms,
            load,
            leaders,
        } => handlers::nodes::heartbeat(state, node, now_ms, load, leaders),
        Command::MarkDown { node, now_ms } => handlers::nodes::mark_down(state, node, now_ms),
        Command::DrainNode { node } => handlers::nodes::drain(state, node),
        Command::RemoveNode { node } => handlers::nodes::remove(state, node),
        Command::CreateStream {
            name,
            shard_count,
            replication_factor,
            retention_ms,
            now_ms,
        } => handlers::streams::create(
            state,
            name,
            shard_count,
            replication_factor,
            retention_ms,
            now_ms,
        ),
        Command::DeleteStream { name } => handlers::streams::delete(state, &name),
        Command::UpdateRetention { name, retention_ms } => {
            handlers::streams::update_retention(state, &name, retention_ms)
        }
        Command::MarkStreamActive { name } => handlers::streams::mark_active(state, &name),
        Command::ShardReclaimed { shard, node } => {
            handlers::streams::shard_reclaimed(state, shard, node)
        }
        Command::ReportMove {
            shard,
            node,
            step,
            now_ms,
        } => handlers::moves::report(state, shard, node, step, now_ms),
        Command::ApplyPlacement { now_ms, actions } => {
            handlers::placement::apply_all(state, now_ms, actions)
        }
        Command::JoinGroup {
            group,
            stream,
            member,
            session_timeout_ms,
            now_ms,
        } => handlers::groups::join(state, group, stream, member, session_timeout_ms, now_ms),
        Command::GroupHeartbeat {
            group,
            stream,
            member,
            now_ms,
        } => handlers::groups::heartbeat(state, &group, &stream, &member, now_ms),
        Command::LeaveGroup {
            group,
            stream,
            member,
            now_ms,
        } => handlers::groups::leave(state, &group, &stream, &member, now_ms),
        Command::Checkpoint {
            group,
            stream,
            member,
            shard,
            lease_counter,
            position,
            now_ms,
        } => {
            let at = handlers::groups::CheckpointAt {
                shard,
                lease_counter,
                position,
                now_ms,
            };
            handlers::groups::checkpoint(state, &group, &stream, &member, at)
        }
    }
}
