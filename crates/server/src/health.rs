//! gRPC health checking (`grpc.health.v1`), so that grpcurl, grpc_health_probe and
//! Kubernetes' native `grpc:` probes work against the node's one gRPC port.
//!
//! The overall status (service `""`) is SERVING from the moment the port listens until
//! shutdown begins, whatever the quorum: liveness must not depend on other nodes, or a
//! cluster that lost quorum would restart itself in a loop. Readiness, which does depend
//! on the node's state, is `/readyz` on the admin port.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use runnel_proto::health::health_check_response::ServingStatus;
use runnel_proto::health::health_server::Health;
pub use runnel_proto::health::health_server::HealthServer;
use runnel_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use tonic::{Request, Response, Status};

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

/// How often a `Watch` stream re-checks the status.
const WATCH_POLL_MS: u64 = 1000;

#[derive(Clone)]
pub struct HealthService {
    /// Set when shutdown begins.
    stopping: Arc<AtomicBool>,
}

impl HealthService {
    pub fn new(stopping: Arc<AtomicBool>) -> HealthService {
        HealthService { stopping }
    }

    fn status_of(&self, service: &str) -> Option<ServingStatus> {
        if !SERVICES.contains(&service) {
            return None;
        }
        Some(if self.stopping.load(Ordering::Relaxed) {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        })
    }
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
}
