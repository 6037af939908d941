//! A small deterministic world for driving the planner: nodes that heartbeat (or are
//! dead), shard "Raft groups" that elect a leader when a majority of their voters run,
//! follow the preferred leader, catch learners up and carry out membership changes,
//! and a meta state that takes the planner's actions. No threads, no clock, no
//! randomness: the test's proptest input decides every event.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use runnel_meta::{
    Action, Command, CommandResult, LeaderReport, MetaState, MoveStep, NodeLabels, NodeLoad,
    NodeStatus, PlannerConfig, ReplicaRole, StreamStatus, apply, plan,
};
use runnel_types::{NodeId, ShardId, StreamName, Term};

pub const TICK_MS: u64 = 1_000;

pub struct World {
    pub state: MetaState,
    pub config: PlannerConfig,
    pub now_ms: u64,
    /// Nodes whose process runs.
    pub alive: BTreeSet<NodeId>,
    pub next_node: u64,
    pub zones: u8,
    pub weighted: bool,
    /// Per shard: the Raft term and the node leading in it, if any.
    pub raft: BTreeMap<ShardId, (u64, Option<NodeId>)>,
    pub next_stream: u32,
    /// Voters of each shard as of the last check, to check each change.
    pub last_voters: BTreeMap<ShardId, Vec<NodeId>>,
    /// Shards that have had their full replication factor of voters.
    pub fully_placed: BTreeSet<ShardId>,
}

pub fn ok(state: &mut MetaState, cmd: Command) -> CommandResult {
    let text = format!("{cmd:?}");
    apply(state, cmd).unwrap_or_else(|e| panic!("{text} failed: {e}"))
}

impl World {
    pub fn new(nodes: u8, zones: u8, weighted: bool, moves_in_flight_max: usize) -> World {
        let mut state = MetaState::default();
        state.settings.retention_ms_min = 1;
        let config = PlannerConfig {
            heartbeat_timeout_ms: 3 * TICK_MS,
            down_grace_ms: 6 * TICK_MS,
            moves_in_flight_max,
            leader_transfers_max: 8,
            new_shards_in_flight_max: 16,
        };
        let mut w = World {
            state,
            config,
            now_ms: 1_000_000,
            alive: BTreeSet::new(),
            next_node: 1,
            zones,
            weighted,
            raft: BTreeMap::new(),
            next_stream: 0,
            last_voters: BTreeMap::new(),
            fully_placed: BTreeSet::new(),
        };
        for i in 0..nodes {
            w.add_node(i);
        }
        w.heartbeats();
        w
    }

    pub fn add_node(&mut self, seed: u8) -> NodeId {
        let id = NodeId(self.next_node);
        self.next_node += 1;
        let zone = (self.zones > 0).then(|| format!("z{}", seed % self.zones));
        let weight = if self.weighted && seed % 2 == 1 {
            200
        } else {
            100
        };
        let labels = NodeLabels {
            zone,
            other: BTreeMap::new(),
        };
        let cmd = Command::RegisterNode {
            node: id,
            address: format!("10.0.0.{}:7000", id.0),
            labels,
            capacity_weight: weight,
            now_ms: self.now_ms,
        };
        ok(&mut self.state, cmd);
        self.alive.insert(id);
        id
    }

    pub fn status(&self, node: NodeId) -> NodeStatus {
        self.state.nodes[&node].status
    }

    /// Nodes that run and are not leaving: what the cluster can place replicas on.
    pub fn serving(&self) -> usize {
        self.alive
            .iter()
            .filter(|n| {
                !self.state.nodes[*n].drain_requested && self.status(**n) != NodeStatus::Removed
            })
            .count()
    }

    pub fn dead(&self) -> Vec<NodeId> {
        self.state
            .nodes
            .values()
            .filter(|n| n.status != NodeStatus::Removed && !self.alive.contains(&n.id))
            .map(|n| n.id)
            .collect()
    }

    /// Kill one node, if no other is dead and enough stay serving.
    pub fn kill(&mut self, pick: u8) {
        if !self.dead().is_empty() || self.serving() <= 3 {
            return;
        }
        let candidates: Vec<NodeId> = self.alive.iter().copied().collect();
        let node = candidates[pick as usize % candidates.len()];
        self.alive.remove(&node);
    }

    pub fn revive(&mut self) {
        for node in self.dead() {
            self.alive.insert(node);
        }
    }

    pub fn drain(&mut self, pick: u8) {
        let candidates: Vec<NodeId> = self
            .state
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Up && self.alive.contains(&n.id))
            .map(|n| n.id)
            .collect();
        if candidates.is_empty() || self.serving() <= 4 {
            return;
        }
        let node = candidates[pick as usize % candidates.len()];
        ok(&mut self.state, Command::DrainNode { node });
    }

    /// An operator removes a drained node and shuts it down.
    pub fn remove_drained(&mut self) {
        let drained: Vec<NodeId> = self
            .state
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Drained)
            .map(|n| n.id)
            .collect();
        for node in drained {
            ok(&mut self.state, Command::RemoveNode { node });
            self.alive.remove(&node);
        }
    }

    pub fn create_stream(&mut self, shards: u8, rf: u8) {
        let name = StreamName::new(format!("s{}", self.next_stream)).expect("valid name");
        self.next_stream += 1;
        let cmd = Command::CreateStream {
            name,
            shard_count: u32::from(shards % 8 + 1),
            replication_factor: u32::from(rf % 3 + 1),
            retention_ms: 60_000,
            now_ms: self.now_ms,
        };
        // Refused when too few nodes are up: that is the meta state's call, not an error here.
        let _ = apply(&mut self.state, cmd);
    }

    pub fn delete_stream(&mut self, pick: u8) {
        let names: Vec<StreamName> = self
            .state
            .streams
            .values()
            .filter(|s| s.status != StreamStatus::Deleting)
            .map(|s| s.name.clone())
            .collect();
        if let Some(name) = names.get(pick as usize % names.len().max(1)) {
            ok(
                &mut self.state,
                Command::DeleteStream { name: name.clone() },
            );
        }
    }

    pub fn heartbeats(&mut self) {
        for node in self.alive.clone() {
            let leaders = self
                .raft
                .iter()
                .filter(|(_, (_, l))| *l == Some(node))
                .map(|(shard, (term, _))| LeaderReport {
                    shard: *shard,
                    term: Term(*term),
                })
                .collect();
            let cmd = Command::Heartbeat {
                node,
                now_ms: self.now_ms,
                load: NodeLoad::default(),
                leaders,
            };
            ok(&mut self.state, cmd);
        }
    }

    /// One round: time passes, nodes heartbeat, the planner plans (checked), its actions
    /// apply, the shard groups react. Returns the actions.
    pub fn step(&mut self) -> Vec<Action> {
        self.now_ms += TICK_MS;
        self.heartbeats();
        let actions = plan(&self.state, self.now_ms, &self.config);
        assert_eq!(
            actions,
            plan(&self.state, self.now_ms, &self.config),
            "planning is not deterministic"
        );
        // Marking a node down is news, not a decision: judge the rest against it.
        let mut known = self.state.clone();
        let downs: Vec<Action> = actions
            .iter()
            .filter(|a| matches!(a, Action::MarkNodeDown { .. }))
            .cloned()
            .collect();
        ok(
            &mut known,
            Command::ApplyPlacement {
                now_ms: self.now_ms,
                actions: downs,
            },
        );
        crate::invariants::check_actions(self, &known, &actions);
        let live_before = live_majorities(&known);
        let led_before = crate::invariants::led_shards(&self.state);
        let cmd = Command::ApplyPlacement {
            now_ms: self.now_ms,
            actions: actions.clone(),
        };
        match ok(&mut self.state, cmd) {
            CommandResult::Placement { rejected, .. } => {
                assert!(
                    rejected.is_empty(),
                    "actions planned from this very state were rejected: {rejected:?}"
                )
            }
            other => panic!("unexpected result {other:?}"),
        }
        crate::invariants::placement_keeps_reported_leaders(&led_before, &self.state, &actions);
        let live_after = live_majorities(&self.state);
        for shard in live_before.difference(&live_after) {
            if self.state.shards.contains_key(shard) {
                panic!("the plan {actions:?} took shard {shard} below a live majority");
            }
        }
        self.shard_groups_react();
        crate::invariants::check_state(self);
        actions
    }
}

/// Shards of placed streams whose voters on live nodes (`Up` or `Draining`, as far
/// as the meta state knows) are a majority. (What the meta state does not know yet,
/// it cannot plan around: a learner that dies between its catch-up report and its
/// promotion stalls the membership change until the node is back or replaced.)
pub fn live_majorities(state: &MetaState) -> BTreeSet<ShardId> {
    state
        .placed_shards()
        .filter(|(s, _)| runnel_meta::constraints::has_live_majority(state, s))
        .map(|(s, _)| s.id)
        .collect()
}

impl World {
    /// Each shard group: elect or keep a leader, follow the preferred leader, move its
    /// pending move on, reclaim deleted replicas.
    fn shard_groups_react(&mut self) {
        let ids: Vec<ShardId> = self.state.shards.keys().copied().collect();
        for id in ids {
            let leader = self.elect(id);
            self.progress_move(id, leader);
            self.reclaim(id);
        }
        self.raft.retain(|id, _| self.state.shards.contains_key(id));
    }

    fn elect(&mut self, id: ShardId) -> Option<NodeId> {
        let shard = &self.state.shards[&id];
        let voters: Vec<NodeId> = shard.voters().collect();
        let live: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| self.alive.contains(v))
            .collect();
        let entry = self.raft.entry(id).or_insert((0, None));
        if voters.is_empty() || live.len() <= voters.len() / 2 {
            entry.1 = None;
            return None;
        }
        let keep = entry.1.filter(|l| live.contains(l));
        // As the real shard manager: a leader busy with a move keeps leading until the
        // move is done, unless the move is removing it (then it hands over).
        let follows_preference = match (keep, &shard.pending_move) {
            (Some(l), Some(mv)) => {
                mv.remove == Some(l) && mv.phase == runnel_meta::MovePhase::Removing
            }
            _ => true,
        };
        let preferred = shard.preferred_leader.filter(|p| live.contains(p));
        let wanted = match (follows_preference, preferred) {
            (true, Some(p)) => Some(p),
            _ => keep.or_else(|| live.first().copied()),
        };
        if wanted != entry.1 {
            entry.0 += 1;
            entry.1 = wanted;
        }
        wanted
    }

    fn progress_move(&mut self, id: ShardId, leader: Option<NodeId>) {
        let shard = &self.state.shards[&id];
        let (Some(_), Some(mv)) = (leader, shard.pending_move.clone()) else {
            return;
        };
        let step = match mv.phase {
            runnel_meta::MovePhase::AddingLearner if self.alive.contains(&mv.add) => {
                Some((mv.add, MoveStep::CaughtUp))
            }
            runnel_meta::MovePhase::Promoting
                if shard.role_of(mv.add) == Some(ReplicaRole::Voter) =>
            {
                Some((mv.add, MoveStep::Promoted))
            }
            runnel_meta::MovePhase::Removing => mv
                .remove
                .filter(|r| !shard.has_replica(*r))
                .map(|r| (r, MoveStep::Removed)),
            _ => None,
        };
        if let Some((node, step)) = step {
            ok(
                &mut self.state,
                Command::ReportMove {
                    shard: id,
                    node,
                    step,
                    now_ms: self.now_ms,
                },
            );
        }
    }

    fn reclaim(&mut self, id: ShardId) {
        let Some(shard) = self.state.shards.get(&id) else {
            return;
        };
        let deleting = self
            .state
            .streams
            .get(&shard.stream)
            .is_some_and(|s| s.status == StreamStatus::Deleting);
        if !deleting {
            return;
        }
        let nodes: Vec<NodeId> = shard
            .replicas
            .iter()
            .map(|r| r.node)
            .filter(|n| self.alive.contains(n))
            .collect();
        for node in nodes {
            ok(&mut self.state, Command::ShardReclaimed { shard: id, node });
        }
    }

    /// Steps until the planner has had nothing to do, and no move was in flight, for
    /// longer than a heartbeat timeout plus the down grace period (so that a failure
    /// still being waited out is not taken for a converged state).
    pub fn converge(&mut self, max_steps: usize) -> usize {
        let quiet_needed =
            (self.config.heartbeat_timeout_ms + self.config.down_grace_ms) / TICK_MS + 2;
        let mut quiet = 0;
        for i in 0..max_steps {
            let actions = self.step();
            let moving = self.state.shards.values().any(|s| s.pending_move.is_some());
            quiet = if actions.is_empty() && !moving {
                quiet + 1
            } else {
                0
            };
            if quiet == quiet_needed {
                return i;
            }
        }
        panic!(
            "no convergence after {max_steps} steps; state: {:#?}",
            self.state
        );
    }
}
