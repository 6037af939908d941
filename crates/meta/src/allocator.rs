//! Scoring: how loaded each node is, and which node is the best home for a replica.
//!
//! Load is a count divided by the node's capacity weight, compared exactly by
//! cross-multiplication (no floats). A move from `a` to `b` improves balance when `b`,
//! after receiving, is still less loaded than `a` was: `(c_b + 1) / w_b < c_a / w_a`.
//! With equal weights that is `c_a - c_b >= 2`, so a balanced cluster has replica (and
//! leader) counts within one of each other. Every such move makes the sorted list of
//! loads lexicographically smaller, so balancing terminates.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use runnel_types::NodeId;

use crate::constraints::{can_host, zone_of, zones_of};
use crate::state::{MetaState, NodeStatus, ShardInfo};

/// Counts per `Up` node (the nodes that take part in balance), with their weights.
#[derive(Clone, Debug, Default)]
pub struct Loads {
    counts: BTreeMap<NodeId, (u64, u64)>,
}

/// What to count: replicas (final replica sets) or preferred leaderships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Replicas,
    Leaders,
}

impl Loads {
    pub fn of(state: &MetaState, measure: Measure) -> Loads {
        let mut counts: BTreeMap<NodeId, (u64, u64)> = state
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Up)
            .map(|n| (n.id, (0, u64::from(n.capacity_weight))))
            .collect();
        for (shard, _) in state.placed_shards() {
            let nodes: Vec<NodeId> = match measure {
                Measure::Replicas => shard.final_replicas().collect(),
                Measure::Leaders => shard.preferred_leader.into_iter().collect(),
            };
            for n in nodes {
                if let Some(c) = counts.get_mut(&n) {
                    c.0 += 1;
                }
            }
        }
        Loads { counts }
    }

    pub fn count(&self, node: NodeId) -> u64 {
        self.counts.get(&node).map_or(0, |c| c.0)
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.counts.keys().copied()
    }

    pub fn add(&mut self, node: NodeId) {
        if let Some(c) = self.counts.get_mut(&node) {
            c.0 += 1;
        }
    }

    pub fn remove(&mut self, node: NodeId) {
        if let Some(c) = self.counts.get_mut(&node) {
            c.0 = c.0.saturating_sub(1);
        }
    }

    /// Compares the load of `a` after adding `da` with that of `b` after adding `db`.
    pub fn cmp_after(&self, a: NodeId, da: u64, b: NodeId, db: u64) -> Ordering {
        let (ca, wa) = self.counts.get(&a).copied().unwrap_or((0, 1));
        let (cb, wb) = self.counts.get(&b).copied().unwrap_or((0, 1));
        (u128::from(ca + da) * u128::from(wb)).cmp(&(u128::from(cb + db) * u128::from(wa)))
    }

    /// Would moving one unit from `from` to `to` improve balance? Only between balanced
    /// (`Up`) nodes; a unit on any other node is not counted and always moves.
    pub fn improves(&self, from: NodeId, to: NodeId) -> bool {
        !self.counts.contains_key(&from) || self.cmp_after(to, 1, from, 0) == Ordering::Less
    }

    /// Nodes from most to least loaded (ties: smaller id first).
    pub fn by_load_desc(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.nodes().collect();
        nodes.sort_by(|a, b| self.cmp_after(*b, 0, *a, 0).then(a.cmp(b)));
        nodes
    }
}

/// The best node to receive a replica of `shard` (replacing `replacing`, if any):
/// `Up`, not holding the shard; a zone the shard does not use yet if there is one; then
/// the least loaded after receiving; then the smallest id.
pub fn choose_target(
    state: &MetaState,
    loads: &Loads,
    shard: &ShardInfo,
    replacing: Option<NodeId>,
) -> Option<NodeId> {
    let zones = zones_of(state, shard, replacing);
    let mut best: Option<(bool, NodeId)> = None;
    for node in loads.nodes().filter(|n| can_host(state, shard, *n)) {
        let new_zone = !zones.contains(&zone_of(state, node));
        let better = match best {
            None => true,
            Some((best_new, b)) => {
                (new_zone && !best_new)
                    || (new_zone == best_new && loads.cmp_after(node, 1, b, 1) == Ordering::Less)
            }
        };
        if better {
            best = Some((new_zone, node));
        }
    }
    best.map(|(_, n)| n)
}

/// The least loaded node that may take `from`'s replica of `shard` for balance: it can
/// host the shard, the shard keeps at least as many zones, and the move improves balance.
pub fn balancing_target(
    state: &MetaState,
    loads: &Loads,
    shard: &ShardInfo,
    from: NodeId,
) -> Option<NodeId> {
    let spread = zones_of(state, shard, None).len();
    let rest = zones_of(state, shard, Some(from));
    let keeps_spread =
        |n: NodeId| rest.len() + usize::from(!rest.contains(&zone_of(state, n))) >= spread;
    loads
        .nodes()
        .filter(|n| can_host(state, shard, *n) && keeps_spread(*n) && loads.improves(from, *n))
        .min_by(|a, b| loads.cmp_after(*a, 1, *b, 1).then(a.cmp(b)))
}
