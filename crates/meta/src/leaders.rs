//! Leader placement: every shard gets a preferred leader on a live voter, and preferred
//! leaderships are balanced across nodes like replicas (capacity-weighted, within one).
//!
//! Balance moves leadership along a path of transfers: `a` leads a shard where `b`
//! votes, `b` leads one where `c` votes, ... so a loaded node can hand one leadership to
//! an idle node even when they share no shard; the nodes in between keep their counts.

use std::collections::{BTreeMap, VecDeque};

use runnel_types::{NodeId, ShardId};

use crate::action::Action;
use crate::allocator::{Loads, Measure};
use crate::constraints::is_target;
use crate::planner::Planner;
use crate::state::{MetaState, ShardInfo};

pub(crate) fn plan_leaders(p: &mut Planner<'_>) {
    fix_preferences(p);
    let mut loads = Loads::of(&p.work, Measure::Leaders);
    let mut transfers = 0;
    while transfers < p.config.leader_transfers_max {
        let Some(path) = find_path(&p.work, &loads) else {
            return;
        };
        let (first, last) = (path[0].1, path[path.len() - 1].2);
        for (shard, from, to) in &path {
            p.emit(Action::TransferLeader {
                shard: *shard,
                from: Some(*from),
                to: *to,
            });
        }
        loads.remove(first);
        loads.add(last);
        transfers += path.len();
    }
}

/// Voters that may lead: on an `Up` node, and not being removed by the pending move.
fn leader_candidates(state: &MetaState, shard: &ShardInfo) -> Vec<NodeId> {
    let removing = shard.pending_move.as_ref().and_then(|m| m.remove);
    shard
        .voters()
        .filter(|v| Some(*v) != removing && is_target(state, *v))
        .collect()
}

/// Gives every placed shard whose preferred leader cannot lead a new one: the candidate
/// with the fewest leaderships.
fn fix_preferences(p: &mut Planner<'_>) {
    let mut loads = Loads::of(&p.work, Measure::Leaders);
    for id in p.shard_ids(|s| !s.replicas.is_empty()) {
        let shard = &p.work.shards[&id];
        let candidates = leader_candidates(&p.work, shard);
        if shard
            .preferred_leader
            .is_some_and(|l| candidates.contains(&l))
        {
            continue;
        }
        let best = candidates
            .iter()
            .copied()
            .min_by(|a, b| loads.cmp_after(*a, 1, *b, 1).then(a.cmp(b)));
        let Some(to) = best else { continue };
        let from = shard.preferred_leader;
        if p.emit(Action::TransferLeader {
            shard: id,
            from,
            to,
        }) {
            loads.add(to);
            if let Some(old) = from {
                loads.remove(old);
            }
        }
    }
}

/// The shortest chain of transfers from the most loaded node possible to a node whose
/// load, after receiving one, stays below the source's: `(shard, from, to)` steps.
fn find_path(state: &MetaState, loads: &Loads) -> Option<Vec<(ShardId, NodeId, NodeId)>> {
    // Edges: x -> y through a shard x leads and y may lead.
    let mut edges: BTreeMap<NodeId, Vec<(ShardId, NodeId)>> = BTreeMap::new();
    for (shard, _) in state.placed_shards() {
        let Some(leader) = shard.preferred_leader else {
            continue;
        };
        for to in leader_candidates(state, shard)
            .into_iter()
            .filter(|c| *c != leader)
        {
            edges.entry(leader).or_default().push((shard.id, to));
        }
    }
    for source in loads.by_load_desc() {
        let parents = reach(&edges, source);
        let best = parents
            .keys()
            .copied()
            .filter(|t| *t != source && loads.improves(source, *t))
            .min_by(|a, b| loads.cmp_after(*a, 1, *b, 1).then(a.cmp(b)));
        if let Some(target) = best {
            let mut path = Vec::new();
            let mut at = target;
            while at != source {
                let (shard, from) =
                    parents[&at].expect("every reached node but the source has a parent");
                path.push((shard, from, at));
                at = from;
            }
            path.reverse();
            return Some(path);
        }
    }
    None
}

/// Breadth-first search: every node reachable from `source`, with the edge it was
/// reached by (`None` for the source).
fn reach(
    edges: &BTreeMap<NodeId, Vec<(ShardId, NodeId)>>,
    source: NodeId,
) -> BTreeMap<NodeId, Option<(ShardId, NodeId)>> {
    let mut parents = BTreeMap::from([(source, None)]);
    let mut queue = VecDeque::from([source]);
    while let Some(x) = queue.pop_front() {
        for (shard, y) in edges.get(&x).into_iter().flatten() {
            if !parents.contains_key(y) {
                parents.insert(*y, Some((*shard, x)));
                queue.push_back(*y);
            }
        }
    }
    parents
}
