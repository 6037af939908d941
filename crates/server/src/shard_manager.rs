//! The shard manager: on every node, makes the local shard replicas match the applied
//! meta state, and, where this node leads a shard, makes the shard's Raft membership
//! and leadership match it too.
//!
//! Decisions are pure: [`decide`] maps (meta state, this node's local groups) to
//! [`LocalAction`]s and is unit-tested without a cluster; [`ShardManager`] gathers the
//! local facts, runs `decide` on every applied change (and on a timer), and performs
//! the actions, one at a time per shard, on their own tasks.
//!
//! Rules (`decide`):
//! - a shard whose desired replica set names this node and that is not hosted here is
//!   created; if this node is its preferred (initial) leader, no leader was ever
//!   reported, every desired replica is a voter and the local log is empty, it also
//!   initializes the group with the desired voters (only brand-new shards qualify);
//! - a hosted shard no longer desired here is removed once no move still needs it
//!   (a replica being moved off stays until the leader reports it removed); a hosted
//!   shard whose id the state no longer knows, though it has handed that id out, was
//!   deleted and is removed; shards of a deleting stream are removed and reported
//!   (`ShardReclaimed`);
//! - as a shard leader: carry the pending move forward (add the learner and wait for
//!   it to catch up, report `CaughtUp`; once promotion is ordered, change the voters,
//!   report `Promoted`; once removal is ordered, change the voters, report `Removed`),
//!   and hand leadership to the preferred leader when it is a live voter;
//! - as a shard leader, first: drop from the Raft membership a learner the state no
//!   longer places (its move was cancelled, `CancelMove`), so it does not stay a
//!   member forever, and a later move to that node starts from a fresh learner;
//! - as the leader of a shard whose move removes this very replica (in `Removing`, or
//!   after the removal was ordered, should it have won an election since): hand
//!   leadership to another voter ([`hand_off`]); the new leader finishes the move.
//!   Without this a move that replaced the leader stalled, leaderless (chaos seed 6).
//!
//! Leadership transfer is `Group::transfer_leader` (openraft's TransferLeader, carried
//! by the transport); a transfer is attempted at most every [`TRANSFER_RETRY_MS`] per
//! shard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use runnel_meta::{
    Command, MetaState, MovePhase, MoveStep, NodeStatus, ReplicaRole, ShardInfo, StreamStatus,
};
use runnel_raft::Registry;
use runnel_types::{GroupId, LogIndex, NodeId, ShardId};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::context::now_ms;
use crate::placement::Placement;
use crate::placement::bootstrap::log_is_empty;

/// Least time between two leadership transfer attempts for one shard.
pub const TRANSFER_RETRY_MS: u64 = 5_000;
/// How long a learner may take to catch up before the leader tries again.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// What this node knows of one hosted shard group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalShard {
    pub is_leader: bool,
    /// No entry and no vote yet: the group has never run.
    pub log_empty: bool,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// One thing to do on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAction {
    /// Host the shard; with `initialize`, start its group with these voters.
    Create {
        shard: ShardId,
        initialize: Option<BTreeMap<NodeId, String>>,
    },
    /// Start a hosted, never-run group with these voters.
    Initialize {
        shard: ShardId,
        voters: BTreeMap<NodeId, String>,
    },
    /// Delete the local replica; with `reclaimed`, report `ShardReclaimed`.
    Remove { shard: ShardId, reclaimed: bool },
    /// Report `ShardReclaimed` for a replica never hosted here.
    ReportReclaimed { shard: ShardId },
    /// As leader: add `node` as a learner, wait for it to catch up, report `CaughtUp`.
    AddLearner {
        shard: ShardId,
        node: NodeId,
        addr: String,
    },
    /// As leader: drop `node`, a learner the state no longer places, from the group.
    RemoveLearner { shard: ShardId, node: NodeId },
    /// As leader: make `voters` the voter set, then report `step` for `node`.
    ChangeVoters {
        shard: ShardId,
        voters: BTreeSet<NodeId>,
        node: NodeId,
        step: MoveStep,
    },
    /// As leader: the membership already matches; report `step` for `node` (again).
    Report {
        shard: ShardId,
        node: NodeId,
        step: MoveStep,
    },
    /// As leader: hand leadership to `to`.
    TransferLeader { shard: ShardId, to: NodeId },
}

impl LocalAction {
    pub fn shard(&self) -> ShardId {
        match self {
            LocalAction::Create { shard, .. }
            | LocalAction::Initialize { shard, .. }
            | LocalAction::Remove { shard, .. }
            | LocalAction::ReportReclaimed { shard }
            | LocalAction::AddLearner { shard, .. }
            | LocalAction::RemoveLearner { shard, .. }
            | LocalAction::ChangeVoters { shard, .. }
            | LocalAction::Report { shard, .. }
            | LocalAction::TransferLeader { shard, .. } => *shard,
        }
    }
}

/// The actions that bring this node's replicas in line with `state`. Pure.
pub fn decide(
    state: &MetaState,
    me: NodeId,
    local: &BTreeMap<ShardId, LocalShard>,
) -> Vec<LocalAction> {
    let mut out = Vec::new();
    for info in state.shards.values() {
        let deleting = state
            .stream_of(info)
            .is_none_or(|s| s.status == StreamStatus::Deleting);
        let hosted = local.get(&info.id);
        match (deleting, info.has_replica(me), hosted) {
            (true, true, Some(_)) => out.push(LocalAction::Remove {
                shard: info.id,
                reclaimed: true,
            }),
            (true, true, None) => out.push(LocalAction::ReportReclaimed { shard: info.id }),
            (true, false, Some(_)) => out.push(LocalAction::Remove {
                shard: info.id,
                reclaimed: false,
            }),
            (false, true, None) => {
                let initialize = is_initial_leader(info, me).then(|| voter_addresses(state, info));
                out.push(LocalAction::Create {
                    shard: info.id,
                    initialize,
                });
            }
            (false, true, Some(l)) if l.log_empty && is_initial_leader(info, me) => {
                out.push(LocalAction::Initialize {
                    shard: info.id,
                    voters: voter_addresses(state, info),
                });
            }
            (false, true, Some(l)) if l.is_leader => out.extend(lead(state, me, info, l)),
            (false, false, Some(l)) if l.is_leader && still_needed(info, me) => {
                out.extend(hand_off(state, me, info, l));
            }
            (false, false, Some(_)) if !still_needed(info, me) => out.push(LocalAction::Remove {
                shard: info.id,
                reclaimed: false,
            }),
            _ => {}
        }
    }
    // Hosted shards the state has handed out and forgotten: deleted.
    for shard in local.keys() {
        if !state.shards.contains_key(shard) && shard.0 < state.next_shard_id.0 {
            out.push(LocalAction::Remove {
                shard: *shard,
                reclaimed: false,
            });
        }
    }
    out
}

/// A brand-new shard's designated leader: preferred, never reported, all voters.
fn is_initial_leader(info: &ShardInfo, me: NodeId) -> bool {
    info.preferred_leader == Some(me)
        && info.leader.is_none()
        && info.pending_move.is_none()
        && info.replicas.iter().all(|r| r.role == ReplicaRole::Voter)
}

/// A replica out of the desired set that a move still counts on (the voter being
/// replaced stays until the leader reports it removed).
fn still_needed(info: &ShardInfo, me: NodeId) -> bool {
    info.pending_move
        .as_ref()
        .is_some_and(|m| m.remove == Some(me))
}

fn voter_addresses(state: &MetaState, info: &ShardInfo) -> BTreeMap<NodeId, String> {
    info.voters()
        .filter_map(|n| state.nodes.get(&n).map(|i| (n, i.address.clone())))
        .collect()
}

/// A leader's duties for one shard: the pending move, then leader preference.
fn lead(state: &MetaState, me: NodeId, info: &ShardInfo, l: &LocalShard) -> Option<LocalAction> {
    let desired: BTreeSet<NodeId> = info.voters().collect();
    let shard = info.id;
    if let Some(node) = stale_learner(info, l) {
        return Some(LocalAction::RemoveLearner { shard, node });
    }
    if let Some(mv) = &info.pending_move {
        let add = mv.add;
        return match mv.phase {
            MovePhase::AddingLearner => {
                let addr = state.nodes.get(&add)?.address.clone();
                Some(LocalAction::AddLearner {
                    shard,
                    node: add,
                    addr,
                })
            }
            MovePhase::Promoting if info.role_of(add) == Some(ReplicaRole::Voter) => {
                let step = MoveStep::Promoted;
                Some(if l.voters.contains(&add) {
                    LocalAction::Report {
                        shard,
                        node: add,
                        step,
                    }
                } else {
                    LocalAction::ChangeVoters {
                        shard,
                        voters: desired,
                        node: add,
                        step,
                    }
                })
            }
            MovePhase::Removing => {
                let gone = mv.remove?;
                if gone == me {
                    // The meta state removes a replica only once it no longer leads.
                    return hand_off(state, me, info, l);
                }
                if info.has_replica(gone) {
                    return None; // removal not ordered yet
                }
                let step = MoveStep::Removed;
                Some(if l.voters.contains(&gone) || l.learners.contains(&gone) {
                    LocalAction::ChangeVoters {
                        shard,
                        voters: desired,
                        node: gone,
                        step,
                    }
                } else {
                    LocalAction::Report {
                        shard,
                        node: gone,
                        step,
                    }
                })
            }
            MovePhase::Promoting => None,
        };
    }
    let to = info.preferred_leader?;
    let live = state.node_is(to, &[NodeStatus::Up]);
    (to != me && live && l.voters.contains(&to))
        .then_some(LocalAction::TransferLeader { shard, to })
}

/// A learner of the group that the state does not place (a cancelled move's), other
/// than one the pending move still names (a removed voter left as a learner is the
/// move's own business).
fn stale_learner(info: &ShardInfo, l: &LocalShard) -> Option<NodeId> {
    let named = |n: NodeId| {
        info.pending_move
            .as_ref()
            .is_some_and(|m| m.add == n || m.remove == Some(n))
    };
    l.learners
        .iter()
        .copied()
        .find(|n| !info.has_replica(*n) && !named(*n))
}

/// A leader whose replica the pending move removes hands leadership to another voter:
/// the preferred leader if it can take it, else the first live voter of the desired
/// set that the group's membership has. The new leader finishes the move (the meta
/// state waits for its report before it orders the removal), so a move never strands
/// the shard without a leader.
fn hand_off(
    state: &MetaState,
    me: NodeId,
    info: &ShardInfo,
    l: &LocalShard,
) -> Option<LocalAction> {
    let can_lead =
        |n: &NodeId| *n != me && l.voters.contains(n) && state.node_is(*n, &[NodeStatus::Up]);
    let to = info
        .preferred_leader
        .filter(|p| info.role_of(*p) == Some(ReplicaRole::Voter) && can_lead(p))
        .or_else(|| info.voters().find(can_lead))?;
    Some(LocalAction::TransferLeader { shard: info.id, to })
}

/// Performs the shard manager's decisions on one node.
pub struct ShardManager {
    me: NodeId,
    registry: Arc<Registry>,
    placement: Arc<Placement>,
    /// Shards with an action in progress (one at a time per shard).
    busy: Mutex<BTreeSet<ShardId>>,
    /// When each shard's leadership transfer was last attempted.
    transfers: Mutex<BTreeMap<ShardId, u64>>,
}

impl ShardManager {
    pub fn new(registry: Arc<Registry>, placement: Arc<Placement>) -> Arc<ShardManager> {
        Arc::new(ShardManager {
            me: registry.node_id(),
            registry,
            placement,
            busy: Mutex::new(BTreeSet::new()),
            transfers: Mutex::new(BTreeMap::new()),
        })
    }

    /// Runs forever (the node aborts it on shutdown). First waits until the applied
    /// meta state has caught up with the meta log as committed here at start, so that
    /// a restarted node never acts on a replayed, older state (it could otherwise
    /// remove a replica that a later entry assigned to it).
    pub async fn run(self: Arc<Self>, meta_committed_at_start: LogIndex) {
        let span = info_span!("shard_manager", node_id = %self.me);
        async move {
            while !self.placement.wait_until_applied(meta_committed_at_start, Duration::from_secs(60)).await {
                warn!(index = %meta_committed_at_start, "meta state not caught up yet; shard manager waits");
            }
            let mut changes = self.placement.subscribe();
            let period = Duration::from_millis(self.placement.config.reconcile_interval_ms);
            loop {
                self.reconcile();
                let _ = tokio::time::timeout(period, changes.wait_changed()).await;
            }
        }
        .instrument(span)
        .await
    }

    /// The local facts `decide` needs.
    pub fn local_shards(&self) -> BTreeMap<ShardId, LocalShard> {
        let mut out = BTreeMap::new();
        for id in self.registry.group_ids() {
            if id.is_meta() {
                continue;
            }
            let Ok(group) = self.registry.group(id) else {
                continue;
            };
            let (voters, learners) = {
                let m = group.raft().metrics().borrow().clone();
                let membership = m.membership_config.membership();
                (
                    membership.voter_ids().map(NodeId).collect(),
                    membership.learner_ids().map(NodeId).collect(),
                )
            };
            let local = LocalShard {
                is_leader: group.is_leader(),
                log_empty: log_is_empty(&group),
                voters,
                learners,
            };
            out.insert(ShardId(id.0), local);
        }
        out
    }

    /// Decides and starts every action whose shard is not busy.
    pub fn reconcile(self: &Arc<Self>) {
        let local = self.local_shards();
        let actions = self.placement.read(|s| decide(s, self.me, &local));
        for action in actions {
            let shard = action.shard();
            if !self
                .busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(shard)
            {
                continue;
            }
            if let LocalAction::TransferLeader { .. } = action
                && !self.transfer_due(shard)
            {
                self.done(shard);
                continue;
            }
            let this = self.clone();
            let span = info_span!("shard_action", node_id = %self.me, shard_id = %shard);
            tokio::spawn(
                async move {
                    this.perform(action).await;
                    this.done(shard);
                }
                .instrument(span),
            );
        }
    }

    fn done(&self, shard: ShardId) {
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&shard);
    }

    fn transfer_due(&self, shard: ShardId) -> bool {
        let now = now_ms();
        let mut t = self
            .transfers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = t
            .get(&shard)
            .is_none_or(|last| now.saturating_sub(*last) >= TRANSFER_RETRY_MS);
        if due {
            t.insert(shard, now);
        }
        due
    }

    async fn perform(&self, action: LocalAction) {
        debug!(?action, "shard action");
        let what = format!("{action:?}");
        if let Err(e) = self.perform_inner(action).await {
            warn!(action = %what, error = %e, "shard action failed; the next reconcile retries");
        }
    }

    async fn perform_inner(&self, action: LocalAction) -> Result<(), crate::error::ServerError> {
        match action {
            LocalAction::Create { shard, initialize } => {
                let group = self.registry.create_group(GroupId::from(shard)).await?;
                info!(shard_id = %shard, "replica created");
                if let Some(voters) = initialize {
                    group.initialize(&voters).await?;
                    info!(shard_id = %shard, voters = ?voters.keys().collect::<Vec<_>>(), "shard group initialized");
                }
            }
            LocalAction::Initialize { shard, voters } => {
                self.registry
                    .group(GroupId::from(shard))?
                    .initialize(&voters)
                    .await?;
                info!(shard_id = %shard, "shard group initialized");
            }
            LocalAction::Remove { shard, reclaimed } => {
                self.registry.remove_group(GroupId::from(shard)).await?;
                info!(shard_id = %shard, reclaimed, "replica removed");
                if reclaimed {
                    self.placement
                        .propose(Command::ShardReclaimed {
                            shard,
                            node: self.me,
                        })
                        .await?;
                }
            }
            LocalAction::ReportReclaimed { shard } => {
                self.placement
                    .propose(Command::ShardReclaimed {
                        shard,
                        node: self.me,
                    })
                    .await?;
            }
            LocalAction::AddLearner { shard, node, addr } => {
                let group = self.registry.group(GroupId::from(shard))?;
                tokio::time::timeout(CATCH_UP_TIMEOUT, group.add_learner(node, &addr))
                    .await
                    .map_err(|_| crate::error::ServerError::Unavailable {
                        what: format!("learner {node} of shard {shard}"),
                        reason: format!("did not catch up within {CATCH_UP_TIMEOUT:?}"),
                        retry_after_ms: 0,
                    })??;
                info!(shard_id = %shard, learner = %node, "learner caught up");
                self.report(shard, node, MoveStep::CaughtUp).await?;
            }
            LocalAction::RemoveLearner { shard, node } => {
                self.registry
                    .group(GroupId::from(shard))?
                    .remove_learner(node)
                    .await?;
                info!(shard_id = %shard, learner = %node, "cancelled learner removed");
            }
            LocalAction::ChangeVoters {
                shard,
                voters,
                node,
                step,
            } => {
                self.registry
                    .group(GroupId::from(shard))?
                    .change_voters(voters.clone())
                    .await?;
                info!(shard_id = %shard, voters = ?voters, "voters changed");
                self.report(shard, node, step).await?;
            }
            LocalAction::Report { shard, node, step } => self.report(shard, node, step).await?,
            LocalAction::TransferLeader { shard, to } => {
                let group = self.registry.group(GroupId::from(shard))?;
                group.transfer_leader(to).await?;
                info!(shard_id = %shard, to = %to, "leadership transferred");
            }
        }
        Ok(())
    }

    async fn report(
        &self,
        shard: ShardId,
        node: NodeId,
        step: MoveStep,
    ) -> Result<(), crate::error::ServerError> {
        let cmd = Command::ReportMove {
            shard,
            node,
            step,
            now_ms: now_ms(),
        };
        self.placement.propose(cmd).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
