//! Applying the planner's actions. Each action is checked against the current state
//! (it may have been planned from an older one) and applied only if it still holds;
//! rejected actions are listed in the result and change nothing.

use runnel_types::{NodeId, ShardId};

use crate::action::Action;
use crate::command::{CommandResult, RejectedAction};
use crate::error::MetaError;
use crate::limits::PLACEMENT_ACTIONS_MAX;
use crate::state::{
    MetaState, MovePhase, MoveReason, NodeStatus, PendingMove, Replica, ReplicaRole, ShardInfo,
    StreamStatus, majority,
};

pub(crate) fn apply_all(
    state: &mut MetaState,
    now_ms: u64,
    actions: Vec<Action>,
) -> Result<CommandResult, MetaError> {
    if actions.len() > PLACEMENT_ACTIONS_MAX {
        return Err(MetaError::invalid(
            "actions",
            format!("{} actions", actions.len()),
            format!("at most {PLACEMENT_ACTIONS_MAX} per command; propose the rest in another"),
        ));
    }
    let mut applied = 0;
    let mut rejected = Vec::new();
    for (index, action) in actions.into_iter().enumerate() {
        match apply_action(state, now_ms, action) {
            Ok(()) => applied += 1,
            Err(e) => rejected.push(RejectedAction {
                index: index as u32,
                reason: e.to_string(),
            }),
        }
    }
    Ok(CommandResult::Placement { applied, rejected })
}

/// Applies one action; validates before it mutates.
pub(crate) fn apply_action(
    state: &mut MetaState,
    now_ms: u64,
    action: Action,
) -> Result<(), MetaError> {
    match action {
        Action::MarkNodeDown { node } => {
            crate::handlers::nodes::mark_down(state, node, now_ms).map(drop)
        }
        Action::InitialPlacement {
            shard,
            voters,
            leader,
        } => initial_placement(state, shard, voters, leader),
        Action::AddLearner {
            shard,
            node,
            replaces,
            reason,
        } => add_learner(state, shard, node, replaces, reason, now_ms),
        Action::PromoteReplica { shard, node } => promote(state, shard, node),
        Action::RemoveReplica { shard, node } => remove_replica(state, shard, node),
        Action::CancelMove { shard, node } => cancel_move(state, shard, node),
        Action::TransferLeader { shard, from, to } => transfer_leader(state, shard, from, to),
        Action::CompleteDrain { node } => complete_drain(state, node),
        Action::ActivateStream { stream } => {
            crate::handlers::streams::mark_active(state, &stream).map(drop)
        }
    }
}

fn what(action: &str, shard: ShardId, node: NodeId) -> String {
    format!("{action} node {node} for shard {shard}")
}

/// The shard, if it exists and its stream is being placed (not deleted).
fn placed_shard(state: &MetaState, shard: ShardId) -> Result<&ShardInfo, MetaError> {
    let info = state
        .shards
        .get(&shard)
        .ok_or_else(|| MetaError::not_found("shard", shard))?;
    if state
        .stream_of(info)
        .is_none_or(|s| s.status == StreamStatus::Deleting)
    {
        return Err(MetaError::precondition(
            format!("placing shard {shard}"),
            format!("stream {} is being deleted", info.stream),
        ));
    }
    Ok(info)
}

fn require_up(state: &MetaState, node: NodeId, what: &str) -> Result<(), MetaError> {
    if !state.node_is(node, &[NodeStatus::Up]) {
        let status = state.nodes.get(&node).map(|n| format!("{:?}", n.status));
        return Err(MetaError::precondition(
            what.to_string(),
            format!(
                "node {node} is {}, not Up",
                status.unwrap_or_else(|| "unknown".into())
            ),
        ));
    }
    Ok(())
}

fn initial_placement(
    state: &mut MetaState,
    shard: ShardId,
    voters: Vec<NodeId>,
    leader: NodeId,
) -> Result<(), MetaError> {
    let info = placed_shard(state, shard)?;
    let rf = state.stream_of(info).map_or(0, |s| s.replication_factor) as usize;
    let doing = format!("placing shard {shard} on {voters:?}");
    if !info.replicas.is_empty() {
        return Err(MetaError::precondition(doing, "it is placed already"));
    }
    if voters.is_empty() || voters.len() > rf {
        return Err(MetaError::invalid(
            "voters",
            format!("{voters:?}"),
            format!("1 to {rf} nodes"),
        ));
    }
    if voters
        .iter()
        .enumerate()
        .any(|(i, n)| voters[..i].contains(n))
    {
        return Err(MetaError::invalid(
            "voters",
            format!("{voters:?}"),
            "every node at most once",
        ));
    }
    if !voters.contains(&leader) {
        return Err(MetaError::invalid(
            "leader",
            leader,
            format!("must be one of the voters {voters:?}"),
        ));
    }
    for node in &voters {
        require_up(state, *node, &doing)?;
    }
    let info = state.shards.get_mut(&shard).expect("looked up above");
    info.replicas = voters
        .into_iter()
        .map(|node| Replica {
            node,
            role: ReplicaRole::Voter,
        })
        .collect();
    info.preferred_leader = Some(leader);
    Ok(())
}

fn add_learner(
    state: &mut MetaState,
    shard: ShardId,
    node: NodeId,
    replaces: Option<NodeId>,
    reason: MoveReason,
    now_ms: u64,
) -> Result<(), MetaError> {
    let info = placed_shard(state, shard)?;
    let doing = what("adding", shard, node);
    if let Some(mv) = &info.pending_move {
        return Err(MetaError::precondition(
            doing,
            format!("a move adding node {} is in progress", mv.add),
        ));
    }
    if info.has_replica(node) {
        return Err(MetaError::precondition(
            doing,
            "the node holds a replica already",
        ));
    }
    if let Some(old) = replaces
        && info.role_of(old) != Some(ReplicaRole::Voter)
    {
        return Err(MetaError::precondition(
            doing,
            format!("node {old} it replaces is not a voter"),
        ));
    }
    require_up(state, node, &doing)?;
    let info = state.shards.get_mut(&shard).expect("looked up above");
    info.replicas.push(Replica {
        node,
        role: ReplicaRole::Learner,
    });
    info.pending_move = Some(PendingMove {
        add: node,
        remove: replaces,
        phase: MovePhase::AddingLearner,
        reason,
        started_ms: now_ms,
        phase_since_ms: now_ms,
    });
    Ok(())
}

fn promote(state: &mut MetaState, shard: ShardId, node: NodeId) -> Result<(), MetaError> {
    let info = placed_shard(state, shard)?;
    let doing = what("promoting", shard, node);
    let ready = info
        .pending_move
        .as_ref()
        .is_some_and(|m| m.add == node && m.phase == MovePhase::Promoting);
    if !ready || info.role_of(node) != Some(ReplicaRole::Learner) {
        return Err(MetaError::precondition(
            doing,
            "it is not a learner reported caught up",
        ));
    }
    require_up(state, node, &doing)?;
    let info = state.shards.get_mut(&shard).expect("looked up above");
    info.replicas
        .iter_mut()
        .filter(|r| r.node == node)
        .for_each(|r| r.role = ReplicaRole::Voter);
    Ok(())
}

fn remove_replica(state: &mut MetaState, shard: ShardId, node: NodeId) -> Result<(), MetaError> {
    let info = placed_shard(state, shard)?;
    let doing = what("removing", shard, node);
    let ready = info
        .pending_move
        .as_ref()
        .is_some_and(|m| m.remove == Some(node) && m.phase == MovePhase::Removing);
    if !ready || !info.has_replica(node) {
        return Err(MetaError::precondition(
            doing,
            "its replacement has not been reported promoted",
        ));
    }
    if let Some(leader) = info.leader.filter(|l| l.node == node) {
        // Removing the leader's replica would leave the shard with no reported leader
        // and nobody to finish the move (the leader carries moves out): it hands its
        // leadership to the preferred leader first, and the new leader's report lifts
        // this.
        return Err(MetaError::precondition(
            doing,
            format!(
                "node {node} leads the shard (term {}); its leadership moves to another voter first",
                leader.term
            ),
        ));
    }
    let remaining: Vec<NodeId> = info.voters().filter(|v| *v != node).collect();
    let up = remaining
        .iter()
        .filter(|v| state.node_is(**v, &[NodeStatus::Up, NodeStatus::Draining]))
        .count();
    if up < majority(remaining.len()) {
        return Err(MetaError::precondition(
            doing,
            format!("only {up} of the remaining voters {remaining:?} are up, not a majority"),
        ));
    }
    let info = state.shards.get_mut(&shard).expect("looked up above");
    info.replicas.retain(|r| r.node != node);
    if info.preferred_leader == Some(node) {
        info.preferred_leader = None;
    }
    Ok(())
}

fn cancel_move(state: &mut MetaState, shard: ShardId, node: NodeId) -> Result<(), MetaError> {
    let info = placed_shard(state, shard)?;
    let adding = info.pending_move.as_ref().is_some_and(|m| m.add == node);
    if !adding || info.role_of(node) != Some(ReplicaRole::Learner) {
        return Err(MetaError::precondition(
            format!("cancelling the move of shard {shard} to node {node}"),
            "no move adds that node as a learner (a promoted replica stays)",
        ));
    }
    let info = state.shards.get_mut(&shard).expect("looked up above");
    info.replicas.retain(|r| r.node != node);
    info.pending_move = None;
    Ok(())
}

fn transfer_leader(
    state: &mut MetaState,
    shard: ShardId,
    from: Option<NodeId>,
    to: NodeId,
) -> Result<(), MetaError> {
    let info = placed_shard(state, shard)?;
    let doing = format!("making node {to} the preferred leader of shard {shard}");
    if info.preferred_leader != from {
        return Err(MetaError::precondition(
            doing,
            format!(
                "the preferred leader is {:?}, not {from:?}",
                info.preferred_leader
            ),
        ));
    }
    if info.role_of(to) != Some(ReplicaRole::Voter) {
        return Err(MetaError::precondition(
            doing,
            "the node is not a voter of the shard",
        ));
    }
    require_up(state, to, &doing)?;
    state
        .shards
        .get_mut(&shard)
        .expect("looked up above")
        .preferred_leader = Some(to);
    Ok(())
}

fn complete_drain(state: &mut MetaState, node: NodeId) -> Result<(), MetaError> {
    let doing = format!("completing the drain of node {node}");
    if !state.node_is(node, &[NodeStatus::Draining]) {
        return Err(MetaError::precondition(doing, "the node is not draining"));
    }
    let left = state.shards_on(node).count();
    if left > 0 {
        return Err(MetaError::precondition(
            doing,
            format!("it still holds {left} shard replicas"),
        ));
    }
    state.nodes.get_mut(&node).expect("checked above").status = NodeStatus::Drained;
    Ok(())
}
