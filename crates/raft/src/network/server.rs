//! The receiving side: the `RaftTransport` gRPC service. It finds the named group
//! among the node's hosted groups and hands the message to its openraft instance.
//! A message for a group this node does not host gets `NOT_FOUND` (a per-item
//! `GroupError` inside a batch), never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use runnel_proto::internal::v1 as pb;
use runnel_proto::internal::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use runnel_types::GroupId;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::error::Error;
use crate::network::{MESSAGE_BYTES_MAX, wire};
use crate::registry::Hosted;
use crate::snapshot::ShardSnapshot;

/// Longest a batch waits for one group's AppendEntries.
const ITEM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The gRPC service over a node's hosted groups.
pub struct TransportService {
    hosted: Arc<Hosted>,
}

impl TransportService {
    pub(crate) fn new(hosted: Arc<Hosted>) -> TransportService {
        TransportService { hosted }
    }

    /// The tonic service, accepting messages up to [`MESSAGE_BYTES_MAX`].
    #[cfg(not(madsim))]
    pub fn into_server(self) -> RaftTransportServer<TransportService> {
        RaftTransportServer::new(self).max_decoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// madsim's generator adds an interceptor parameter (and has no size limit).
    #[cfg(madsim)]
    pub fn into_server(
        self,
    ) -> RaftTransportServer<TransportService, tonic::codegen::IdentityInterceptor> {
        RaftTransportServer::new(self).max_decoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// One AppendEntries, answered as a batch item.
    async fn append_one(&self, req: pb::AppendEntriesRequest) -> pb::AppendEntriesResponse {
        use pb::GroupErrorCode as Code;
        let group = GroupId(req.group_id);
        let found = if req.entries.is_empty() {
            self.hosted.raft(group)
        } else {
            self.hosted.raft_woken(group)
        };
        let raft = match found {
            Ok(r) => r,
            Err(e) => return wire::group_error(Code::UnknownGroup, e.to_string()),
        };
        let rpc = match wire::append_from_pb(req) {
            Ok(r) => r,
            Err(e) => return wire::group_error(Code::Invalid, e.to_string()),
        };
        // Bounded, so that one stuck group does not hold up its batch's other groups.
        match crate::runtime::timeout(ITEM_TIMEOUT, raft.append_entries(rpc)).await {
            Ok(Ok(resp)) => wire::append_resp_to_pb(&resp),
            Ok(Err(e)) => wire::group_error(Code::Stopped, format!("group {group}: {e}")),
            Err(_) => wire::group_error(Code::Stopped, format!("group {group}: append timed out")),
        }
    }
}

fn invalid(e: Error) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let req = request.into_inner();
        let group = GroupId(req.group_id);
        let raft = self.hosted.raft_woken(group)?;
        let pre_vote = req.pre_vote;
        let rpc = wire::vote_req_from_pb(req).map_err(invalid)?;
        let resp = if pre_vote {
            raft.pre_vote(rpc).await
        } else {
            raft.vote(rpc).await
        };
        let resp = resp.map_err(|e| Status::unavailable(format!("group {group}: {e}")))?;
        Ok(Response::new(wire::vote_resp_to_pb(&resp)))
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let req = request.into_inner();
        let group = GroupId(req.group_id);
        // A unary call for an unknown group is a NOT_FOUND status.
        self.hosted.raft(group)?;
        Ok(Response::new(self.append_one(req).await))
    }

    /// Items of one group run in order (a heartbeat must not overtake entries sent
    /// before it); different groups run concurrently.
    async fn batch_append(
        &self,
        request: Request<pb::BatchAppendRequest>,
    ) -> Result<Response<pb::BatchAppendResponse>, Status> {
        let requests = request.into_inner().requests;
        if self.hosted.is_stopped() {
            // What a liveness probe (an empty batch) must see from a node whose
            // registry has shut down, even over a connection that outlived it.
            return Err(Status::unavailable(
                "the node's Raft registry has shut down",
            ));
        }
        let n = requests.len();
        let started = std::time::Instant::now();
        let mut by_group: BTreeMap<u64, Vec<(usize, pb::AppendEntriesRequest)>> = BTreeMap::new();
        for (i, r) in requests.into_iter().enumerate() {
            by_group.entry(r.group_id).or_default().push((i, r));
        }
        let per_group = by_group.into_values().map(|items| async move {
            let mut out = Vec::with_capacity(items.len());
            for (i, r) in items {
                out.push((i, self.append_one(r).await));
            }
            out
        });
        let mut responses = vec![pb::AppendEntriesResponse::default(); n];
        for (i, r) in futures::future::join_all(per_group)
            .await
            .into_iter()
            .flatten()
        {
            responses[i] = r;
        }
        // Compare with the sender's "batch answered": the difference is time spent
        // queued in the two runtimes and on the wire, not in Raft.
        tracing::debug!(
            items = n,
            elapsed_us = started.elapsed().as_micros() as u64,
            "batch handled"
        );
        Ok(Response::new(pb::BatchAppendResponse { responses }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        let group = GroupId(req.group_id);
        let raft = self.hosted.raft_woken(group)?;
        let rpc = wire::transfer_req_from_pb(req).map_err(invalid)?;
        let resp = raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(|e| Status::unavailable(format!("group {group}: {e}")))?;
        Ok(Response::new(wire::transfer_resp_to_pb(&resp)))
    }

    /// Stages the streamed entries on disk chunk by chunk (`snapshot.rs`), then hands
    /// the snapshot to openraft. A stream that ends short of the snapshot's last entry
    /// is refused here; its staged copy goes with it.
    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let group = GroupId(first.group_id);
        let span = tracing::info_span!("install_snapshot", group_id = %group);
        async {
            let raft = self.hosted.raft_woken(group)?;
            let Some(pb::snapshot_chunk::Kind::Header(header)) = first.kind else {
                return Err(Status::invalid_argument(
                    "a snapshot stream starts with its header",
                ));
            };
            let vote = wire::vote_from_pb(header.vote, "snapshot header").map_err(invalid)?;
            let meta = wire::snapshot_meta_from_pb(header.meta).map_err(invalid)?;
            let trimmed = header.trimmed.map(|t| runnel_log::EntryId {
                index: runnel_types::LogIndex(t.index),
                term: runnel_types::Term(t.term),
            });
            let area = self.hosted.staging.clone();
            let staging = Arc::new(blocking_io(move || area.begin(group, trimmed)).await?);
            let mut received = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if chunk.group_id != group.0 {
                    return Err(Status::invalid_argument(
                        "a snapshot stream names one group",
                    ));
                }
                let Some(pb::snapshot_chunk::Kind::Entries(e)) = chunk.kind else {
                    return Err(Status::invalid_argument(
                        "only entries follow a snapshot header",
                    ));
                };
                let entries: Vec<_> = e.entries.into_iter().map(wire::log_entry_from_pb).collect();
                received += entries.len();
                let s = staging.clone();
                blocking_io(move || s.append(&entries)).await?;
            }
            let last = meta.last_log_id.as_ref().map(crate::log_store::to_entry_id);
            let staging = Arc::into_inner(staging)
                .ok_or_else(|| Status::internal("a staging append outlived its call"))?;
            let staged = blocking_io(move || staging.finish(last)).await?;
            tracing::info!(entries = received, "snapshot received and staged");
            let snapshot = openraft::alias::SnapshotOf::<crate::TypeConfig, ShardSnapshot> {
                meta,
                snapshot: staged,
            };
            let resp = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| Status::unavailable(format!("group {group}: {e}")))?;
            Ok(Response::new(pb::SnapshotResponse {
                vote: Some(wire::vote_to_pb(&resp.vote)),
            }))
        }
        .instrument(span)
        .await
    }
}

/// Runs staging I/O off the async workers (`io.rs`); its errors become statuses.
async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    crate::io::blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)
}
