//! The `Records` service: put, iterators, get (and [`super::subscribe`] for pushes).
//!
//! Data calls are served by the shard's leader only (see [`super`] for why). A call
//! for a shard this node does not lead answers `NOT_LEADER` with the leader's address
//! when known. `PutRecords` is the exception that keeps per-record results: its records
//! may span shards, so each record of a shard this node does not lead gets its own
//! `NOT_LEADER` result (with the leader in `error_detail.leader`) while the records of
//! shards it leads are stored; the SDK routes by shard and resends those records to
//! their leader.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_meta::ShardState;
use runnel_proto::v1::records_server::Records;
use runnel_proto::v1::{
    GetRecordsRequest, GetRecordsResponse, GetShardIteratorRequest, GetShardIteratorResponse,
    PutRecordRequest, PutRecordResponse, PutRecordsRequest, PutRecordsResponse,
    PutRecordsResultEntry, SubscribeRequest,
};
use runnel_raft::Group;
use runnel_raft::detwatch::DetSender;
use runnel_types::limits::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX, GET_RECORDS_BYTES_MAX};
use runnel_types::{GroupId, Record, SeqNo, ShardId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use super::read::{self, PageLimits};
use super::{observe, record_shard, router, subscribe, validate};
use crate::context::{NodeContext, now_ms};
use crate::error::ServerError;
use crate::iterator::ShardIterator;

/// `GetRecords` calls served at once by one node: each may hold up to 10 MiB.
pub const GET_RECORDS_IN_FLIGHT_MAX: usize = 64;
/// Subscriptions one node serves at once: each holds a task and up to two events.
pub const SUBSCRIPTIONS_MAX: usize = 1024;
/// What a throttled reader waits before retrying.
pub const RETRY_AFTER_MS_THROTTLED: u64 = 100;

pub struct RecordsService {
    ctx: Arc<NodeContext>,
    reads: Arc<Semaphore>,
    subscriptions: Arc<Semaphore>,
    /// Ends every subscription when set (see [`super::SubscriptionsStop`]).
    stop: Arc<DetSender<bool>>,
}

impl RecordsService {
    pub fn new(ctx: Arc<NodeContext>, stop: Arc<DetSender<bool>>) -> RecordsService {
        RecordsService {
            ctx,
            reads: Arc::new(Semaphore::new(GET_RECORDS_IN_FLIGHT_MAX)),
            subscriptions: Arc::new(Semaphore::new(SUBSCRIPTIONS_MAX)),
            stop,
        }
    }
}

/// A slot of `limit`, or `THROTTLED` when every slot is taken.
fn slot(limit: &Arc<Semaphore>, what: &str) -> Result<OwnedSemaphorePermit, ServerError> {
    limit
        .clone()
        .try_acquire_owned()
        .map_err(|_| ServerError::Throttled {
            what: what.to_string(),
            retry_after_ms: RETRY_AFTER_MS_THROTTLED,
        })
}

#[tonic::async_trait]
impl Records for RecordsService {
    async fn put_record(
        &self,
        req: Request<PutRecordRequest>,
    ) -> Result<Response<PutRecordResponse>, Status> {
        let req = req.into_inner();
        let bytes = validate::record_bytes(&req.partition_key, &req.data);
        observe(&self.ctx, "PutRecord", bytes, put_record(&self.ctx, req)).await
    }

    async fn put_records(
        &self,
        req: Request<PutRecordsRequest>,
    ) -> Result<Response<PutRecordsResponse>, Status> {
        let req = req.into_inner();
        let bytes = req
            .records
            .iter()
            .map(|r| validate::record_bytes(&r.partition_key, &r.data))
            .sum();
        observe(&self.ctx, "PutRecords", bytes, put_records(&self.ctx, req)).await
    }

    async fn get_shard_iterator(
        &self,
        req: Request<GetShardIteratorRequest>,
    ) -> Result<Response<GetShardIteratorResponse>, Status> {
        observe(
            &self.ctx,
            "GetShardIterator",
            0,
            get_shard_iterator(&self.ctx, req.into_inner()),
        )
        .await
    }

    async fn get_records(
        &self,
        req: Request<GetRecordsRequest>,
    ) -> Result<Response<GetRecordsResponse>, Status> {
        let handler = async {
            let _slot = slot(&self.reads, "this node's GetRecords calls")?;
            get_records(&self.ctx, req.into_inner()).await
        };
        observe(&self.ctx, "GetRecords", 0, handler).await
    }

    type SubscribeStream = subscribe::EventStream;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let handler = async {
            let slot = slot(&self.subscriptions, "this node's subscriptions")?;
            let stop = self.stop.new_receiver();
            subscribe::start(self.ctx.clone(), req.into_inner(), slot, stop).await
        };
        observe(&self.ctx, "Subscribe", 0, handler).await
    }
}

/// This node's replica of `shard` if it leads it; else `NOT_LEADER` with the best hint.
pub(crate) fn leading_group(ctx: &NodeContext, shard: ShardId) -> Result<Arc<Group>, ServerError> {
    let group = ctx.registry.group(GroupId::from(shard)).ok();
    if let Some(g) = group.as_ref().filter(|g| g.is_leader()) {
        return Ok(g.clone());
    }
    Err(not_leader(ctx, shard, group.and_then(|g| g.leader())))
}

fn not_leader(
    ctx: &NodeContext,
    shard: ShardId,
    local_leader: Option<runnel_types::NodeId>,
) -> ServerError {
    let leader = ctx.placement.read(|st| {
        st.shards
            .get(&shard)
            .and_then(|info| router::leader_hint(st, info, local_leader, ctx.node_id))
    });
    ServerError::NotLeader {
        what: format!("shard {}", shard.kinesis_name()),
        leader,
    }
}

/// A failed write: a lost leadership becomes `NOT_LEADER` with our best hint.
fn write_error(ctx: &NodeContext, shard: ShardId, e: runnel_raft::Error) -> ServerError {
    match e {
        runnel_raft::Error::NotLeader { leader, .. } => {
            let local = leader.map(|(id, _)| id);
            not_leader(ctx, shard, local)
        }
        e => ServerError::from(e),
    }
}

async fn put_record(
    ctx: &NodeContext,
    req: PutRecordRequest,
) -> Result<PutRecordResponse, ServerError> {
    let stream = validate::stream_name("stream_name", &req.stream_name)?;
    let record = validate::record(
        None,
        req.partition_key,
        req.data,
        req.explicit_hash_key.as_deref(),
    )?;
    super::check_stream(ctx, &stream, true).await?;
    let shard = ctx.placement.read(|st| {
        let s = router::active_stream(st, &stream)?;
        router::shard_for_key(st, s, record.hash_key())
    })?;
    record_shard(stream.as_str(), Some(shard));
    let group = leading_group(ctx, shard)?;
    let ack = group
        .write(vec![record])
        .await
        .map_err(|e| write_error(ctx, shard, e))?;
    let seq = ack.seq_nos().next().ok_or_else(|| {
        ServerError::Internal(format!(
            "shard {shard}: a write of one record was acknowledged with none"
        ))
    })?;
    ctx.metrics.records_appended.inc();
    Ok(PutRecordResponse {
        shard_id: shard.kinesis_name(),
        sequence_number: seq.to_string(),
    })
}

/// One record's result in `PutRecords`.
fn failed(e: &ServerError) -> PutRecordsResultEntry {
    PutRecordsResultEntry {
        error_code: e.codes().0 as i32,
        error_message: e.to_string(),
        error_detail: Some(e.detail()),
        ..Default::default()
    }
}

async fn put_records(
    ctx: &NodeContext,
    req: PutRecordsRequest,
) -> Result<PutRecordsResponse, ServerError> {
    let stream = validate::stream_name("stream_name", &req.stream_name)?;
    let total = req
        .records
        .iter()
        .map(|r| validate::record_bytes(&r.partition_key, &r.data))
        .sum();
    validate::put_records_request(req.records.len(), total)?;
    record_shard(stream.as_str(), None);
    let mut results = vec![PutRecordsResultEntry::default(); req.records.len()];
    let mut valid = Vec::with_capacity(req.records.len());
    for (i, e) in req.records.into_iter().enumerate() {
        match validate::record(
            Some(i),
            e.partition_key,
            e.data,
            e.explicit_hash_key.as_deref(),
        ) {
            Ok(r) => valid.push((i, r)),
            Err(err) => results[i] = failed(&err),
        }
    }
    super::check_stream(ctx, &stream, true).await?;
    let by_shard = ctx.placement.read(|st| {
        let s = router::active_stream(st, &stream)?;
        let mut by_shard: BTreeMap<ShardId, Vec<(usize, Record)>> = BTreeMap::new();
        for (i, r) in valid {
            by_shard
                .entry(router::shard_for_key(st, s, r.hash_key())?)
                .or_default()
                .push((i, r));
        }
        Ok::<_, ServerError>(by_shard)
    })?;
    let writes = by_shard
        .into_iter()
        .map(|(shard, records)| write_shard(ctx, shard, records));
    for outcome in futures::future::join_all(writes).await {
        for (i, entry) in outcome {
            results[i] = entry;
        }
    }
    let failed_record_count = results.iter().filter(|r| r.error_code != 0).count() as u32;
    let stored = results.len() as u64 - u64::from(failed_record_count);
    ctx.metrics.records_appended.inc_by(stored);
    Ok(PutRecordsResponse {
        failed_record_count,
        records: results,
    })
}

/// Writes one shard's records of a `PutRecords`, in request order, in as few Raft
/// writes as the batch limits allow. After a failed write the shard's remaining records
/// fail with the same error, so that a retry cannot reorder them.
async fn write_shard(
    ctx: &NodeContext,
    shard: ShardId,
    records: Vec<(usize, Record)>,
) -> Vec<(usize, PutRecordsResultEntry)> {
    let mut out = Vec::with_capacity(records.len());
    let group = match leading_group(ctx, shard) {
        Ok(g) => g,
        Err(e) => return records.into_iter().map(|(i, _)| (i, failed(&e))).collect(),
    };
    let mut error: Option<ServerError> = None;
    for chunk in chunks(records) {
        if let Some(e) = &error {
            out.extend(chunk.into_iter().map(|(i, _)| (i, failed(e))));
            continue;
        }
        let (indices, batch): (Vec<usize>, Vec<Record>) = chunk.into_iter().unzip();
        match group.write(batch).await {
            Ok(ack) => out.extend(
                indices
                    .into_iter()
                    .zip(ack.seq_nos())
                    .map(|(i, seq)| (i, stored(shard, seq))),
            ),
            Err(e) => {
                let e = write_error(ctx, shard, e);
                out.extend(indices.into_iter().map(|i| (i, failed(&e))));
                error = Some(e);
            }
        }
    }
    out
}

fn stored(shard: ShardId, seq: SeqNo) -> PutRecordsResultEntry {
    PutRecordsResultEntry {
        shard_id: shard.kinesis_name(),
        sequence_number: seq.to_string(),
        ..Default::default()
    }
}

/// Splits records into writes within one Raft entry's limits, keeping their order.
pub fn chunks<T>(records: Vec<(T, Record)>) -> Vec<Vec<(T, Record)>> {
    let mut out: Vec<Vec<(T, Record)>> = Vec::new();
    let mut bytes = 0usize;
    for (t, r) in records {
        let len = r.encoded_len();
        let full = out
            .last()
            .is_none_or(|c| c.len() >= BATCH_RECORDS_MAX || bytes + len > BATCH_BYTES_MAX);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        out.last_mut().expect("pushed above").push((t, r));
    }
    out
}

async fn get_shard_iterator(
    ctx: &NodeContext,
    req: GetShardIteratorRequest,
) -> Result<GetShardIteratorResponse, ServerError> {
    let now = now_ms();
    let stream = validate::stream_name("stream_name", &req.stream_name)?;
    let shard = router::parse_shard_id("shard_id", &req.shard_id)?;
    let start = validate::start_at(
        "shard_iterator_type",
        req.shard_iterator_type,
        &req.starting_sequence_number,
        req.timestamp_ms,
        now,
    )?;
    record_shard(stream.as_str(), Some(shard));
    super::check_stream(ctx, &stream, true).await?;
    ctx.placement.read(|st| {
        router::active_stream(st, &stream)?;
        router::shard_of(st, &stream, shard).map(drop)
    })?;
    let group = leading_group(ctx, shard)?;
    let position = read::start_position(&group, start).await?;
    let it = ShardIterator::new(stream, shard, position, now);
    Ok(GetShardIteratorResponse {
        shard_iterator: it.encode(&ctx.placement.iterator_key()),
    })
}

/// What a read needs to know of its shard from the meta state.
pub(crate) struct ShardFacts {
    pub retention_ms: u64,
    pub closed: bool,
    pub ending_seq: Option<SeqNo>,
    pub children: Vec<ShardId>,
}

pub(crate) fn shard_facts(
    ctx: &NodeContext,
    stream: &runnel_types::StreamName,
    shard: ShardId,
) -> Result<ShardFacts, ServerError> {
    ctx.placement.read(|st| {
        let s = router::active_stream(st, stream)?;
        let info = router::shard_of(st, stream, shard)?;
        Ok(ShardFacts {
            retention_ms: s.retention_ms,
            closed: info.state == ShardState::Closed,
            ending_seq: info.ending_seq,
            children: router::children_of(st, shard),
        })
    })
}

/// A closed shard is read to its end once the reader is past its last record (or, while
/// the last record is not yet recorded, has caught up with its final commit point).
pub fn shard_ended(closed: bool, ending_seq: Option<SeqNo>, next: SeqNo, caught_up: bool) -> bool {
    closed && ending_seq.map_or(caught_up, |end| next > end)
}

async fn get_records(
    ctx: &NodeContext,
    req: GetRecordsRequest,
) -> Result<GetRecordsResponse, ServerError> {
    let now = now_ms();
    let key = ctx.placement.iterator_key();
    let it = ShardIterator::decode(&req.shard_iterator, &key, now)?;
    let limit = validate::get_records_limit(req.limit)?;
    record_shard(it.stream.as_str(), Some(it.shard));
    let facts = shard_facts(ctx, &it.stream, it.shard)?;
    let group = leading_group(ctx, it.shard)?;
    let limits = PageLimits {
        records: limit,
        bytes: GET_RECORDS_BYTES_MAX,
    };
    let expired_before = now.saturating_sub(facts.retention_ms);
    let page = read::read_page(&group, it.shard, it.next, &limits, expired_before).await?;
    let tip = if page.caught_up {
        None
    } else {
        read::tip_timestamp(&group).await
    };
    let ended = shard_ended(facts.closed, facts.ending_seq, page.next, page.caught_up);
    let next_shard_iterator = (!ended)
        .then(|| ShardIterator::new(it.stream.clone(), it.shard, page.next, now).encode(&key));
    let child_shard_ids = if ended {
        facts.children.iter().map(|c| c.kinesis_name()).collect()
    } else {
        Vec::new()
    };
    Ok(GetRecordsResponse {
        millis_behind_latest: read::millis_behind(page.caught_up, page.last_timestamp_ms, tip, now),
        records: page.records,
        next_shard_iterator,
        child_shard_ids,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use runnel_types::LogIndex;

    #[test]
    fn chunks_keep_order_within_batch_limits() {
        let rec = |n: usize| Record::new("k", vec![0u8; n]);
        let big = BATCH_BYTES_MAX / 3;
        let input: Vec<(usize, Record)> = (0..7).map(|i| (i, rec(big))).collect();
        let out = chunks(input);
        assert!(out.len() >= 3);
        let order: Vec<usize> = out.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..7).collect::<Vec<_>>());
        for c in &out {
            assert!(c.iter().map(|(_, r)| r.encoded_len()).sum::<usize>() <= BATCH_BYTES_MAX);
        }
        let small: Vec<(usize, Record)> = (0..500).map(|i| (i, rec(10))).collect();
        assert_eq!(chunks(small).len(), 1);
        assert!(chunks(Vec::<(usize, Record)>::new()).is_empty());
    }

    #[test]
    fn a_closed_shard_ends_past_its_last_record() {
        let end = SeqNo::new(LogIndex(10), 2);
        assert!(!shard_ended(false, None, SeqNo(u128::MAX), true));
        assert!(!shard_ended(true, Some(end), end, false));
        assert!(shard_ended(
            true,
            Some(end),
            SeqNo::new(LogIndex(10), 3),
            false
        ));
        assert!(shard_ended(true, None, SeqNo::new(LogIndex(11), 0), true));
        assert!(!shard_ended(true, None, SeqNo::new(LogIndex(11), 0), false));
    }
}
