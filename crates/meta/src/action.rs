//! Actions: the planner's decisions, as data. The meta leader proposes them in one
//! [`crate::Command::ApplyPlacement`]; applying one changes the desired state (replica
//! sets, preferred leaders, node and stream status), and the nodes make reality match:
//! shard managers create and delete local replicas, shard leaders change membership and
//! hand over leadership, then report back (heartbeats, `ReportMove`).
//!
//! Every action names the state it was planned from (for example `TransferLeader::from`)
//! and is validated again when applied, so an action planned from a stale state is
//! rejected instead of doing harm.

use runnel_types::{NodeId, ShardId, StreamName};
use serde::{Deserialize, Serialize};

use crate::state::MoveReason;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// The node missed heartbeats for longer than the timeout.
    MarkNodeDown { node: NodeId },
    /// A new shard's first replica set: its Raft group starts with these voters.
    InitialPlacement {
        shard: ShardId,
        voters: Vec<NodeId>,
        leader: NodeId,
    },
    /// Start a move: `node` joins as a learner; `replaces` leaves once it votes.
    AddLearner {
        shard: ShardId,
        node: NodeId,
        replaces: Option<NodeId>,
        reason: MoveReason,
    },
    /// The leader reported the learner caught up: make it a voter.
    PromoteReplica { shard: ShardId, node: NodeId },
    /// The replacement votes: take the replaced replica out.
    RemoveReplica { shard: ShardId, node: NodeId },
    /// Abandon a move whose learner went down before it could vote.
    CancelMove { shard: ShardId, node: NodeId },
    /// Change the shard's preferred leader (`from` is the current preference).
    TransferLeader {
        shard: ShardId,
        from: Option<NodeId>,
        to: NodeId,
    },
    /// A draining node holds no replica any more.
    CompleteDrain { node: NodeId },
    /// Every shard of a creating stream has a leader.
    ActivateStream { stream: StreamName },
}

impl Action {
    /// The shard the action is about, if any.
    pub fn shard(&self) -> Option<ShardId> {
        match self {
            Action::InitialPlacement { shard, .. }
            | Action::AddLearner { shard, .. }
            | Action::PromoteReplica { shard, .. }
            | Action::RemoveReplica { shard, .. }
            | Action::CancelMove { shard, .. }
            | Action::TransferLeader { shard, .. } => Some(*shard),
            Action::MarkNodeDown { .. }
            | Action::CompleteDrain { .. }
            | Action::ActivateStream { .. } => None,
        }
    }
}
