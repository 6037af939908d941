//! The sending side: one [`PeerConn`] per peer node (one gRPC channel, one batcher),
//! shared by every group through [`Router`], which implements openraft-multi's
//! `GroupRouter`. A group's openraft instance gets a [`GroupNetwork`] factory whose
//! clients are `GroupNetworkAdapter`s bound to `(peer, group)`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, RaftNetworkFactory};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use runnel_proto::internal::v1 as pb;
use runnel_proto::internal::v1::raft_transport_client::RaftTransportClient;
use runnel_types::{GroupId, NodeId};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use crate::network::batcher::{self, BatchItem};
use crate::network::{TransportConfig, wire};
use crate::snapshot::ShardSnapshot;
use crate::types::{PeerNode, RaftVote, TypeConfig};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, ShardSnapshot>;

/// One peer node: its address, its (lazily connected) channel, its batcher.
pub struct PeerConn {
    pub node_id: u64,
    pub addr: String,
    client: tokio::sync::Mutex<Option<RaftTransportClient<Channel>>>,
    batch_tx: mpsc::Sender<BatchItem>,
    connect_timeout: Duration,
}

impl PeerConn {
    /// The shared client, connecting if there is none.
    async fn client(&self) -> Result<RaftTransportClient<Channel>, String> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let url = format!("http://{}", self.addr);
        let c =
            match crate::runtime::timeout(self.connect_timeout, RaftTransportClient::connect(url))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(format!(
                        "connect to node {} at {}: {e}",
                        self.node_id, self.addr
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "connect to node {} at {}: timed out",
                        self.node_id, self.addr
                    ));
                }
            };
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Forgets the channel after a transport error, so that the next call reconnects.
    async fn reset(&self) {
        *self.client.lock().await = None;
    }

    pub(crate) async fn batch_append(
        &self,
        req: pb::BatchAppendRequest,
    ) -> Result<pb::BatchAppendResponse, String> {
        let mut c = self.client().await?;
        match c.batch_append(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => {
                self.reset().await;
                Err(format!("BatchAppend to node {}: {status}", self.node_id))
            }
        }
    }
}

impl PeerConn {
    /// Whether the peer node answers at all: an empty `BatchAppend` (no group, no
    /// Raft work on either side), within `within`. The node-level liveness signal
    /// that quiesced groups rely on instead of per-group heartbeats (`quiesce.rs`).
    pub(crate) async fn probe(&self, within: Duration) -> bool {
        let rpc = self.batch_append(pb::BatchAppendRequest { requests: vec![] });
        matches!(crate::runtime::timeout(within, rpc).await, Ok(Ok(_)))
    }
}

/// Routes every group's Raft RPCs to the shared connection of the target node.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    node_id: NodeId,
    peers: Mutex<BTreeMap<u64, Arc<PeerConn>>>,
    config: TransportConfig,
}

fn unreachable(msg: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(msg)))
}

fn network(msg: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&AnyError::error(msg)))
}

impl Router {
    pub fn new(node_id: NodeId, config: TransportConfig) -> Router {
        Router {
            inner: Arc::new(RouterInner {
                node_id,
                peers: Mutex::new(BTreeMap::new()),
                config,
            }),
        }
    }

    /// The connection to `node` at `addr`, created (with its batcher) on first use and
    /// replaced if the node's address changed.
    pub fn peer_at(&self, node: u64, addr: &str) -> Arc<PeerConn> {
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = peers.get(&node)
            && p.addr == addr
        {
            return p.clone();
        }
        let cfg = &self.inner.config;
        let (batch_tx, batch_rx) = mpsc::channel(cfg.queue_items_max.max(1));
        let peer = Arc::new(PeerConn {
            node_id: node,
            addr: addr.to_string(),
            client: tokio::sync::Mutex::new(None),
            batch_tx,
            connect_timeout: cfg.connect_timeout,
        });
        batcher::spawn(peer.clone(), batch_rx, cfg.clone());
        peers.insert(node, peer.clone());
        peer
    }

    fn peer(&self, node: u64) -> Result<Arc<PeerConn>, RPCError<TypeConfig>> {
        let peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        peers
            .get(&node)
            .cloned()
            .ok_or_else(|| unreachable(format!("no address known for node {node}")))
    }

    /// Every peer connection known so far (one per peer node), in node order.
    pub(crate) fn peers(&self) -> Vec<Arc<PeerConn>> {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The node this router sends from.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Number of peer connections (one per peer node, whatever the number of groups).
    pub fn peer_count(&self) -> usize {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn vote_rpc(
        &self,
        target: u64,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre_vote: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let peer = self.peer(target)?;
        let mut client = peer.client().await.map_err(unreachable)?;
        let req = wire::vote_req_to_pb(group.0, &rpc, pre_vote);
        let resp = match crate::runtime::timeout(option.hard_ttl(), client.vote(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                peer.reset().await;
                return Err(network(format!("Vote to node {target}: {status}")));
            }
            Err(_) => return Err(network(format!("Vote to node {target}: timed out"))),
        };
        wire::vote_resp_from_pb(resp).map_err(|e| network(e.to_string()))
    }
}

impl GroupRouter<TypeConfig, GroupId> for Router {
    type SnapshotData = ShardSnapshot;

    async fn append_entries(
        &self,
        target: u64,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let peer = self.peer(target)?;
        let (reply, rx) = oneshot::channel();
        let item = BatchItem {
            request: wire::append_to_pb(group.0, &rpc),
            reply,
        };
        if peer.batch_tx.send(item).await.is_err() {
            return Err(unreachable(format!("batcher of node {target} stopped")));
        }
        let resp = match crate::runtime::timeout(option.hard_ttl(), rx).await {
            Ok(Ok(Ok(resp))) => resp,
            Ok(Ok(Err(msg))) => return Err(network(msg)),
            Ok(Err(_)) => return Err(network(format!("batch to node {target} dropped"))),
            Err(_) => {
                return Err(network(format!(
                    "AppendEntries to node {target}: timed out"
                )));
            }
        };
        wire::append_resp_from_pb(resp).map_err(network)
    }

    async fn vote(
        &self,
        target: u64,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(target, group, rpc, option, false).await
    }

    async fn pre_vote(
        &self,
        target: u64,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(target, group, rpc, option, true).await
    }

    /// Tells `target` that this group's leader hands leadership to `req.to_node_id()`.
    async fn transfer_leader(
        &self,
        target: u64,
        group: GroupId,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let peer = self.peer(target)?;
        let mut client = peer.client().await.map_err(unreachable)?;
        let req = wire::transfer_req_to_pb(group.0, &req);
        let rpc = client.transfer_leader(req);
        let resp = match crate::runtime::timeout(option.hard_ttl(), rpc).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                peer.reset().await;
                let msg = format!("TransferLeader to node {target}: {status}");
                return Err(network(msg));
            }
            Err(_) => {
                let msg = format!("TransferLeader to node {target}: timed out");
                return Err(network(msg));
            }
        };
        wire::transfer_resp_from_pb(resp).map_err(|e| network(e.to_string()))
    }

    async fn full_snapshot(
        &self,
        target: u64,
        group: GroupId,
        vote: RaftVote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send = send_snapshot(self.peer(target)?, group, vote, snapshot);
        let cancel = std::pin::pin!(cancel);
        match futures::future::select(std::pin::pin!(send), cancel).await {
            futures::future::Either::Left((r, _)) => r,
            futures::future::Either::Right((closed, _)) => Err(StreamingError::Closed(closed)),
        }
    }
}

/// Streams the snapshot: a header, then chunks of entries, each read from the log in
/// the blocking pool as the stream is pulled (so at most one chunk is in memory ahead
/// of gRPC's own buffers).
async fn send_snapshot(
    peer: Arc<PeerConn>,
    group: GroupId,
    vote: RaftVote,
    snapshot: Snapshot,
) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
    let reader = snapshot.snapshot.reader(group);
    let header = pb::SnapshotHeader {
        vote: Some(wire::vote_to_pb(&vote)),
        meta: Some(wire::snapshot_meta_to_pb(&snapshot.meta)),
        trimmed: reader.trimmed().map(|t| pb::LogId {
            term: t.term.0,
            index: t.index.0,
        }),
    };
    let first = pb::SnapshotChunk {
        group_id: group.0,
        kind: Some(pb::snapshot_chunk::Kind::Header(header)),
    };
    let chunks = futures::stream::unfold(Some(reader), move |reader| async move {
        let mut reader = reader?;
        let (reader, chunk) = crate::io::blocking(move || {
            let chunk = reader.next_chunk();
            (reader, chunk)
        })
        .await
        .ok()?;
        match chunk {
            Ok(Some(entries)) => {
                let entries = entries.into_iter().map(wire::log_entry_to_pb).collect();
                let kind = pb::snapshot_chunk::Kind::Entries(pb::SnapshotEntries { entries });
                Some((
                    pb::SnapshotChunk {
                        group_id: group.0,
                        kind: Some(kind),
                    },
                    Some(reader),
                ))
            }
            Ok(None) => None,
            Err(e) => {
                // Ending the stream early: the receiver finds the entries short of the
                // snapshot's last index and refuses to install it.
                tracing::warn!(%group, error = %e, "reading snapshot failed");
                None
            }
        }
    });
    let stream = futures::stream::once(async move { first }).chain(chunks);
    let mut client = peer
        .client()
        .await
        .map_err(|m| StreamingError::from(unreachable(m)))?;
    // Spawned: the RPC future holds the chunk stream, and rustc cannot prove such a
    // future `Send` for all lifetimes inside an async trait method.
    let rpc = tokio::spawn(async move { client.install_snapshot(stream).await });
    let result = rpc
        .await
        .map_err(|e| StreamingError::from(network(format!("snapshot task: {e}"))))?;
    let resp = match result {
        Ok(r) => r.into_inner(),
        Err(status) => {
            peer.reset().await;
            let msg = format!("InstallSnapshot to node {}: {status}", peer.node_id);
            return Err(StreamingError::from(network(msg)));
        }
    };
    let vote = wire::vote_from_pb(resp.vote, "snapshot response")
        .map_err(|e| StreamingError::from(network(e.to_string())))?;
    Ok(SnapshotResponse { vote })
}

/// The openraft network factory of one group: clients bound to `(peer, group)` over
/// the shared router.
#[derive(Clone)]
pub struct GroupNetwork {
    router: Router,
    group: GroupId,
}

impl GroupNetwork {
    pub fn new(router: Router, group: GroupId) -> GroupNetwork {
        GroupNetwork { router, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, Router>;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> Self::Network {
        self.router.peer_at(target, &node.addr);
        GroupNetworkAdapter::new(self.router.clone(), target, self.group)
    }
}
