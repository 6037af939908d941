//! The invariants the planner protects, each a function named after what it protects.
//! `check_actions` and `check_state` run after every step of the world; `check_converged`
//! once the planner has nothing left to do.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use runnel_meta::constraints::{zone_of, zones_of};
use runnel_meta::{
    Action, MetaState, MoveReason, NodeStatus, ReplicaRole, ShardInfo, StreamStatus,
};
use runnel_types::NodeId;

use crate::world::World;

/// `known` is the state the actions were planned from, with the nodes the plan marks
/// down marked down.
pub fn check_actions(w: &World, known: &MetaState, actions: &[Action]) {
    for action in actions {
        if let Action::AddLearner {
            node,
            replaces,
            reason,
            ..
        } = action
        {
            let status = known.nodes[node].status;
            assert_eq!(
                status,
                NodeStatus::Up,
                "{action:?}: replicas go to Up nodes only"
            );
            if let (MoveReason::Repair, Some(old)) = (reason, replaces) {
                down_replicas_wait_for_the_grace_period(w, known, *old, action);
            }
        }
    }
}

fn down_replicas_wait_for_the_grace_period(
    w: &World,
    known: &MetaState,
    old: NodeId,
    action: &Action,
) {
    let n = &known.nodes[&old];
    let due = match n.status {
        NodeStatus::Removed => true,
        NodeStatus::Down => {
            n.drain_requested
                || w.now_ms - n.down_since_ms.expect("down nodes have a time")
                    >= w.config.down_grace_ms
        }
        _ => false,
    };
    assert!(
        due,
        "{action:?} replaces a replica on node {old} ({:?}) before its grace period",
        n.status
    );
}

pub fn check_state(w: &mut World) {
    let mut in_flight = 0;
    for shard in w.state.shards.values() {
        never_two_replicas_on_one_node(shard);
        let deleting = w
            .state
            .streams
            .get(&shard.stream)
            .is_none_or(|s| s.status == StreamStatus::Deleting);
        if !deleting {
            // A deleted stream's replicas (learners too) stay until reclaimed.
            at_most_one_learner_and_only_for_a_move(shard);
            the_reported_leader_is_a_voter(shard);
        }
        in_flight += usize::from(shard.pending_move.is_some());
    }
    assert!(
        in_flight <= w.config.moves_in_flight_max,
        "{in_flight} moves in flight; the limit is {}",
        w.config.moves_in_flight_max
    );
    voter_changes_keep_a_majority(w);
}

/// Shards of placed streams that have a reported leader.
pub fn led_shards(state: &MetaState) -> BTreeSet<runnel_types::ShardId> {
    state
        .placed_shards()
        .filter(|(s, _)| s.leader.is_some())
        .map(|(s, _)| s.id)
        .collect()
}

/// Placement never takes a shard's reported leader away: a shard with a leader keeps
/// one after the planner's actions apply (a move that removed the leader's replica used
/// to leave the shard leaderless with its move stuck in `Removing`: chaos seed 6).
pub fn placement_keeps_reported_leaders(
    led_before: &BTreeSet<runnel_types::ShardId>,
    after: &MetaState,
    actions: &[Action],
) {
    for id in led_before {
        if let Some(shard) = after.shards.get(id) {
            assert!(
                shard.leader.is_some(),
                "the plan {actions:?} left shard {id} without its reported leader: {shard:?}"
            );
        }
    }
}

fn the_reported_leader_is_a_voter(shard: &ShardInfo) {
    if let Some(leader) = shard.leader {
        assert_eq!(
            shard.role_of(leader.node),
            Some(ReplicaRole::Voter),
            "shard {}: the reported leader {} is not a voter: {:?}",
            shard.id,
            leader.node,
            shard.replicas
        );
    }
}

fn never_two_replicas_on_one_node(shard: &ShardInfo) {
    let nodes: BTreeSet<NodeId> = shard.replicas.iter().map(|r| r.node).collect();
    assert_eq!(
        nodes.len(),
        shard.replicas.len(),
        "shard {} has two replicas on one node: {:?}",
        shard.id,
        shard.replicas
    );
}

fn at_most_one_learner_and_only_for_a_move(shard: &ShardInfo) {
    let learners: Vec<NodeId> = shard
        .replicas
        .iter()
        .filter(|r| r.role == ReplicaRole::Learner)
        .map(|r| r.node)
        .collect();
    assert!(
        learners.len() <= 1,
        "shard {} has learners {learners:?}",
        shard.id
    );
    if let Some(l) = learners.first() {
        assert_eq!(
            shard.pending_move.as_ref().map(|m| m.add),
            Some(*l),
            "shard {}: a learner without a move",
            shard.id
        );
    }
}

/// Between two steps a shard's voters change by at most one node (a single-server
/// membership change, safe in Raft), and a shard that once had its full replication
/// factor never has fewer voters than that.
fn voter_changes_keep_a_majority(w: &mut World) {
    let mut now = BTreeMap::new();
    for (shard, stream) in w.state.placed_shards() {
        let voters: Vec<NodeId> = shard.voters().collect();
        if let Some(before) = w.last_voters.get(&shard.id) {
            let added = voters.iter().filter(|v| !before.contains(v)).count();
            let removed = before.iter().filter(|v| !voters.contains(v)).count();
            assert!(
                before.is_empty() || added + removed <= 1,
                "shard {}: voters went from {before:?} to {voters:?} in one step",
                shard.id
            );
        }
        let rf = stream.replication_factor as usize;
        if voters.len() >= rf {
            w.fully_placed.insert(shard.id);
        }
        if w.fully_placed.contains(&shard.id) {
            assert!(
                voters.len() >= rf,
                "shard {} dropped to voters {voters:?} below RF {rf}",
                shard.id
            );
        }
        now.insert(shard.id, voters);
    }
    w.last_voters = now;
}

pub fn check_converged(w: &World) {
    every_shard_has_rf_replicas_on_distinct_up_nodes(w);
    replicas_spread_over_zones(w);
    replicas_are_balanced(w);
    leaders_are_balanced(w);
    drained_and_down_nodes_hold_nothing(w);
    streams_are_active(w);
}

fn every_shard_has_rf_replicas_on_distinct_up_nodes(w: &World) {
    for (shard, stream) in w.state.placed_shards() {
        assert!(shard.pending_move.is_none());
        assert_eq!(
            shard.replicas.len(),
            stream.replication_factor as usize,
            "shard {}: {:?}",
            shard.id,
            shard.replicas
        );
        for r in &shard.replicas {
            assert_eq!(r.role, ReplicaRole::Voter);
            assert_eq!(
                w.status(r.node),
                NodeStatus::Up,
                "shard {} has a replica on node {}",
                shard.id,
                r.node
            );
        }
        let leader = shard
            .preferred_leader
            .expect("every placed shard has a preferred leader");
        assert!(shard.role_of(leader) == Some(ReplicaRole::Voter));
        assert_eq!(
            shard.leader.map(|l| l.node),
            Some(leader),
            "shard {}: the leader follows the preference",
            shard.id
        );
    }
}

fn up_nodes(w: &World) -> Vec<NodeId> {
    w.state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Up)
        .map(|n| n.id)
        .collect()
}

fn replicas_spread_over_zones(w: &World) {
    let zones: BTreeSet<_> = up_nodes(w)
        .into_iter()
        .map(|n| zone_of(&w.state, n))
        .collect();
    for (shard, stream) in w.state.placed_shards() {
        let want = zones.len().min(stream.replication_factor as usize);
        let have = zones_of(&w.state, shard, None).len();
        assert_eq!(
            have, want,
            "shard {} spans {have} zones; {want} are possible",
            shard.id
        );
    }
}

fn counts(w: &World, of: impl Fn(&ShardInfo) -> Vec<NodeId>) -> BTreeMap<NodeId, u64> {
    let mut c: BTreeMap<NodeId, u64> = up_nodes(w).into_iter().map(|n| (n, 0)).collect();
    for (shard, _) in w.state.placed_shards() {
        for n in of(shard) {
            *c.entry(n).or_insert(0) += 1;
        }
    }
    c
}

fn weight(w: &World, n: NodeId) -> u64 {
    u64::from(w.state.nodes[&n].capacity_weight)
}

/// With equal weights and no zones, replica counts are within one of each other. In
/// general: no move that keeps the zone spread would make the two nodes' weighted loads
/// closer (`(c_j + 1) / w_j < c_i / w_i`).
fn replicas_are_balanced(w: &World) {
    let c = counts(w, |s| s.replicas.iter().map(|r| r.node).collect());
    if !w.weighted && w.zones == 0 {
        let (min, max) = (c.values().min(), c.values().max());
        assert!(
            max.zip(min).is_none_or(|(a, b)| a - b <= 1),
            "replica counts {c:?}"
        );
    }
    for (shard, _) in w.state.placed_shards() {
        let spread = zones_of(&w.state, shard, None).len();
        for from in shard.replicas.iter().map(|r| r.node) {
            for (&to, &ct) in c.iter().filter(|(n, _)| !shard.has_replica(**n)) {
                let mut zones = zones_of(&w.state, shard, Some(from));
                zones.insert(zone_of(&w.state, to));
                let improving = (ct + 1) * weight(w, from) < c[&from] * weight(w, to);
                assert!(
                    zones.len() < spread || !improving,
                    "moving shard {}'s replica from node {from} to node {to} would improve balance {c:?}",
                    shard.id
                );
            }
        }
    }
}

/// Preferred leaders: no chain of transfers (x leads a shard where y votes, y leads one
/// where z votes, ...) from a node to another would make their weighted loads closer.
/// (Counts within one of each other across the whole cluster are not always reachable
/// by leader transfers alone: the replica sets can split the nodes into groups that
/// share no shard; moving replicas to fix leader balance is not done yet.)
fn leaders_are_balanced(w: &World) {
    let c = counts(w, |s| s.preferred_leader.into_iter().collect());
    let mut edges: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
    for (shard, _) in w.state.placed_shards() {
        let from = shard.preferred_leader.expect("checked above");
        edges
            .entry(from)
            .or_default()
            .extend(shard.voters().filter(|v| *v != from));
    }
    for &source in c.keys() {
        let mut seen = BTreeSet::from([source]);
        let mut todo = vec![source];
        while let Some(x) = todo.pop() {
            for y in edges.get(&x).into_iter().flatten() {
                if seen.insert(*y) {
                    todo.push(*y);
                }
            }
        }
        for t in seen.into_iter().filter(|t| *t != source) {
            let improving = (c[&t] + 1) * weight(w, source) < c[&source] * weight(w, t);
            assert!(
                !improving,
                "a chain of leader transfers from {source} to {t} would improve {c:?}"
            );
        }
    }
}

fn drained_and_down_nodes_hold_nothing(w: &World) {
    for n in w.state.nodes.values() {
        let held = w
            .state
            .placed_shards()
            .filter(|(s, _)| s.has_replica(n.id))
            .count();
        if n.drain_requested || n.status == NodeStatus::Down || n.status == NodeStatus::Removed {
            assert_eq!(
                held, 0,
                "node {} ({:?}) still holds {held} replicas",
                n.id, n.status
            );
        }
        if n.drain_requested && w.alive.contains(&n.id) {
            assert!(
                matches!(n.status, NodeStatus::Drained | NodeStatus::Removed),
                "node {} is {:?}",
                n.id,
                n.status
            );
        }
    }
}

fn streams_are_active(w: &World) {
    for s in w.state.streams.values() {
        assert!(
            s.status != StreamStatus::Creating,
            "stream {} is still creating",
            s.name
        );
    }
}
