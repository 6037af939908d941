//! The `StreamAdmin` service. Any node answers from its applied meta state; changes are
//! proposed to the placement service, which answers once they are applied here, so the
//! description that follows a change shows it.

use std::sync::Arc;

use runnel_meta::{
    Command, MetaState, NodeStatus, ReplicaRole, ShardInfo, ShardState, StreamInfo, StreamStatus,
};
use runnel_proto::v1::stream_admin_server::StreamAdmin;
use runnel_proto::v1::{
    CreateStreamRequest, CreateStreamResponse, DeleteStreamRequest, DeleteStreamResponse,
    DescribeStreamRequest, DescribeStreamResponse, HashKeyRange, LeaderHint, ListShardsRequest,
    ListShardsResponse, ListStreamsRequest, ListStreamsResponse, Replica, SequenceNumberRange,
    Shard, StreamDescription, UpdateRetentionRequest, UpdateRetentionResponse,
};
use runnel_types::{GroupId, LogIndex, NodeId, SeqNo, ShardId, StreamName};
use tonic::{Request, Response, Status};

use super::{observe, record_shard, router, validate};
use crate::context::{NodeContext, now_ms};
use crate::error::ServerError;

pub struct StreamAdminService {
    ctx: Arc<NodeContext>,
}

impl StreamAdminService {
    pub fn new(ctx: Arc<NodeContext>) -> StreamAdminService {
        StreamAdminService { ctx }
    }
}

#[tonic::async_trait]
impl StreamAdmin for StreamAdminService {
    async fn create_stream(
        &self,
        req: Request<CreateStreamRequest>,
    ) -> Result<Response<CreateStreamResponse>, Status> {
        observe(
            &self.ctx,
            "CreateStream",
            0,
            create(&self.ctx, req.into_inner()),
        )
        .await
    }

    async fn describe_stream(
        &self,
        req: Request<DescribeStreamRequest>,
    ) -> Result<Response<DescribeStreamResponse>, Status> {
        let handler = async {
            let name = validate::stream_name("stream_name", &req.get_ref().stream_name)?;
            record_shard(name.as_str(), None);
            super::check_stream(&self.ctx, &name, false).await?;
            Ok(DescribeStreamResponse {
                stream: Some(describe(&self.ctx, &name)?),
            })
        };
        observe(&self.ctx, "DescribeStream", 0, handler).await
    }

    async fn list_streams(
        &self,
        req: Request<ListStreamsRequest>,
    ) -> Result<Response<ListStreamsResponse>, Status> {
        let handler = async {
            let req = req.into_inner();
            let limit = validate::list_streams_limit(req.limit)?;
            let after = validate::exclusive_start(&req.exclusive_start_stream_name)?;
            let (stream_names, has_more) = self
                .ctx
                .placement
                .read(|st| list_page(st, after.as_ref(), limit));
            Ok(ListStreamsResponse {
                stream_names,
                has_more,
            })
        };
        observe(&self.ctx, "ListStreams", 0, handler).await
    }

    async fn delete_stream(
        &self,
        req: Request<DeleteStreamRequest>,
    ) -> Result<Response<DeleteStreamResponse>, Status> {
        let handler = async {
            let name = validate::stream_name("stream_name", &req.get_ref().stream_name)?;
            record_shard(name.as_str(), None);
            self.ctx
                .placement
                .propose(Command::DeleteStream { name })
                .await?;
            Ok(DeleteStreamResponse {})
        };
        observe(&self.ctx, "DeleteStream", 0, handler).await
    }

    async fn update_retention(
        &self,
        req: Request<UpdateRetentionRequest>,
    ) -> Result<Response<UpdateRetentionResponse>, Status> {
        observe(
            &self.ctx,
            "UpdateRetention",
            0,
            update_retention(&self.ctx, req.into_inner()),
        )
        .await
    }

    async fn list_shards(
        &self,
        req: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        let handler = async {
            let name = validate::stream_name("stream_name", &req.get_ref().stream_name)?;
            record_shard(name.as_str(), None);
            super::check_stream(&self.ctx, &name, false).await?;
            let shards = describe(&self.ctx, &name)?.shards;
            Ok(ListShardsResponse { shards })
        };
        observe(&self.ctx, "ListShards", 0, handler).await
    }
}

async fn create(
    ctx: &NodeContext,
    req: CreateStreamRequest,
) -> Result<CreateStreamResponse, ServerError> {
    let name = validate::stream_name("stream_name", &req.stream_name)?;
    record_shard(name.as_str(), None);
    let shard_count = validate::shard_count(req.shard_count)?;
    let look = || {
        ctx.placement.read(|st| {
            let up = st
                .nodes
                .values()
                .filter(|n| n.status == NodeStatus::Up)
                .count();
            (up, st.settings.retention_ms_min)
        })
    };
    let (mut nodes_up, mut retention_min) = look();
    if req.replication_factor as usize > nodes_up {
        // About to refuse on this node's copy of the meta state, which may lag the
        // leader's (a node that just came up; `runnel dev` hit this right after
        // seeing every node up through another node): catch up first.
        if let Err(e) = ctx.placement.read_barrier().await {
            tracing::debug!(error = %e, "read barrier failed; answering from the local state");
        }
        (nodes_up, retention_min) = look();
    }
    let replication_factor =
        validate::replication_factor(req.replication_factor, ctx.default_replication, nodes_up)?;
    let retention_ms = validate::retention_ms(req.retention_ms, retention_min, true)?;
    ctx.placement
        .propose(Command::CreateStream {
            name: name.clone(),
            shard_count,
            replication_factor,
            retention_ms,
            now_ms: now_ms(),
        })
        .await?;
    Ok(CreateStreamResponse {
        stream: Some(describe(ctx, &name)?),
    })
}

async fn update_retention(
    ctx: &NodeContext,
    req: UpdateRetentionRequest,
) -> Result<UpdateRetentionResponse, ServerError> {
    let name = validate::stream_name("stream_name", &req.stream_name)?;
    record_shard(name.as_str(), None);
    let retention_min = ctx.placement.read(|st| st.settings.retention_ms_min);
    let retention_ms = validate::retention_ms(req.retention_ms, retention_min, false)?;
    ctx.placement
        .propose(Command::UpdateRetention {
            name: name.clone(),
            retention_ms,
        })
        .await?;
    Ok(UpdateRetentionResponse {
        stream: Some(describe(ctx, &name)?),
    })
}

/// One page of stream names after `after`, and whether more follow.
pub fn list_page(st: &MetaState, after: Option<&StreamName>, limit: usize) -> (Vec<String>, bool) {
    use std::ops::Bound::{Excluded, Unbounded};
    let start = after.map_or(Unbounded, Excluded);
    let mut names = st
        .streams
        .range((start, Unbounded))
        .map(|(n, _)| n.to_string());
    let page: Vec<String> = names.by_ref().take(limit).collect();
    let has_more = names.next().is_some();
    (page, has_more)
}

/// What this node's own replica of a shard knows: its leader view and first index.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalView {
    pub leader: Option<NodeId>,
    pub first_index: Option<LogIndex>,
}

/// The description of a stream, from the applied state and the local replicas.
pub fn describe(ctx: &NodeContext, name: &StreamName) -> Result<StreamDescription, ServerError> {
    let ids = ctx
        .placement
        .read(|st| router::stream(st, name).map(|s| s.shards.clone()))?;
    let local: Vec<(ShardId, LocalView)> =
        ids.iter().map(|id| (*id, local_view(ctx, *id))).collect();
    ctx.placement.read(|st| {
        let stream = router::stream(st, name)?;
        Ok(description(st, stream, |id| {
            local
                .iter()
                .find(|(s, _)| *s == id)
                .map(|(_, v)| *v)
                .unwrap_or_default()
        }))
    })
}

fn local_view(ctx: &NodeContext, shard: ShardId) -> LocalView {
    match ctx.registry.group(GroupId::from(shard)) {
        Ok(g) => LocalView {
            leader: g.leader(),
            first_index: g.first_index(),
        },
        Err(_) => LocalView::default(),
    }
}

/// A stream's description (pure).
pub fn description(
    st: &MetaState,
    stream: &StreamInfo,
    local: impl Fn(ShardId) -> LocalView,
) -> StreamDescription {
    let shards: Vec<Shard> = stream
        .shards
        .iter()
        .filter_map(|id| st.shards.get(id))
        .map(|s| shard(st, s, local(s.id)))
        .collect();
    StreamDescription {
        stream_name: stream.name.to_string(),
        status: stream_status(stream.status) as i32,
        replication_factor: stream.replication_factor,
        retention_ms: stream.retention_ms,
        created_ms: stream.created_ms,
        open_shard_count: shards.iter().filter(|s| s.open).count() as u32,
        shards,
    }
}

fn stream_status(s: StreamStatus) -> runnel_proto::v1::StreamStatus {
    match s {
        StreamStatus::Creating => runnel_proto::v1::StreamStatus::Creating,
        StreamStatus::Active => runnel_proto::v1::StreamStatus::Active,
        StreamStatus::Deleting => runnel_proto::v1::StreamStatus::Deleting,
    }
}

/// One shard as the API shows it. The leader: this node's replica's view when it has
/// one (freshest), else the last reported one. The starting sequence number: the oldest
/// retained entry of the local replica, else the one the meta state recorded, else 0.
pub fn shard(st: &MetaState, s: &ShardInfo, local: LocalView) -> Shard {
    let leader = local
        .leader
        .or(s.leader.map(|l| l.node))
        .and_then(|n| st.nodes.get(&n).map(|info| (n, info.address.clone())))
        .map(|(n, address)| LeaderHint {
            node_id: n.0,
            address,
        });
    let starting = local
        .first_index
        .map(|i| SeqNo::new(i, 0))
        .or(s.starting_seq)
        .unwrap_or_default();
    Shard {
        shard_id: s.id.kinesis_name(),
        hash_key_range: Some(HashKeyRange {
            starting_hash_key: s.hash_range.start.to_string(),
            ending_hash_key: s.hash_range.end.to_string(),
        }),
        parent_shard_ids: s.parents.iter().map(|p| p.kinesis_name()).collect(),
        open: s.state == ShardState::Open,
        sequence_number_range: Some(SequenceNumberRange {
            starting_sequence_number: starting.to_string(),
            ending_sequence_number: s.ending_seq.map(|e| e.to_string()),
        }),
        leader,
        replicas: s
            .replicas
            .iter()
            .map(|r| Replica {
                node_id: r.node.0,
                address: st
                    .nodes
                    .get(&r.node)
                    .map(|n| n.address.clone())
                    .unwrap_or_default(),
                role: match r.role {
                    ReplicaRole::Voter => "voter",
                    ReplicaRole::Learner => "learner",
                }
                .into(),
            })
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use runnel_meta::{NodeLabels, ReportedLeader, apply};
    use runnel_types::Term;

    fn state(names: &[&str]) -> MetaState {
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
                now_ms: 2,
                load: Default::default(),
                leaders: vec![],
            },
        )
        .unwrap();
        for n in names {
            apply(
                &mut st,
                Command::CreateStream {
                    name: StreamName::new(*n).unwrap(),
                    shard_count: 2,
                    replication_factor: 1,
                    retention_ms: 24 * 3_600_000,
                    now_ms: 5,
                },
            )
            .unwrap();
        }
        st
    }

    #[test]
    fn pages_by_exclusive_start_name() {
        let st = state(&["a", "b", "c", "d", "e"]);
        assert_eq!(
            list_page(&st, None, 2),
            (vec!["a".into(), "b".into()], true)
        );
        let b = StreamName::new("b").unwrap();
        assert_eq!(
            list_page(&st, Some(&b), 2),
            (vec!["c".into(), "d".into()], true)
        );
        let d = StreamName::new("d").unwrap();
        assert_eq!(list_page(&st, Some(&d), 2), (vec!["e".into()], false));
        let bb = StreamName::new("bb").unwrap();
        assert_eq!(list_page(&st, Some(&bb), 100).0, vec!["c", "d", "e"]);
        let z = StreamName::new("z").unwrap();
        assert_eq!(list_page(&st, Some(&z), 10), (vec![], false));
        assert_eq!(
            list_page(&st, None, 5),
            (
                vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
                false
            )
        );
    }

    #[test]
    fn descriptions_show_ranges_leaders_and_replicas() {
        let mut st = state(&["orders"]);
        let name = StreamName::new("orders").unwrap();
        let ids = st.streams[&name].shards.clone();
        st.shards.get_mut(&ids[0]).unwrap().leader = Some(ReportedLeader {
            node: NodeId(1),
            term: Term(2),
        });
        let d = description(&st, &st.streams[&name], |_| LocalView::default());
        assert_eq!(d.status, runnel_proto::v1::StreamStatus::Creating as i32);
        assert_eq!((d.open_shard_count, d.shards.len()), (2, 2));
        let s0 = &d.shards[0];
        assert_eq!(s0.shard_id, ids[0].kinesis_name());
        assert_eq!(s0.hash_key_range.as_ref().unwrap().starting_hash_key, "0");
        assert_eq!(s0.leader.as_ref().unwrap().address, "n1:7100");
        assert!(d.shards[1].leader.is_none());
        assert_eq!(
            d.shards[1].hash_key_range.as_ref().unwrap().ending_hash_key,
            u128::MAX.to_string()
        );
        let local = LocalView {
            leader: None,
            first_index: Some(LogIndex(12)),
        };
        let d = description(&st, &st.streams[&name], |_| local);
        let start = &d.shards[0]
            .sequence_number_range
            .as_ref()
            .unwrap()
            .starting_sequence_number;
        assert_eq!(start, &SeqNo::new(LogIndex(12), 0).to_string());
    }
}
