//! The `ConsumerGroups` service: leases and checkpoints kept in the meta state.
//!
//! `JoinGroup` is also the heartbeat: a member this node's state shows live proposes
//! `GroupHeartbeat` (which keeps its session timeout), any other member `JoinGroup`.
//! Either way the placement service rebalances the group's leases and answers with the
//! member's; a lease's counter fences a member that lost it (`Checkpoint` with a stale
//! counter is `LEASE_LOST`).

use std::sync::Arc;

use runnel_meta::{
    Checkpoint, Command, CommandResult, ConsumerGroup, GroupName, LeaseGrant, MemberId, MetaState,
};
use runnel_proto::v1::consumer_groups_server::ConsumerGroups;
use runnel_proto::v1::{
    CheckpointRequest, CheckpointResponse, GetCheckpointsRequest, GetCheckpointsResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, ShardCheckpoint, ShardLease,
};
use runnel_types::{ShardId, StreamName};
use tonic::{Request, Response, Status};

use super::{observe, record_shard, router, validate};
use crate::context::{NodeContext, now_ms};
use crate::error::ServerError;

/// Heartbeats per session timeout the answer asks for.
pub const HEARTBEATS_PER_SESSION: u64 = 3;

pub struct ConsumerGroupsService {
    ctx: Arc<NodeContext>,
}

impl ConsumerGroupsService {
    pub fn new(ctx: Arc<NodeContext>) -> ConsumerGroupsService {
        ConsumerGroupsService { ctx }
    }
}

#[tonic::async_trait]
impl ConsumerGroups for ConsumerGroupsService {
    async fn join_group(
        &self,
        req: Request<JoinGroupRequest>,
    ) -> Result<Response<JoinGroupResponse>, Status> {
        observe(&self.ctx, "JoinGroup", 0, join(&self.ctx, req.into_inner())).await
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        observe(
            &self.ctx,
            "Checkpoint",
            0,
            checkpoint(&self.ctx, req.into_inner()),
        )
        .await
    }

    async fn get_checkpoints(
        &self,
        req: Request<GetCheckpointsRequest>,
    ) -> Result<Response<GetCheckpointsResponse>, Status> {
        let handler = async {
            let req = req.into_inner();
            let stream = validate::stream_name("stream_name", &req.stream_name)?;
            let group = validate::group_name(&req.group_name)?;
            record_shard(stream.as_str(), None);
            super::check_stream(&self.ctx, &stream, false).await?;
            let checkpoints = self.ctx.placement.read(|st| {
                router::stream(st, &stream)?;
                let g = group_of(st, &group, &stream)?;
                Ok::<_, ServerError>(checkpoints(g))
            })?;
            Ok(GetCheckpointsResponse { checkpoints })
        };
        observe(&self.ctx, "GetCheckpoints", 0, handler).await
    }

    async fn leave_group(
        &self,
        req: Request<LeaveGroupRequest>,
    ) -> Result<Response<LeaveGroupResponse>, Status> {
        let handler = async {
            let req = req.into_inner();
            let (stream, group, member) =
                member_fields(&req.stream_name, &req.group_name, &req.member_id)?;
            record_shard(stream.as_str(), None);
            let cmd = Command::LeaveGroup {
                group,
                stream,
                member,
                now_ms: now_ms(),
            };
            self.ctx.placement.propose(cmd).await?;
            Ok(LeaveGroupResponse {})
        };
        observe(&self.ctx, "LeaveGroup", 0, handler).await
    }

    async fn list_groups(
        &self,
        req: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let handler = async {
            let stream = validate::stream_name("stream_name", &req.get_ref().stream_name)?;
            record_shard(stream.as_str(), None);
            super::check_stream(&self.ctx, &stream, false).await?;
            let group_names = self.ctx.placement.read(|st| {
                router::stream(st, &stream)?;
                Ok::<_, ServerError>(groups_of(st, &stream))
            })?;
            Ok(ListGroupsResponse { group_names })
        };
        observe(&self.ctx, "ListGroups", 0, handler).await
    }
}

fn member_fields(
    stream: &str,
    group: &str,
    member: &str,
) -> Result<(StreamName, GroupName, MemberId), ServerError> {
    Ok((
        validate::stream_name("stream_name", stream)?,
        validate::group_name(group)?,
        validate::member_id(member)?,
    ))
}

async fn join(ctx: &NodeContext, req: JoinGroupRequest) -> Result<JoinGroupResponse, ServerError> {
    let (stream, group, member) = member_fields(&req.stream_name, &req.group_name, &req.member_id)?;
    let session_timeout_ms = validate::session_timeout_ms(req.session_timeout_ms)?;
    record_shard(stream.as_str(), None);
    let now = now_ms();
    let live = ctx.placement.read(|st| {
        st.groups
            .get(&group)
            .and_then(|m| m.get(&stream))
            .and_then(|g| g.members.get(&member))
            .is_some_and(|m| !m.expired(now) && m.session_timeout_ms == session_timeout_ms)
    });
    let join = Command::JoinGroup {
        group: group.clone(),
        stream: stream.clone(),
        member: member.clone(),
        session_timeout_ms,
        now_ms: now,
    };
    let result = if live {
        let heartbeat = Command::GroupHeartbeat {
            group: group.clone(),
            stream: stream.clone(),
            member: member.clone(),
            now_ms: now,
        };
        match ctx.placement.propose(heartbeat).await {
            // The session ran out between the look and the heartbeat: join again.
            Err(ServerError::NotFound { .. }) => ctx.placement.propose(join).await?,
            other => other?,
        }
    } else {
        ctx.placement.propose(join).await?
    };
    let CommandResult::Leases { leases } = result else {
        return Err(ServerError::Internal(format!(
            "joining group {group} answered {result:?}, not leases"
        )));
    };
    let leases = ctx
        .placement
        .read(|st| shard_leases(st, &group, &stream, &leases));
    Ok(JoinGroupResponse {
        leases,
        heartbeat_interval_ms: session_timeout_ms / HEARTBEATS_PER_SESSION,
    })
}

/// The member's leases as the API shows them; `ready` once every parent of the shard
/// is read to its end by the group (or gone).
pub fn shard_leases(
    st: &MetaState,
    group: &GroupName,
    stream: &StreamName,
    grants: &[LeaseGrant],
) -> Vec<ShardLease> {
    let g = st.groups.get(group).and_then(|m| m.get(stream));
    grants
        .iter()
        .map(|l| ShardLease {
            shard_id: l.shard.kinesis_name(),
            lease_counter: l.counter,
            checkpoint_sequence_number: l.checkpoint.map(|s| s.to_string()).unwrap_or_default(),
            ready: parents_done(st, g, l.shard),
        })
        .collect()
}

fn parents_done(st: &MetaState, g: Option<&ConsumerGroup>, shard: ShardId) -> bool {
    let Some(info) = st.shards.get(&shard) else {
        return true;
    };
    info.parents.iter().all(|p| {
        !st.shards.contains_key(p)
            || g.is_some_and(|g| g.checkpoints.get(p) == Some(&Checkpoint::ShardEnd))
    })
}

async fn checkpoint(
    ctx: &NodeContext,
    req: CheckpointRequest,
) -> Result<CheckpointResponse, ServerError> {
    let (stream, group, member) = member_fields(&req.stream_name, &req.group_name, &req.member_id)?;
    let shard = router::parse_shard_id("shard_id", &req.shard_id)?;
    record_shard(stream.as_str(), Some(shard));
    let position = if req.shard_end {
        Checkpoint::ShardEnd
    } else {
        Checkpoint::At(validate::sequence_number(
            "sequence_number",
            &req.sequence_number,
        )?)
    };
    ctx.placement
        .read(|st| router::shard_of(st, &stream, shard).map(drop))?;
    ctx.placement
        .propose(Command::Checkpoint {
            group,
            stream,
            member,
            shard,
            lease_counter: req.lease_counter,
            position,
            now_ms: now_ms(),
        })
        .await?;
    Ok(CheckpointResponse {})
}

fn group_of<'a>(
    st: &'a MetaState,
    group: &GroupName,
    stream: &StreamName,
) -> Result<&'a ConsumerGroup, ServerError> {
    st.groups
        .get(group)
        .and_then(|m| m.get(stream))
        .ok_or_else(|| ServerError::NotFound {
            kind: "consumer group",
            name: format!("{group} on stream {stream}"),
        })
}

/// Every shard the group holds a lease or a checkpoint on, in shard order.
pub fn checkpoints(g: &ConsumerGroup) -> Vec<ShardCheckpoint> {
    let mut shards: Vec<ShardId> = g
        .leases
        .keys()
        .chain(g.checkpoints.keys())
        .copied()
        .collect();
    shards.sort();
    shards.dedup();
    shards
        .into_iter()
        .map(|shard| {
            let lease = g.leases.get(&shard);
            let cp = g.checkpoints.get(&shard);
            ShardCheckpoint {
                shard_id: shard.kinesis_name(),
                sequence_number: match cp {
                    Some(Checkpoint::At(seq)) => seq.to_string(),
                    _ => String::new(),
                },
                owner_member_id: lease
                    .and_then(|l| l.member.as_ref())
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                lease_expires_ms: lease
                    .filter(|l| l.member.is_some())
                    .map_or(0, |l| l.expiry_ms),
                shard_end: cp == Some(&Checkpoint::ShardEnd),
            }
        })
        .collect()
}

/// The groups consuming `stream`, by name.
pub fn groups_of(st: &MetaState, stream: &StreamName) -> Vec<String> {
    st.groups
        .iter()
        .filter(|(_, by_stream)| by_stream.contains_key(stream))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use runnel_meta::{Lease, NodeLabels, apply};
    use runnel_types::{LogIndex, NodeId, SeqNo};

    #[test]
    fn checkpoints_merge_leases_and_positions() {
        let mut g = ConsumerGroup::default();
        let m = MemberId::new("m1").unwrap();
        g.leases.insert(
            ShardId(2),
            Lease {
                member: Some(m.clone()),
                expiry_ms: 99,
                counter: 3,
            },
        );
        g.leases.insert(
            ShardId(3),
            Lease {
                member: None,
                expiry_ms: 50,
                counter: 1,
            },
        );
        g.checkpoints.insert(ShardId(1), Checkpoint::ShardEnd);
        g.checkpoints
            .insert(ShardId(2), Checkpoint::At(SeqNo::new(LogIndex(4), 1)));
        let cps = checkpoints(&g);
        let ids: Vec<&str> = cps.iter().map(|c| c.shard_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "shardId-000000000001",
                "shardId-000000000002",
                "shardId-000000000003"
            ]
        );
        assert!(cps[0].shard_end && cps[0].owner_member_id.is_empty());
        assert_eq!(
            cps[1].sequence_number,
            SeqNo::new(LogIndex(4), 1).to_string()
        );
        assert_eq!(
            (cps[1].owner_member_id.as_str(), cps[1].lease_expires_ms),
            ("m1", 99)
        );
        assert_eq!(cps[2].lease_expires_ms, 0);
    }

    #[test]
    fn a_child_is_ready_once_its_parents_are_done() {
        let mut st = MetaState::default();
        apply(
            &mut st,
            Command::RegisterNode {
                node: NodeId(1),
                address: "n1:7100".into(),
                labels: NodeLabels::default(),
                capacity_weight: 100,
                now_ms: 1,
            },
        )
        .unwrap();
        apply(
            &mut st,
            Command::Heartbeat {
                node: NodeId(1),
                now_ms: 1,
                load: Default::default(),
                leaders: vec![],
            },
        )
        .unwrap();
        let name = StreamName::new("s").unwrap();
        apply(
            &mut st,
            Command::CreateStream {
                name: name.clone(),
                shard_count: 1,
                replication_factor: 1,
                retention_ms: 24 * 3_600_000,
                now_ms: 1,
            },
        )
        .unwrap();
        let parent = st.streams[&name].shards[0];
        let mut child = st.shards[&parent].clone();
        child.id = ShardId(77);
        child.parents = vec![parent];
        st.shards.insert(child.id, child);
        let mut g = ConsumerGroup::default();
        assert!(parents_done(&st, Some(&g), parent));
        assert!(!parents_done(&st, Some(&g), ShardId(77)));
        g.checkpoints.insert(parent, Checkpoint::At(SeqNo(5)));
        assert!(!parents_done(&st, Some(&g), ShardId(77)));
        g.checkpoints.insert(parent, Checkpoint::ShardEnd);
        assert!(parents_done(&st, Some(&g), ShardId(77)));
        st.shards.remove(&parent);
        assert!(
            parents_done(&st, None, ShardId(77)),
            "a parent past retention is done"
        );
    }
}
