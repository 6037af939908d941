//! The planner: a pure function from the meta state (and the time) to the actions that
//! move it towards a good placement. It never does anything itself; the meta leader
//! proposes its actions in an `ApplyPlacement` command.
//!
//! Steps, in priority order (each sees the effect of the actions before it, because the
//! planner applies every action it emits to a scratch copy of the state, with the very
//! validation `apply` uses):
//!
//! 1. liveness: mark nodes down that missed heartbeats;
//! 2. moves in progress: promote caught-up learners, remove replaced replicas (once
//!    they no longer lead), cancel moves whose learner went away;
//! 3. new shards: initial replica sets (zone spread first, then least loaded), at
//!    most `new_shards_in_flight_max` placed and not yet led at once;
//! 4. new moves, at most `moves_in_flight_max` in flight in all: repair (replicas on
//!    nodes down past the grace period, removed, or missing), then drain, then zone
//!    spread, then replica balance (only while every replica is live);
//! 5. leaders: a preferred leader for every shard on a live voter, then leader balance;
//! 6. drains that are complete, streams whose shards all have leaders.
//!
//! Minimal movement: a balance move is made only when it strictly improves balance
//! (see [`crate::allocator`]), so a balanced state plans nothing.

use runnel_types::{NodeId, ShardId};

use crate::action::Action;
use crate::allocator::{Loads, Measure, balancing_target, choose_target};
use crate::constraints::{
    all_live, has_live_majority, is_live, is_target, needs_replacement, zone_of, zones_of,
};
use crate::handlers::placement::apply_action;
use crate::leaders;
use crate::liveness::nodes_to_mark_down;
use crate::state::{
    MetaState, MovePhase, MoveReason, NodeStatus, Replica, ReplicaRole, StreamStatus, majority,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannerConfig {
    /// A node silent for longer is marked down.
    pub heartbeat_timeout_ms: u64,
    /// A down node's replicas are replaced only after it has been down this long (a
    /// restart or a short partition costs no data movement).
    pub down_grace_ms: u64,
    /// Replica moves in flight at once, cluster-wide (bounds the copy traffic a join,
    /// drain or failure causes).
    pub moves_in_flight_max: usize,
    /// Leader transfers (for balance) per plan.
    pub leader_transfers_max: usize,
    /// New shards placed but not yet reported led, cluster-wide. Every new shard is a
    /// Raft group created on each replica and elected at once; thousands starting
    /// together starved the nodes' runtimes (heartbeats and probes missed their
    /// deadlines, elections cascaded, and the meta group itself lost its leader), so
    /// creation goes in waves: a shard leaves the wave when its leader is reported.
    pub new_shards_in_flight_max: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            heartbeat_timeout_ms: 10_000,
            down_grace_ms: 5 * 60 * 1000,
            moves_in_flight_max: 8,
            leader_transfers_max: 64,
            new_shards_in_flight_max: 256,
        }
    }
}

/// Plans the next actions. Pure and deterministic: the same state, time and config
/// always give the same actions, in the same order.
pub fn plan(state: &MetaState, now_ms: u64, config: &PlannerConfig) -> Vec<Action> {
    let mut p = Planner {
        work: state.clone(),
        now_ms,
        config,
        actions: Vec::new(),
    };
    for node in nodes_to_mark_down(state, now_ms, config.heartbeat_timeout_ms) {
        p.emit(Action::MarkNodeDown { node });
    }
    p.advance_moves();
    p.place_new_shards();
    p.start_moves();
    leaders::plan_leaders(&mut p);
    p.complete_drains();
    p.activate_streams();
    p.actions
}

pub(crate) struct Planner<'a> {
    pub(crate) work: MetaState,
    pub(crate) now_ms: u64,
    pub(crate) config: &'a PlannerConfig,
    pub(crate) actions: Vec<Action>,
}

/// Does `node` lead the shard, as last reported? A leader's replica is removed only
/// after it has handed leadership over (the shard manager of a leader being moved off
/// transfers to the preferred leader, which the planner never puts on that node).
fn leads(shard: &crate::state::ShardInfo, node: NodeId) -> bool {
    shard.leader.is_some_and(|l| l.node == node)
}

impl Planner<'_> {
    /// Applies the action to the scratch state and records it.
    pub(crate) fn emit(&mut self, action: Action) -> bool {
        match apply_action(&mut self.work, self.now_ms, action.clone()) {
            Ok(()) => {
                self.actions.push(action);
                true
            }
            Err(e) => {
                debug_assert!(false, "the planner made an invalid action {action:?}: {e}");
                false
            }
        }
    }

    /// Shards the planner places, in id order, filtered.
    pub(crate) fn shard_ids(
        &self,
        keep: impl Fn(&crate::state::ShardInfo) -> bool,
    ) -> Vec<ShardId> {
        self.work
            .placed_shards()
            .filter(|(s, _)| keep(s))
            .map(|(s, _)| s.id)
            .collect()
    }

    fn advance_moves(&mut self) {
        for id in self.shard_ids(|s| s.pending_move.is_some()) {
            let shard = &self.work.shards[&id];
            let Some(mv) = shard.pending_move.clone() else {
                continue;
            };
            let learner = shard.role_of(mv.add) == Some(ReplicaRole::Learner);
            let add_up = is_target(&self.work, mv.add);
            let action = match mv.phase {
                MovePhase::AddingLearner | MovePhase::Promoting if learner && !add_up => {
                    Some(Action::CancelMove {
                        shard: id,
                        node: mv.add,
                    })
                }
                MovePhase::Promoting if learner => Some(Action::PromoteReplica {
                    shard: id,
                    node: mv.add,
                }),
                MovePhase::Removing => match mv.remove {
                    Some(old)
                        if shard.has_replica(old)
                            && !leads(shard, old)
                            && self.removal_keeps_majority(id, old) =>
                    {
                        Some(Action::RemoveReplica {
                            shard: id,
                            node: old,
                        })
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(action) = action {
                self.emit(action);
            }
        }
    }

    fn removal_keeps_majority(&self, shard: ShardId, node: NodeId) -> bool {
        let remaining: Vec<NodeId> = self.work.shards[&shard]
            .voters()
            .filter(|v| *v != node)
            .collect();
        remaining
            .iter()
            .filter(|v| is_live(&self.work, **v))
            .count()
            >= majority(remaining.len())
    }

    /// Placed shards still starting: no leader reported yet, every replica on a live
    /// node (a shard waiting on a down node is not starting, and must not hold up the
    /// creation of others).
    fn shards_starting(&self) -> usize {
        self.work
            .placed_shards()
            .filter(|(s, _)| {
                !s.replicas.is_empty() && s.leader.is_none() && all_live(&self.work, s)
            })
            .count()
    }

    fn place_new_shards(&mut self) {
        let budget = self
            .config
            .new_shards_in_flight_max
            .saturating_sub(self.shards_starting());
        let mut loads = Loads::of(&self.work, Measure::Replicas);
        let mut leader_loads = Loads::of(&self.work, Measure::Leaders);
        let new = self.shard_ids(|s| s.replicas.is_empty());
        for id in new.into_iter().take(budget) {
            let shard = &self.work.shards[&id];
            let rf = self
                .work
                .stream_of(shard)
                .map_or(0, |s| s.replication_factor);
            let mut scratch = shard.clone();
            for _ in 0..rf {
                let Some(node) = choose_target(&self.work, &loads, &scratch, None) else {
                    break;
                };
                scratch.replicas.push(Replica {
                    node,
                    role: ReplicaRole::Voter,
                });
                loads.add(node);
            }
            let voters: Vec<NodeId> = scratch.replicas.iter().map(|r| r.node).collect();
            let leader = voters
                .iter()
                .copied()
                .min_by(|a, b| leader_loads.cmp_after(*a, 1, *b, 1).then(a.cmp(b)));
            let Some(leader) = leader else { continue };
            leader_loads.add(leader);
            self.emit(Action::InitialPlacement {
                shard: id,
                voters,
                leader,
            });
        }
    }

    fn start_moves(&mut self) {
        let in_flight = self
            .work
            .placed_shards()
            .filter(|(s, _)| s.pending_move.is_some())
            .count();
        let mut budget = self.config.moves_in_flight_max.saturating_sub(in_flight);
        budget -= self.repair_moves(budget);
        budget -= self.drain_moves(budget);
        budget -= self.zone_moves(budget);
        let healthy = self
            .work
            .placed_shards()
            .all(|(s, _)| all_live(&self.work, s));
        if healthy {
            self.balance_moves(budget);
        }
    }

    /// Starts a move; returns whether it was emitted.
    fn start_move(
        &mut self,
        loads: &mut Loads,
        shard: ShardId,
        node: NodeId,
        replaces: Option<NodeId>,
        reason: MoveReason,
    ) -> bool {
        let ok = self.emit(Action::AddLearner {
            shard,
            node,
            replaces,
            reason,
        });
        if ok {
            loads.add(node);
            if let Some(old) = replaces {
                loads.remove(old);
            }
        }
        ok
    }

    /// Shards without a move in progress that have a live majority (so a move can finish).
    fn movable(&self) -> Vec<ShardId> {
        self.shard_ids(|s| {
            s.pending_move.is_none() && !s.replicas.is_empty() && has_live_majority(&self.work, s)
        })
    }

    fn repair_moves(&mut self, budget: usize) -> usize {
        let mut loads = Loads::of(&self.work, Measure::Replicas);
        let mut started = 0;
        for id in self.movable() {
            if started == budget {
                break;
            }
            let shard = &self.work.shards[&id];
            let rf = self
                .work
                .stream_of(shard)
                .map_or(0, |s| s.replication_factor) as usize;
            let bad = shard
                .voters()
                .find(|n| needs_replacement(&self.work, *n, self.now_ms, self.config));
            if bad.is_none() && shard.replicas.len() >= rf {
                continue;
            }
            let Some(target) = choose_target(&self.work, &loads, shard, bad) else {
                continue;
            };
            started +=
                usize::from(self.start_move(&mut loads, id, target, bad, MoveReason::Repair));
        }
        started
    }

    fn drain_moves(&mut self, budget: usize) -> usize {
        let mut loads = Loads::of(&self.work, Measure::Replicas);
        let mut started = 0;
        for id in self.movable() {
            if started == budget {
                break;
            }
            let shard = &self.work.shards[&id];
            let draining = shard
                .voters()
                .find(|n| self.work.node_is(*n, &[NodeStatus::Draining]));
            let Some(old) = draining else { continue };
            let Some(target) = choose_target(&self.work, &loads, shard, Some(old)) else {
                continue;
            };
            started +=
                usize::from(self.start_move(&mut loads, id, target, Some(old), MoveReason::Drain));
        }
        started
    }

    /// Spreads shards whose replicas share a zone while an unused zone has a node.
    fn zone_moves(&mut self, budget: usize) -> usize {
        let mut loads = Loads::of(&self.work, Measure::Replicas);
        let mut started = 0;
        for id in self.movable() {
            if started == budget {
                break;
            }
            let shard = &self.work.shards[&id];
            let zones = zones_of(&self.work, shard, None);
            if !all_live(&self.work, shard) || zones.len() == shard.replicas.len() {
                continue;
            }
            // A replica sharing its zone, on the most loaded node.
            let voters: Vec<NodeId> = shard.voters().collect();
            let shared = |n: &NodeId| {
                voters
                    .iter()
                    .filter(|v| zone_of(&self.work, **v) == zone_of(&self.work, *n))
                    .count()
                    > 1
            };
            let mut candidates: Vec<NodeId> = voters.iter().copied().filter(shared).collect();
            candidates.sort_by(|a, b| loads.cmp_after(*b, 0, *a, 0).then(a.cmp(b)));
            let Some(old) = candidates.first().copied() else {
                continue;
            };
            let Some(target) = choose_target(&self.work, &loads, shard, Some(old)) else {
                continue;
            };
            if zones.contains(&zone_of(&self.work, target)) {
                continue;
            }
            started +=
                usize::from(self.start_move(&mut loads, id, target, Some(old), MoveReason::Zone));
        }
        started
    }

    fn balance_moves(&mut self, budget: usize) {
        let mut loads = Loads::of(&self.work, Measure::Replicas);
        for _ in 0..budget {
            let Some((shard, from, to)) = self.find_balance_move(&loads) else {
                return;
            };
            self.start_move(&mut loads, shard, to, Some(from), MoveReason::Balance);
        }
    }

    /// The first improving move: from the most loaded node possible, a shard it does not
    /// lead if possible, to the least loaded node that may take it.
    fn find_balance_move(&self, loads: &Loads) -> Option<(ShardId, NodeId, NodeId)> {
        let movable = self.movable();
        for from in loads.by_load_desc() {
            let mut shards: Vec<ShardId> = movable
                .iter()
                .copied()
                .filter(|id| self.work.shards[id].role_of(from) == Some(ReplicaRole::Voter))
                .collect();
            shards.sort_by_key(|id| (self.work.shards[id].preferred_leader == Some(from), *id));
            for id in shards {
                if let Some(to) = balancing_target(&self.work, loads, &self.work.shards[&id], from)
                {
                    return Some((id, from, to));
                }
            }
        }
        None
    }

    fn complete_drains(&mut self) {
        let draining: Vec<NodeId> = self
            .work
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Draining)
            .map(|n| n.id)
            .collect();
        for node in draining {
            if self.work.shards_on(node).next().is_none() {
                self.emit(Action::CompleteDrain { node });
            }
        }
    }

    fn activate_streams(&mut self) {
        let ready: Vec<_> = self
            .work
            .streams
            .values()
            .filter(|s| s.status == StreamStatus::Creating)
            .filter(|s| {
                s.shards.iter().all(|id| {
                    self.work
                        .shards
                        .get(id)
                        .is_some_and(|sh| sh.leader.is_some())
                })
            })
            .map(|s| s.name.clone())
            .collect();
        for stream in ready {
            self.emit(Action::ActivateStream { stream });
        }
    }
}
