//! Health and readiness: gRPC health checking (`grpc.health.v1`), so that grpcurl,
//! grpc_health_probe and Kubernetes' native `grpc:` probes work against the node's one
//! gRPC port, and the readiness decision behind `/readyz` on the admin port.
//!
//! The overall status (service `""`) and the internal services (Raft transport, Meta)
//! are SERVING from the moment the port listens until shutdown begins, whatever the
//! quorum: liveness must not depend on other nodes, or a cluster that lost quorum would
//! restart itself in a loop, and peers need the internal services while this node joins.
//! The public services (`runnel.v1.*`) are SERVING only while the node is *ready*
//! ([`track_readiness`]): it has joined (its own heartbeat, sent since this process
//! started, is in its applied meta state) and has applied every meta entry it knows to
//! be committed. Before that its metadata answers would be stale (a restarted node
//! replays an old copy of the node table), so load balancers should not send clients.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use runnel_meta::{MetaState, NodeStatus};
use runnel_proto::health::health_check_response::ServingStatus;
use runnel_proto::health::health_server::Health;
pub use runnel_proto::health::health_server::HealthServer;
use runnel_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use runnel_types::{GroupId, LogIndex, NodeId};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::context::NodeContext;

/// The services this port answers for, by their full gRPC names.
pub const SERVICES: &[&str] = &[
    "",
    "runnel.v1.StreamAdmin",
    "runnel.v1.Records",
    "runnel.v1.ConsumerGroups",
    "runnel.v1.Cluster",
    "runnel.internal.v1.RaftTransport",
    "runnel.internal.v1.Meta",
];

/// The services that wait for readiness: the public API.
const PUBLIC_PREFIX: &str = "runnel.v1.";

/// How often a `Watch` stream re-checks the status.
const WATCH_POLL_MS: u64 = 1000;

/// How often [`track_readiness`] re-decides.
const READINESS_POLL_MS: u64 = 250;

#[derive(Clone)]
pub struct HealthService {
    /// Set when shutdown begins.
    stopping: Arc<AtomicBool>,
    /// Set while the node is ready; `None` treats it as always ready.
    ready: Option<Arc<AtomicBool>>,
}

impl HealthService {
    pub fn new(stopping: Arc<AtomicBool>) -> HealthService {
        HealthService {
            stopping,
            ready: None,
        }
    }

    /// Public services report SERVING only while `ready` is set.
    pub fn with_readiness(mut self, ready: Arc<AtomicBool>) -> HealthService {
        self.ready = Some(ready);
        self
    }

    fn status_of(&self, service: &str) -> Option<ServingStatus> {
        if !SERVICES.contains(&service) {
            return None;
        }
        let ready = self
            .ready
            .as_ref()
            .is_none_or(|r| r.load(Ordering::Relaxed));
        let serving = !self.stopping.load(Ordering::Relaxed)
            && (ready || !service.starts_with(PUBLIC_PREFIX));
        Some(if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

/// What readiness is decided from; gathered by [`track_readiness`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessFacts {
    /// This node's status and last heartbeat time in the applied meta state.
    pub own: Option<(NodeStatus, u64)>,
    /// The meta log applied here, and committed as far as this node knows.
    pub applied: LogIndex,
    pub committed: LogIndex,
}

impl ReadinessFacts {
    pub fn gather(ctx: &NodeContext) -> ReadinessFacts {
        let own = ctx.placement.read(|st| own_entry(st, ctx.node_id));
        let committed = ctx
            .registry
            .group(GroupId::META)
            .map(|g| g.committed())
            .unwrap_or_default();
        ReadinessFacts {
            own,
            applied: ctx.placement.applied_index(),
            committed,
        }
    }
}

fn own_entry(st: &MetaState, me: NodeId) -> Option<(NodeStatus, u64)> {
    st.nodes.get(&me).map(|n| (n.status, n.last_heartbeat_ms))
}

/// Ready: a heartbeat this process sent (at or after `started_ms`, by the node's own
/// clock, which also stamped the heartbeat) is applied, the node table counts the node
/// as serving, and the applier has caught up with the meta commit point. Pure.
pub fn is_ready(facts: &ReadinessFacts, started_ms: u64) -> bool {
    let joined = facts.own.is_some_and(|(status, heartbeat_ms)| {
        heartbeat_ms >= started_ms
            && matches!(
                status,
                NodeStatus::Up | NodeStatus::Draining | NodeStatus::Drained
            )
    });
    joined && facts.applied >= facts.committed
}

/// Keeps `ready` equal to [`is_ready`] until the task is aborted (at shutdown, which
/// clears `ready` itself). `started_ms` is when this process started the node.
pub async fn track_readiness(ctx: Arc<NodeContext>, ready: Arc<AtomicBool>, started_ms: u64) {
    let span = tracing::info_span!("readiness", node_id = %ctx.node_id);
    async move {
        let mut was = ready.load(Ordering::Relaxed);
        loop {
            let facts = ReadinessFacts::gather(&ctx);
            let now = is_ready(&facts, started_ms);
            if now != was {
                tracing::info!(ready = now, ?facts, "readiness changed");
                ready.store(now, Ordering::SeqCst);
                was = now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(READINESS_POLL_MS)).await;
        }
    }
    .instrument(span)
    .await
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &req.get_ref().service;
        match self.status_of(service) {
            Some(s) => Ok(Response::new(response(s))),
            None => Err(Status::not_found(format!(
                "unknown service {service:?}; this port serves {}",
                SERVICES[1..].join(", ")
            ))),
        }
    }

    async fn list(
        &self,
        _req: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        let statuses = SERVICES
            .iter()
            .filter_map(|s| self.status_of(s).map(|st| (s.to_string(), response(st))))
            .collect();
        Ok(Response::new(HealthListResponse { statuses }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let service = req.into_inner().service;
        let this = self.clone();
        // Sends the status now and again whenever it changes; ends at NOT_SERVING.
        let stream = futures::stream::unfold(None, move |last: Option<ServingStatus>| {
            let this = this.clone();
            let service = service.clone();
            async move {
                loop {
                    let now = this
                        .status_of(&service)
                        .unwrap_or(ServingStatus::ServiceUnknown);
                    if last == Some(ServingStatus::NotServing) {
                        return None;
                    }
                    if last != Some(now) {
                        return Some((Ok(response(now)), Some(now)));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(WATCH_POLL_MS)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serving_until_shutdown_and_unknown_services_refused() {
        let stopping = Arc::new(AtomicBool::new(false));
        let h = HealthService::new(stopping.clone());
        let check = |s: &str| h.check(Request::new(HealthCheckRequest { service: s.into() }));
        assert_eq!(
            check("").await.unwrap().into_inner().status,
            ServingStatus::Serving as i32
        );
        assert_eq!(
            check("runnel.v1.Records")
                .await
                .unwrap()
                .into_inner()
                .status,
            ServingStatus::Serving as i32
        );
        assert_eq!(
            check("nope").await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        stopping.store(true, Ordering::Relaxed);
        assert_eq!(
            check("").await.unwrap().into_inner().status,
            ServingStatus::NotServing as i32
        );
        let list = h
            .list(Request::new(HealthListRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.statuses.len(), SERVICES.len());
    }

    #[tokio::test]
    async fn public_services_wait_for_readiness_and_liveness_does_not() {
        let ready = Arc::new(AtomicBool::new(false));
        let h = HealthService::new(Arc::new(AtomicBool::new(false))).with_readiness(ready.clone());
        let status = |s: &str| h.status_of(s);
        assert_eq!(status(""), Some(ServingStatus::Serving));
        assert_eq!(
            status("runnel.internal.v1.Meta"),
            Some(ServingStatus::Serving)
        );
        assert_eq!(status("runnel.v1.Records"), Some(ServingStatus::NotServing));
        ready.store(true, Ordering::Relaxed);
        assert_eq!(status("runnel.v1.Records"), Some(ServingStatus::Serving));
    }

    #[test]
    fn ready_once_its_own_fresh_heartbeat_is_applied_and_caught_up() {
        let facts = |own, applied, committed| ReadinessFacts {
            own,
            applied: LogIndex(applied),
            committed: LogIndex(committed),
        };
        let started = 1_000;
        // Joined and caught up.
        assert!(is_ready(
            &facts(Some((NodeStatus::Up, 1_500)), 9, 9),
            started
        ));
        // Not in the node table yet, or only as it was before this restart.
        assert!(!is_ready(&facts(None, 9, 9), started));
        assert!(!is_ready(
            &facts(Some((NodeStatus::Up, 900)), 9, 9),
            started
        ));
        // Registered but no heartbeat applied yet, or marked down.
        assert!(!is_ready(
            &facts(Some((NodeStatus::Joining, 1_500)), 9, 9),
            started
        ));
        assert!(!is_ready(
            &facts(Some((NodeStatus::Down, 1_500)), 9, 9),
            started
        ));
        // Behind the meta commit point.
        assert!(!is_ready(
            &facts(Some((NodeStatus::Up, 1_500)), 8, 9),
            started
        ));
        // A draining node still serves.
        assert!(is_ready(
            &facts(Some((NodeStatus::Draining, 1_500)), 9, 9),
            started
        ));
    }
}
