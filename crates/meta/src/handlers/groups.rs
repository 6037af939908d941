//! Consumer groups: join, heartbeat, leave, checkpoint. Every command on a group first
//! drops members whose session expired, then reassigns leases with
//! [`crate::assign_leases`].

use runnel_types::{ShardId, StreamName};

use crate::command::{CommandResult, LeaseGrant};
use crate::error::MetaError;
use crate::leases::assign_leases;
use crate::limits::{
    GROUP_MEMBERS_MAX, GROUPS_MAX, SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN,
};
use crate::names::{GroupName, MemberId};
use crate::state::{
    Checkpoint, ConsumerGroup, GroupMember, Lease, MetaState, ShardInfo, ShardState, StreamStatus,
};

pub(crate) struct CheckpointAt {
    pub shard: ShardId,
    pub lease_counter: u64,
    pub position: Checkpoint,
    pub now_ms: u64,
}

fn group_not_found(group: &GroupName, stream: &StreamName) -> MetaError {
    MetaError::not_found("consumer group", format!("{group} on stream {stream}"))
}

fn member_not_found(group: &GroupName, member: &MemberId) -> MetaError {
    MetaError::not_found(
        "consumer group member",
        format!("{member} of group {group} (join the group again)"),
    )
}

/// The group and a member whose session is still live.
fn live_member<'a>(
    state: &'a MetaState,
    group: &GroupName,
    stream: &StreamName,
    member: &MemberId,
    now_ms: u64,
) -> Result<(&'a ConsumerGroup, &'a GroupMember), MetaError> {
    let g = state
        .groups
        .get(group)
        .and_then(|m| m.get(stream))
        .ok_or_else(|| group_not_found(group, stream))?;
    let m = g
        .members
        .get(member)
        .filter(|m| !m.expired(now_ms))
        .ok_or_else(|| member_not_found(group, member))?;
    Ok((g, m))
}

pub(crate) fn join(
    state: &mut MetaState,
    group: GroupName,
    stream: StreamName,
    member: MemberId,
    session_timeout_ms: u64,
    now_ms: u64,
) -> Result<CommandResult, MetaError> {
    match state.streams.get(&stream) {
        None => return Err(MetaError::not_found("stream", &stream)),
        Some(s) if s.status == StreamStatus::Deleting => {
            return Err(MetaError::precondition(
                format!("joining group {group}"),
                format!("stream {stream} is being deleted"),
            ));
        }
        Some(_) => {}
    }
    if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&session_timeout_ms) {
        return Err(MetaError::invalid(
            "session_timeout_ms",
            session_timeout_ms,
            format!("must be {SESSION_TIMEOUT_MS_MIN} to {SESSION_TIMEOUT_MS_MAX}"),
        ));
    }
    let existing = state.groups.get(&group).and_then(|m| m.get(&stream));
    if existing.is_none() && state.groups.values().map(|m| m.len()).sum::<usize>() >= GROUPS_MAX {
        return Err(MetaError::precondition(
            format!("creating group {group} on stream {stream}"),
            format!("the cluster has {GROUPS_MAX} consumer groups, the limit"),
        ));
    }
    let live = existing.map_or(0, |g| {
        g.members.values().filter(|m| !m.expired(now_ms)).count()
    });
    let known = existing.is_some_and(|g| g.members.contains_key(&member));
    if !known && live >= GROUP_MEMBERS_MAX {
        return Err(MetaError::precondition(
            format!("joining group {group}"),
            format!("it has {live} members, the limit ({GROUP_MEMBERS_MAX})"),
        ));
    }
    let g = state
        .groups
        .entry(group.clone())
        .or_default()
        .entry(stream.clone())
        .or_default();
    g.members.insert(
        member.clone(),
        GroupMember {
            session_timeout_ms,
            last_heartbeat_ms: now_ms,
        },
    );
    Ok(rebalance_and_grant(state, &group, &stream, &member, now_ms))
}

pub(crate) fn heartbeat(
    state: &mut MetaState,
    group: &GroupName,
    stream: &StreamName,
    member: &MemberId,
    now_ms: u64,
) -> Result<CommandResult, MetaError> {
    live_member(state, group, stream, member, now_ms)?;
    let g = group_mut(state, group, stream);
    g.members
        .get_mut(member)
        .expect("checked by live_member")
        .last_heartbeat_ms = now_ms;
    Ok(rebalance_and_grant(state, group, stream, member, now_ms))
}

pub(crate) fn leave(
    state: &mut MetaState,
    group: &GroupName,
    stream: &StreamName,
    member: &MemberId,
    now_ms: u64,
) -> Result<CommandResult, MetaError> {
    let g = state
        .groups
        .get(group)
        .and_then(|m| m.get(stream))
        .ok_or_else(|| group_not_found(group, stream))?;
    if !g.members.contains_key(member) {
        return Err(member_not_found(group, member));
    }
    group_mut(state, group, stream).members.remove(member);
    rebalance(state, group, stream, now_ms);
    Ok(CommandResult::Done)
}

pub(crate) fn checkpoint(
    state: &mut MetaState,
    group: &GroupName,
    stream: &StreamName,
    member: &MemberId,
    at: CheckpointAt,
) -> Result<CommandResult, MetaError> {
    let (g, _) = live_member(state, group, stream, member, at.now_ms)?;
    let lease = g.leases.get(&at.shard);
    let holds = lease.is_some_and(|l| {
        l.member.as_ref() == Some(member)
            && l.counter == at.lease_counter
            && l.expiry_ms > at.now_ms
    });
    if !holds {
        return Err(MetaError::LeaseNotHeld {
            group: group.to_string(),
            member: member.to_string(),
            shard: at.shard,
            counter: at.lease_counter,
        });
    }
    if let Some(current) = g.checkpoints.get(&at.shard)
        && at.position < *current
    {
        return Err(MetaError::CheckpointRegression {
            group: group.to_string(),
            shard: at.shard,
            current: describe(current),
            proposed: describe(&at.position),
        });
    }
    let open = state
        .shards
        .get(&at.shard)
        .is_none_or(|s| s.state == ShardState::Open);
    if at.position == Checkpoint::ShardEnd && open {
        return Err(MetaError::invalid(
            "checkpoint",
            "SHARD_END",
            format!("shard {} is open; only a closed shard has an end", at.shard),
        ));
    }
    group_mut(state, group, stream)
        .checkpoints
        .insert(at.shard, at.position);
    if at.position == Checkpoint::ShardEnd {
        rebalance(state, group, stream, at.now_ms);
    }
    Ok(CommandResult::Done)
}

fn describe(c: &Checkpoint) -> String {
    match c {
        Checkpoint::At(seq) => seq.to_string(),
        Checkpoint::ShardEnd => "SHARD_END".into(),
    }
}

fn group_mut<'a>(
    state: &'a mut MetaState,
    group: &GroupName,
    stream: &StreamName,
) -> &'a mut ConsumerGroup {
    state
        .groups
        .get_mut(group)
        .and_then(|m| m.get_mut(stream))
        .expect("the caller checked the group exists")
}

/// Rebalances, renews the member's leases, and returns them.
fn rebalance_and_grant(
    state: &mut MetaState,
    group: &GroupName,
    stream: &StreamName,
    member: &MemberId,
    now_ms: u64,
) -> CommandResult {
    rebalance(state, group, stream, now_ms);
    let g = group_mut(state, group, stream);
    let timeout = g.members.get(member).map_or(0, |m| m.session_timeout_ms);
    let mut leases = Vec::new();
    for (shard, lease) in g
        .leases
        .iter_mut()
        .filter(|(_, l)| l.member.as_ref() == Some(member))
    {
        lease.expiry_ms = now_ms.saturating_add(timeout);
        let checkpoint = match g.checkpoints.get(shard) {
            Some(Checkpoint::At(seq)) => Some(*seq),
            _ => None,
        };
        leases.push(LeaseGrant {
            shard: *shard,
            counter: lease.counter,
            expiry_ms: lease.expiry_ms,
            checkpoint,
        });
    }
    CommandResult::Leases { leases }
}

/// Drops expired members and reassigns the group's leases.
fn rebalance(state: &mut MetaState, group: &GroupName, stream: &StreamName, now_ms: u64) {
    let shard_ids = state
        .streams
        .get(stream)
        .map(|s| s.shards.clone())
        .unwrap_or_default();
    let shards: Vec<&ShardInfo> = shard_ids
        .iter()
        .filter_map(|id| state.shards.get(id))
        .collect();
    let Some(g) = state.groups.get(group).and_then(|m| m.get(stream)) else {
        return;
    };
    let members: Vec<MemberId> = g
        .members
        .iter()
        .filter(|(_, m)| !m.expired(now_ms))
        .map(|(k, _)| k.clone())
        .collect();
    let assignment = assign_leases(g, &members, &shards, now_ms);
    let g = state
        .groups
        .get_mut(group)
        .and_then(|m| m.get_mut(stream))
        .expect("looked up above");
    g.members.retain(|_, m| !m.expired(now_ms));
    // Shards gone (expired or reclaimed) need neither a lease nor a checkpoint.
    g.leases.retain(|s, _| shard_ids.contains(s));
    g.checkpoints.retain(|s, _| shard_ids.contains(s));
    for (shard, lease) in g.leases.iter_mut() {
        if !assignment.contains_key(shard) {
            lease.member = None;
        }
    }
    for (shard, member) in assignment {
        let timeout = g.members.get(&member).map_or(0, |m| m.session_timeout_ms);
        let lease = g.leases.entry(shard).or_insert(Lease {
            member: None,
            expiry_ms: 0,
            counter: 0,
        });
        let kept = lease.member.as_ref() == Some(&member) && lease.expiry_ms > now_ms;
        if !kept {
            *lease = Lease {
                member: Some(member),
                expiry_ms: now_ms.saturating_add(timeout),
                counter: lease.counter + 1,
            };
        }
    }
}
