//! The internal `runnel.internal.v1.Meta` service (served on the node's one gRPC port)
//! and its client side: forwarding a proposal to the meta leader, and joining.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_meta::{Command, NodeLabels};
use runnel_proto::internal::v1::meta_client::MetaClient;
use runnel_proto::internal::v1::meta_server::Meta;
use runnel_proto::internal::v1::{
    JoinRequest, JoinResponse, ProposeRequest, ProposeResponse, ReadIndexRequest, ReadIndexResponse,
};
use runnel_types::{GroupId, LogIndex, NodeId};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{Placement, decode_command};
use crate::context::now_ms;
use crate::error::{RETRY_AFTER_MS_NO_LEADER, ServerError};

/// How long a forwarded call may take (a join waits for the learner to catch up).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read barrier waits for the meta leader's answer.
pub const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of one encoded meta command, at most.
pub const COMMAND_BYTES_MAX: usize = 1 << 20;

/// Labels as the meta state keeps them: `zone` apart, the rest as they are.
pub fn node_labels(labels: &BTreeMap<String, String>) -> NodeLabels {
    let mut other = labels.clone();
    let zone = other.remove("zone");
    NodeLabels { zone, other }
}

/// The server side.
pub struct MetaService {
    placement: Arc<Placement>,
}

impl MetaService {
    /// Wrap it in `MetaServer::new` to serve it (the server type differs under madsim,
    /// so it is built where it is added).
    pub fn new(placement: Arc<Placement>) -> MetaService {
        MetaService { placement }
    }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn propose(
        &self,
        req: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let data = req.into_inner().command;
        if data.len() > COMMAND_BYTES_MAX {
            return Err(ServerError::invalid_limit(
                "command",
                "is too large",
                format!("{COMMAND_BYTES_MAX} bytes"),
            )
            .into());
        }
        // Refuse what the applier could not decode before it reaches the log.
        decode_command(&data).map_err(|e| ServerError::invalid("command", e.to_string()))?;
        let (index, slot) = self.placement.propose_local(data).await?;
        Ok(Response::new(ProposeResponse {
            index: index.0,
            slot,
        }))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let index = self.placement.leader_commit_index()?;
        Ok(Response::new(ReadIndexResponse { index: index.0 }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = req.into_inner();
        let placement = &self.placement;
        if !placement.is_meta_leader() {
            let Some((id, addr)) = placement
                .meta_leader()
                .filter(|(id, _)| *id != placement.node_id())
            else {
                return Err(no_leader().into());
            };
            info!(node_id = %placement.node_id(), joining = req.node_id, leader = %id, "forwarding a join to the meta leader");
            return Ok(Response::new(placement.forward.join(&addr, req).await?));
        }
        let index = join_here(placement, req).await?;
        Ok(Response::new(JoinResponse {
            registered_index: index.0,
        }))
    }
}

/// On the meta leader: register the node, then make it a learner of the meta group
/// (waits until it has caught up).
async fn join_here(placement: &Placement, req: JoinRequest) -> Result<LogIndex, ServerError> {
    let node = NodeId(req.node_id);
    let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
    let register = Command::RegisterNode {
        node,
        address: req.address.clone(),
        labels: node_labels(&labels),
        capacity_weight: 1,
        now_ms: now_ms(),
    };
    placement.propose(register).await?;
    let index = placement.applied_index();
    let group = placement.registry.group(GroupId::META)?;
    let is_voter = group
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == node.0);
    if !is_voter {
        info!(node_id = %placement.node_id(), joining = %node, address = %req.address, "adding a meta learner");
        group.add_learner(node, &req.address).await?;
    }
    Ok(index)
}

fn no_leader() -> ServerError {
    ServerError::Unavailable {
        what: "the meta group".into(),
        reason: "no meta leader is known yet".into(),
        retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
    }
}

/// The client side: one cached channel to the last meta leader used.
#[derive(Default)]
pub(crate) struct Forwarder {
    client: Mutex<Option<(String, MetaClient<Channel>)>>,
}

impl Forwarder {
    async fn client(&self, addr: &str) -> Result<MetaClient<Channel>, ServerError> {
        let mut cached = self.client.lock().await;
        if let Some((a, c)) = cached.as_ref()
            && a == addr
        {
            return Ok(c.clone());
        }
        let c = connect(addr).await?;
        *cached = Some((addr.to_string(), c.clone()));
        Ok(c)
    }

    async fn forget(&self) {
        *self.client.lock().await = None;
    }

    pub(crate) async fn propose(
        &self,
        addr: &str,
        data: Bytes,
    ) -> Result<(LogIndex, u32), ServerError> {
        let mut c = self.client(addr).await?;
        let call = c.propose(ProposeRequest { command: data });
        match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Ok((LogIndex(r.index), r.slot))
            }
            Ok(Err(status)) => {
                self.forget().await;
                Err(from_status(addr, status))
            }
            Err(_) => Err(timed_out(addr)),
        }
    }

    /// The meta leader's commit index (see `Placement::read_barrier`).
    pub(crate) async fn read_index(&self, addr: &str) -> Result<LogIndex, ServerError> {
        let mut c = self.client(addr).await?;
        match tokio::time::timeout(READ_INDEX_TIMEOUT, c.read_index(ReadIndexRequest {})).await {
            Ok(Ok(r)) => Ok(LogIndex(r.into_inner().index)),
            Ok(Err(status)) => {
                self.forget().await;
                Err(from_status(addr, status))
            }
            Err(_) => Err(timed_out(addr)),
        }
    }

    pub(crate) async fn join(
        &self,
        addr: &str,
        req: JoinRequest,
    ) -> Result<JoinResponse, ServerError> {
        let mut c = self.client(addr).await?;
        match tokio::time::timeout(FORWARD_TIMEOUT, c.join(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => {
                self.forget().await;
                Err(from_status(addr, status))
            }
            Err(_) => Err(timed_out(addr)),
        }
    }
}

/// Connects to a peer's gRPC port.
pub async fn connect(addr: &str) -> Result<MetaClient<Channel>, ServerError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ServerError::Internal(format!("bad peer address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ServerError::Unavailable {
            what: format!("node at {addr}"),
            reason: e.to_string(),
            retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
        })?;
    Ok(MetaClient::new(channel))
}

/// A failed forwarded call, as this node reports it: the peer's message is kept; the
/// kind becomes Unavailable (retry) unless the peer refused the request itself.
fn from_status(addr: &str, status: Status) -> ServerError {
    warn!(peer = addr, code = ?status.code(), message = status.message(), "forwarded meta call failed");
    match status.code() {
        tonic::Code::InvalidArgument => ServerError::invalid("command", status.message()),
        _ => ServerError::Unavailable {
            what: format!("the meta leader at {addr}"),
            reason: status.message().to_string(),
            retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
        },
    }
}

fn timed_out(addr: &str) -> ServerError {
    ServerError::Unavailable {
        what: format!("the meta leader at {addr}"),
        reason: format!("no answer within {FORWARD_TIMEOUT:?}"),
        retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
    }
}
