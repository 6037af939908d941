//! Shard leaders' reports on a pending move. Each report moves the move one phase on;
//! a repeated report is accepted and changes nothing (leaders retry after a meta leader
//! change); a report that does not fit the move is a `StaleReport`.

use runnel_types::{NodeId, ShardId};

use crate::command::{CommandResult, MoveStep};
use crate::error::MetaError;
use crate::state::{MetaState, MovePhase, ReplicaRole};

pub(crate) fn report(
    state: &mut MetaState,
    shard: ShardId,
    node: NodeId,
    step: MoveStep,
    now_ms: u64,
) -> Result<CommandResult, MetaError> {
    let info = state
        .shards
        .get_mut(&shard)
        .ok_or_else(|| MetaError::not_found("shard", shard))?;
    let role = info.role_of(node);
    let mv = info
        .pending_move
        .as_mut()
        .ok_or_else(|| MetaError::stale(shard, node, "no move is in progress"))?;
    let next = match (step, mv.phase) {
        (MoveStep::CaughtUp | MoveStep::Promoted, _) if mv.add != node => {
            return Err(MetaError::stale(
                shard,
                node,
                format!("the move in progress adds node {}", mv.add),
            ));
        }
        (MoveStep::CaughtUp, MovePhase::AddingLearner) => Some(MovePhase::Promoting),
        (MoveStep::CaughtUp, _) => return Ok(CommandResult::Done),
        (MoveStep::Promoted, MovePhase::AddingLearner) => {
            return Err(MetaError::stale(
                shard,
                node,
                "the learner has not been reported caught up",
            ));
        }
        (MoveStep::Promoted, MovePhase::Promoting) if role != Some(ReplicaRole::Voter) => {
            return Err(MetaError::stale(
                shard,
                node,
                "its promotion has not been ordered yet",
            ));
        }
        (MoveStep::Promoted, MovePhase::Promoting) => mv.remove.map(|_| MovePhase::Removing),
        (MoveStep::Promoted, MovePhase::Removing) => return Ok(CommandResult::Done),
        (MoveStep::Removed, _) if mv.remove != Some(node) => {
            return Err(MetaError::stale(
                shard,
                node,
                "the move in progress does not remove this node",
            ));
        }
        (MoveStep::Removed, MovePhase::Removing) if role.is_none() => None,
        (MoveStep::Removed, _) => {
            return Err(MetaError::stale(
                shard,
                node,
                "its removal has not been ordered yet",
            ));
        }
    };
    match next {
        Some(phase) => {
            mv.phase = phase;
            mv.phase_since_ms = now_ms;
        }
        None => info.pending_move = None,
    }
    Ok(CommandResult::Done)
}
