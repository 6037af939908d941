//! Consumer-group lease assignment, a pure function. Rules, in order:
//!
//! 1. Only *eligible* shards get a lease: a shard not yet finished (its checkpoint is not
//!    `ShardEnd`) whose parents are all finished (checkpointed `ShardEnd`, or gone, that
//!    is expired past retention). So a consumer reads a key's records in order across
//!    splits and merges: children start only after their parents end.
//! 2. Balanced: with `n` eligible shards and `m` live members, every member holds
//!    `n / m` or `n / m + 1` leases.
//! 3. Sticky: a live member keeps the unexpired leases it holds, up to its quota; the
//!    members that already hold the most get the larger quotas, so the fewest leases move.
//! 4. Expired leases, leases of departed members and leases beyond a quota are freed,
//!    then handed out in shard-id order, each to the member with the most room left
//!    (ties to the smaller member id).

use std::collections::BTreeMap;

use runnel_types::ShardId;

use crate::names::MemberId;
use crate::state::{Checkpoint, ConsumerGroup, ShardInfo};

/// Assigns the eligible shards among `members` (the group's live members). `shards` are
/// the stream's existing shards. Returns shard → member for every eligible shard (empty
/// when there is no member).
pub fn assign_leases(
    group: &ConsumerGroup,
    members: &[MemberId],
    shards: &[&ShardInfo],
    now_ms: u64,
) -> BTreeMap<ShardId, MemberId> {
    let mut members: Vec<&MemberId> = members.iter().collect();
    members.sort();
    members.dedup();
    let eligible = eligible_shards(group, shards);
    if members.is_empty() || eligible.is_empty() {
        return BTreeMap::new();
    }
    // Sticky candidates: unexpired leases held by live members, per member in shard order.
    let mut held: BTreeMap<&MemberId, Vec<ShardId>> =
        members.iter().map(|m| (*m, Vec::new())).collect();
    for shard in &eligible {
        let lease = group.leases.get(shard).filter(|l| l.expiry_ms > now_ms);
        if let Some(list) = lease
            .and_then(|l| l.member.as_ref())
            .and_then(|m| held.get_mut(m))
        {
            list.push(*shard);
        }
    }
    let quotas = quotas(&held, eligible.len());
    let mut out = BTreeMap::new();
    for (member, list) in &held {
        for shard in list.iter().take(quotas[member]) {
            out.insert(*shard, (*member).clone());
        }
    }
    let mut room: BTreeMap<&MemberId, usize> = quotas
        .iter()
        .map(|(m, q)| (*m, q - held[m].len().min(*q)))
        .collect();
    let free: Vec<ShardId> = eligible
        .iter()
        .copied()
        .filter(|s| !out.contains_key(s))
        .collect();
    for shard in free {
        // Most room first; BTreeMap order breaks ties by member id.
        let best = room
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(m, _)| *m);
        let best = best.expect("members is not empty");
        *room.get_mut(best).expect("best comes from room") -= 1;
        out.insert(shard, best.clone());
    }
    out
}

/// Shards that may be leased: not finished, every parent finished or gone.
pub fn eligible_shards(group: &ConsumerGroup, shards: &[&ShardInfo]) -> Vec<ShardId> {
    let finished = |id: &ShardId| group.checkpoints.get(id) == Some(&Checkpoint::ShardEnd);
    let exists = |id: &ShardId| shards.iter().any(|s| s.id == *id);
    let mut out: Vec<ShardId> = shards
        .iter()
        .filter(|s| !finished(&s.id))
        .filter(|s| s.parents.iter().all(|p| finished(p) || !exists(p)))
        .map(|s| s.id)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `n / m` for every member, plus one for the `n % m` members holding the most leases
/// now (ties to the smaller member id).
fn quotas<'a>(
    held: &BTreeMap<&'a MemberId, Vec<ShardId>>,
    n: usize,
) -> BTreeMap<&'a MemberId, usize> {
    let m = held.len();
    let mut order: Vec<(&MemberId, usize)> = held.iter().map(|(k, v)| (*k, v.len())).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    order
        .iter()
        .enumerate()
        .map(|(i, (member, _))| (*member, n / m + usize::from(i < n % m)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use runnel_types::{HashRange, StreamName};

    use super::*;
    use crate::state::{Lease, ShardState};

    fn shard(id: u64, parents: &[u64]) -> ShardInfo {
        ShardInfo {
            id: ShardId(id),
            stream: StreamName::new("s").unwrap(),
            hash_range: HashRange::FULL,
            parents: parents.iter().map(|p| ShardId(*p)).collect(),
            state: ShardState::Open,
            starting_seq: None,
            ending_seq: None,
            replicas: vec![],
            preferred_leader: None,
            leader: None,
            pending_move: None,
        }
    }

    fn m(s: &str) -> MemberId {
        MemberId::new(s).unwrap()
    }

    fn counts(a: &BTreeMap<ShardId, MemberId>) -> BTreeMap<MemberId, usize> {
        let mut c = BTreeMap::new();
        for v in a.values() {
            *c.entry(v.clone()).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn balanced_and_sticky() {
        let shards: Vec<ShardInfo> = (1..=7).map(|i| shard(i, &[])).collect();
        let refs: Vec<&ShardInfo> = shards.iter().collect();
        let mut group = ConsumerGroup::default();
        let first = assign_leases(&group, &[m("a"), m("b")], &refs, 0);
        assert_eq!(first.len(), 7);
        let c = counts(&first);
        assert!(c.values().all(|n| *n == 3 || *n == 4), "{c:?}");
        for (s, mem) in &first {
            group.leases.insert(
                *s,
                Lease {
                    member: Some(mem.clone()),
                    expiry_ms: 100,
                    counter: 1,
                },
            );
        }
        // A third member joins: only the excess moves, and to the newcomer.
        let second = assign_leases(&group, &[m("a"), m("b"), m("c")], &refs, 50);
        let moved: Vec<_> = first
            .iter()
            .filter(|(s, mem)| second[*s] != **mem)
            .collect();
        assert!(moved.iter().all(|(s, _)| second[*s] == m("c")));
        assert_eq!(counts(&second)[&m("c")], 2);
        // Leases expire: reassigned among the members given.
        let third = assign_leases(&group, &[m("c")], &refs, 100);
        assert!(third.values().all(|v| *v == m("c")) && third.len() == 7);
        assert!(assign_leases(&group, &[], &refs, 0).is_empty());
    }

    #[test]
    fn children_wait_for_parents() {
        let shards = [
            shard(1, &[]),
            shard(2, &[1]),
            shard(3, &[1]),
            shard(4, &[9]),
        ];
        let refs: Vec<&ShardInfo> = shards.iter().collect();
        let mut group = ConsumerGroup::default();
        let a = assign_leases(&group, &[m("a")], &refs, 0);
        // Shard 4's parent 9 is gone (expired), so 4 is eligible.
        assert_eq!(
            a.keys().copied().collect::<Vec<_>>(),
            vec![ShardId(1), ShardId(4)]
        );
        group.checkpoints.insert(ShardId(1), Checkpoint::ShardEnd);
        let b = assign_leases(&group, &[m("a")], &refs, 0);
        assert_eq!(
            b.keys().copied().collect::<Vec<_>>(),
            vec![ShardId(2), ShardId(3), ShardId(4)]
        );
    }
}
