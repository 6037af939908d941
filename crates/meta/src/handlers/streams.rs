//! Stream administration: create, delete (then reclaim), update retention, activate.

use runnel_types::limits::{REPLICATION_FACTOR_MAX, RETENTION_MS_MAX, SHARDS_PER_STREAM_MAX};
use runnel_types::{HashRange, NodeId, ShardId, StreamName};

use crate::command::CommandResult;
use crate::error::MetaError;
use crate::limits::{SHARDS_MAX, STREAMS_MAX};
use crate::state::{MetaState, NodeStatus, ShardInfo, ShardState, StreamInfo, StreamStatus};

fn stream_not_found(name: &StreamName) -> MetaError {
    MetaError::not_found("stream", name)
}

pub(crate) fn create(
    state: &mut MetaState,
    name: StreamName,
    shard_count: u32,
    replication_factor: u32,
    retention_ms: u64,
    now_ms: u64,
) -> Result<CommandResult, MetaError> {
    if let Some(existing) = state.streams.get(&name) {
        let hint = if existing.status == StreamStatus::Deleting {
            " (it is being deleted; create it again once it is gone)"
        } else {
            ""
        };
        return Err(MetaError::AlreadyExists {
            kind: "stream",
            name: name.to_string(),
            hint,
        });
    }
    if !(1..=SHARDS_PER_STREAM_MAX).contains(&shard_count) {
        return Err(MetaError::invalid(
            "shard_count",
            shard_count,
            format!("must be 1 to {SHARDS_PER_STREAM_MAX}"),
        ));
    }
    validate_replication_factor(state, replication_factor)?;
    validate_retention(state, retention_ms)?;
    if state.streams.len() >= STREAMS_MAX {
        return Err(MetaError::precondition(
            format!("creating stream {name}"),
            format!("the cluster has {STREAMS_MAX} streams, the limit; delete one first"),
        ));
    }
    if state.shards.len() + shard_count as usize > SHARDS_MAX {
        return Err(MetaError::precondition(
            format!("creating stream {name} with {shard_count} shards"),
            format!(
                "the cluster has {} shards and the limit is {SHARDS_MAX}",
                state.shards.len()
            ),
        ));
    }
    let ranges = HashRange::split_even(shard_count)
        .map_err(|e| MetaError::invalid("shard_count", shard_count, e.to_string()))?;
    let mut ids = Vec::with_capacity(ranges.len());
    for range in ranges {
        let id = state.next_shard_id;
        state.next_shard_id = ShardId(id.0 + 1);
        state.shards.insert(id, new_shard(id, &name, range));
        ids.push(id);
    }
    let stream = StreamInfo {
        name: name.clone(),
        status: StreamStatus::Creating,
        retention_ms,
        replication_factor,
        created_ms: now_ms,
        shards: ids.clone(),
    };
    state.streams.insert(name, stream);
    Ok(CommandResult::StreamCreated { shards: ids })
}

fn new_shard(id: ShardId, stream: &StreamName, hash_range: HashRange) -> ShardInfo {
    ShardInfo {
        id,
        stream: stream.clone(),
        hash_range,
        parents: Vec::new(),
        state: ShardState::Open,
        starting_seq: None,
        ending_seq: None,
        replicas: Vec::new(),
        preferred_leader: None,
        leader: None,
        pending_move: None,
    }
}

fn validate_replication_factor(state: &MetaState, rf: u32) -> Result<(), MetaError> {
    if !(1..=REPLICATION_FACTOR_MAX).contains(&rf) {
        return Err(MetaError::invalid(
            "replication_factor",
            rf,
            format!("must be 1 to {REPLICATION_FACTOR_MAX}"),
        ));
    }
    let up = state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Up)
        .count();
    if rf as usize > up {
        return Err(MetaError::invalid(
            "replication_factor",
            rf,
            format!(
                "needs at least {rf} nodes Up and {up} are; add nodes or lower the replication factor"
            ),
        ));
    }
    Ok(())
}

fn validate_retention(state: &MetaState, retention_ms: u64) -> Result<(), MetaError> {
    let min = state.settings.retention_ms_min;
    if !(min..=RETENTION_MS_MAX).contains(&retention_ms) {
        return Err(MetaError::invalid(
            "retention_ms",
            retention_ms,
            format!("must be {min} to {RETENTION_MS_MAX}"),
        ));
    }
    Ok(())
}

pub(crate) fn delete(state: &mut MetaState, name: &StreamName) -> Result<CommandResult, MetaError> {
    let stream = state
        .streams
        .get_mut(name)
        .ok_or_else(|| stream_not_found(name))?;
    if stream.status == StreamStatus::Deleting {
        return Ok(CommandResult::Done);
    }
    stream.status = StreamStatus::Deleting;
    let shards = stream.shards.clone();
    for id in shards {
        if let Some(shard) = state.shards.get_mut(&id) {
            shard.pending_move = None;
            shard.preferred_leader = None;
        }
    }
    for by_stream in state.groups.values_mut() {
        by_stream.remove(name);
    }
    state.groups.retain(|_, by_stream| !by_stream.is_empty());
    let removed: Vec<NodeId> = state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Removed)
        .map(|n| n.id)
        .collect();
    for node in removed {
        forget_deleting_replicas(state, node);
    }
    collect_reclaimed(state, name);
    Ok(CommandResult::Done)
}

pub(crate) fn update_retention(
    state: &mut MetaState,
    name: &StreamName,
    retention_ms: u64,
) -> Result<CommandResult, MetaError> {
    let stream = state
        .streams
        .get(name)
        .ok_or_else(|| stream_not_found(name))?;
    if stream.status == StreamStatus::Deleting {
        return Err(MetaError::precondition(
            format!("changing the retention of stream {name}"),
            "it is being deleted",
        ));
    }
    validate_retention(state, retention_ms)?;
    state
        .streams
        .get_mut(name)
        .expect("looked up above")
        .retention_ms = retention_ms;
    Ok(CommandResult::Done)
}

pub(crate) fn mark_active(
    state: &mut MetaState,
    name: &StreamName,
) -> Result<CommandResult, MetaError> {
    let stream = state
        .streams
        .get(name)
        .ok_or_else(|| stream_not_found(name))?;
    match stream.status {
        StreamStatus::Active => return Ok(CommandResult::Done),
        StreamStatus::Deleting => {
            return Err(MetaError::precondition(
                format!("activating stream {name}"),
                "it is being deleted",
            ));
        }
        StreamStatus::Creating => {}
    }
    let leaderless = stream
        .shards
        .iter()
        .find(|id| state.shards.get(id).is_none_or(|s| s.leader.is_none()));
    if let Some(id) = leaderless {
        return Err(MetaError::precondition(
            format!("activating stream {name}"),
            format!("shard {id} has no leader yet; wait for its replicas to start"),
        ));
    }
    state.streams.get_mut(name).expect("looked up above").status = StreamStatus::Active;
    Ok(CommandResult::Done)
}

pub(crate) fn shard_reclaimed(
    state: &mut MetaState,
    shard: ShardId,
    node: NodeId,
) -> Result<CommandResult, MetaError> {
    let info = state
        .shards
        .get(&shard)
        .ok_or_else(|| MetaError::not_found("shard", shard))?;
    let deleting = state
        .stream_of(info)
        .is_some_and(|s| s.status == StreamStatus::Deleting);
    if !deleting {
        return Err(MetaError::precondition(
            format!("reclaiming shard {shard} on node {node}"),
            format!(
                "stream {} is not being deleted; a replica that leaves the desired set is deleted without a report",
                info.stream
            ),
        ));
    }
    let stream = info.stream.clone();
    state
        .shards
        .get_mut(&shard)
        .expect("looked up above")
        .replicas
        .retain(|r| r.node != node);
    collect_reclaimed(state, &stream);
    Ok(CommandResult::Done)
}

/// Drops `node`'s replicas of deleting streams (the node was removed and will never
/// report reclaiming them), then forgets what is fully reclaimed.
pub(crate) fn forget_deleting_replicas(state: &mut MetaState, node: NodeId) {
    let deleting: Vec<StreamName> = state
        .streams
        .values()
        .filter(|s| s.status == StreamStatus::Deleting)
        .map(|s| s.name.clone())
        .collect();
    for name in deleting {
        for id in state.streams[&name].shards.clone() {
            if let Some(shard) = state.shards.get_mut(&id) {
                shard.replicas.retain(|r| r.node != node);
            }
        }
        collect_reclaimed(state, &name);
    }
}

/// Forgets the shards of a deleting stream that no replica holds any more, and the
/// stream once all its shards are gone (its name can then be used again).
fn collect_reclaimed(state: &mut MetaState, name: &StreamName) {
    let Some(stream) = state.streams.get_mut(name) else {
        return;
    };
    let shards = &mut state.shards;
    stream.shards.retain(|id| {
        let empty = shards.get(id).is_none_or(|s| s.replicas.is_empty());
        if empty {
            shards.remove(id);
        }
        !empty
    });
    if stream.shards.is_empty() {
        state.streams.remove(name);
    }
}
