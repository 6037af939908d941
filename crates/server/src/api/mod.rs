//! The public gRPC API (`runnel.v1`, `proto/runnel/v1/`): one module per service, over
//! pure helpers.
//!
//! What is where:
//! - [`validate`]: every request field checked at the edge (pure): a bad value is
//!   `InvalidArgument` naming the field, the problem and the limit.
//! - [`router`]: stream + hash key → open shard, shard id text ↔ [`ShardId`], the
//!   leader hint of a shard (pure, over the applied [`MetaState`](runnel_meta::MetaState)).
//! - [`streams`]: `StreamAdmin`; [`groups`]: `ConsumerGroups`; [`cluster`]: `Cluster`.
//!   Any node answers them from its applied meta state; changes are proposed to the
//!   placement service, which answers once the change is applied on this node.
//! - [`records`]: `Records` (put, iterators, get); [`read`]: reading committed batches
//!   from a position (iterator position math, AT_TIMESTAMP search, pages);
//!   [`subscribe`]: the push subscription.
//! - [`retention`]: the retention task (what to trim, pure; the loop that trims).
//!
//! Routing: a data call (put, iterator, get, subscribe) is served only by the shard's
//! leader. Any other node answers `NOT_LEADER` with the leader's address when it knows
//! it; it never forwards. The SDK already routes per shard with a cached shard map, so a
//! redirect costs one extra round trip only after a leader change, while forwarding would
//! double the bytes on the wire for every misrouted call and hide stale maps from the
//! client. Reads are served by the leader too: a follower serves only committed data as
//! well, but its commit point lags the leader's, so a producer could not read its own
//! acknowledged write there. (A leader cut off from its peers keeps serving reads until
//! it steps down: what it serves is committed and final, only possibly not the newest.)
//!
//! Bounds: a node serves at most [`records::GET_RECORDS_IN_FLIGHT_MAX`] `GetRecords`
//! calls and [`records::SUBSCRIPTIONS_MAX`] subscriptions at once (beyond, `THROTTLED`
//! with a retry-after); writes wait on each shard's bounded write pipeline; a
//! subscription holds at most one event in its channel.
//!
//! *Architecture invariant*: handlers reach the cluster only through
//! [`NodeContext`]: `placement` for metadata, `registry` for shard groups.

pub mod cluster;
pub mod groups;
pub mod read;
pub mod records;
pub mod retention;
pub mod router;
pub mod streams;
pub mod subscribe;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use runnel_proto::v1::cluster_server::ClusterServer;
use runnel_proto::v1::consumer_groups_server::ConsumerGroupsServer;
use runnel_proto::v1::records_server::RecordsServer;
use runnel_proto::v1::stream_admin_server::StreamAdminServer;
use runnel_raft::detwatch::DetSender;
use tonic::{Code, Response, Status};
use tracing::{Instrument, debug, field, info_span, warn};

use crate::context::NodeContext;
use crate::error::ServerError;
use crate::metrics::{Op, OpCode};

pub use retention::run_retention;

/// Checks that `stream` exists (and is ACTIVE when `active`) in the applied meta state;
/// before answering NotFound (or "not ACTIVE yet") passes a read barrier
/// ([`crate::placement::Placement::read_barrier`]) and looks again, so a node that lags
/// the meta leader by a heartbeat never denies a stream whose creation was already
/// acknowledged through another node. If the barrier itself fails (no meta leader), the
/// local answer stands.
pub(crate) async fn check_stream(
    ctx: &NodeContext,
    stream: &runnel_types::StreamName,
    active: bool,
) -> Result<(), ServerError> {
    let look = || {
        ctx.placement.read(|st| {
            if active {
                router::active_stream(st, stream).map(drop)
            } else {
                router::stream(st, stream).map(drop)
            }
        })
    };
    match look() {
        Err(ServerError::NotFound { .. } | ServerError::StreamNotActive { .. }) => {
            if let Err(e) = ctx.placement.read_barrier().await {
                debug!(%stream, error = %e, "read barrier failed; answering from the local state");
            }
            look()
        }
        other => other,
    }
}

/// Largest request the Records service decodes: a full `PutRecords` (5 MiB of keys and
/// data) plus the protobuf framing and explicit hash keys of 500 entries.
pub const RECORDS_REQUEST_BYTES_MAX: usize = 6 * 1024 * 1024;
/// Largest response the Records service encodes: a full `GetRecords` (10 MiB of keys
/// and data) plus framing. Clients must accept this much (tonic's default is 4 MiB).
pub const RECORDS_RESPONSE_BYTES_MAX: usize = 12 * 1024 * 1024;

/// The generated server types: madsim's generator adds an interceptor parameter.
#[cfg(not(madsim))]
mod server_types {
    use runnel_proto::v1::cluster_server::ClusterServer;
    use runnel_proto::v1::consumer_groups_server::ConsumerGroupsServer;
    use runnel_proto::v1::records_server::RecordsServer;
    use runnel_proto::v1::stream_admin_server::StreamAdminServer;

    pub type Streams = StreamAdminServer<super::streams::StreamAdminService>;
    pub type Records = RecordsServer<super::records::RecordsService>;
    pub type Groups = ConsumerGroupsServer<super::groups::ConsumerGroupsService>;
    pub type Cluster = ClusterServer<super::cluster::ClusterService>;
}

#[cfg(madsim)]
mod server_types {
    use runnel_proto::v1::cluster_server::ClusterServer;
    use runnel_proto::v1::consumer_groups_server::ConsumerGroupsServer;
    use runnel_proto::v1::records_server::RecordsServer;
    use runnel_proto::v1::stream_admin_server::StreamAdminServer;
    use tonic::codegen::IdentityInterceptor as I;

    pub type Streams = StreamAdminServer<super::streams::StreamAdminService, I>;
    pub type Records = RecordsServer<super::records::RecordsService, I>;
    pub type Groups = ConsumerGroupsServer<super::groups::ConsumerGroupsService, I>;
    pub type Cluster = ClusterServer<super::cluster::ClusterService, I>;
}

/// The four public services of a node, to add to its tonic server.
pub struct ApiServices {
    pub streams: server_types::Streams,
    pub records: server_types::Records,
    pub groups: server_types::Groups,
    pub cluster: server_types::Cluster,
}

/// Builds the public services over a node's context.
pub fn services(ctx: Arc<NodeContext>) -> ApiServices {
    services_with_stop(ctx).0
}

/// Ends every open subscription of a node at once. Call it when a graceful shutdown
/// starts, before the gRPC server drains: the drain waits for open streams, and a
/// subscription never ends on its own. Each subscription ends within moments with
/// `UNAVAILABLE`, and its client subscribes again at the shard's (next) leader.
#[derive(Clone)]
pub struct SubscriptionsStop(Arc<DetSender<bool>>);

impl SubscriptionsStop {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// [`services`], and the handle that ends their subscriptions.
pub fn services_with_stop(ctx: Arc<NodeContext>) -> (ApiServices, SubscriptionsStop) {
    let (stop, _) = runnel_raft::detwatch::channel(false);
    let stop = Arc::new(stop);
    let records = records::RecordsService::new(ctx.clone(), stop.clone());
    let services = ApiServices {
        streams: StreamAdminServer::new(streams::StreamAdminService::new(ctx.clone())),
        records: RecordsServer::new(records)
            .max_decoding_message_size(RECORDS_REQUEST_BYTES_MAX)
            .max_encoding_message_size(RECORDS_RESPONSE_BYTES_MAX),
        groups: ConsumerGroupsServer::new(groups::ConsumerGroupsService::new(ctx.clone())),
        cluster: ClusterServer::new(cluster::ClusterService::new(ctx)),
    };
    (services, SubscriptionsStop(stop))
}

/// Adds the public services to a node's gRPC router (the port that also serves the Raft
/// transport and the internal `Meta` service).
pub fn add_services<L>(
    router: tonic::transport::server::Router<L>,
    ctx: Arc<NodeContext>,
) -> tonic::transport::server::Router<L> {
    add_services_with_stop(router, ctx).0
}

/// [`add_services`], and the handle that ends the subscriptions (for shutdown).
pub fn add_services_with_stop<L>(
    router: tonic::transport::server::Router<L>,
    ctx: Arc<NodeContext>,
) -> (tonic::transport::server::Router<L>, SubscriptionsStop) {
    let (s, stop) = services_with_stop(ctx);
    let router = router
        .add_service(s.streams)
        .add_service(s.records)
        .add_service(s.groups)
        .add_service(s.cluster);
    (router, stop)
}

/// Runs one request handler inside a span (`op`, `node_id`; handlers fill in `stream`
/// and `shard_id` with [`record_shard`]), records its metrics, logs its failure once,
/// and converts the result into a gRPC answer.
pub(crate) async fn observe<T>(
    ctx: &NodeContext,
    op: &'static str,
    request_bytes: usize,
    handler: impl Future<Output = Result<T, ServerError>>,
) -> Result<Response<T>, Status> {
    let span = info_span!(
        "rpc",
        op,
        node_id = %ctx.node_id,
        stream = field::Empty,
        shard_id = field::Empty
    );
    let started = tokio::time::Instant::now();
    let result = handler.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(e) => {
            let _enter = span.enter();
            log_failure(op, e);
            e.codes().1
        }
    };
    ctx.metrics
        .requests
        .get_or_create(&OpCode {
            op,
            code: code_name(code),
        })
        .inc();
    ctx.metrics
        .request_bytes
        .get_or_create(&Op { op })
        .inc_by(request_bytes as u64);
    ctx.metrics
        .request_duration
        .get_or_create(&Op { op })
        .observe(started.elapsed().as_secs_f64());
    result.map(Response::new).map_err(Status::from)
}

/// Fills the current request span's `stream` and `shard_id` fields.
pub(crate) fn record_shard(stream: &str, shard: Option<runnel_types::ShardId>) {
    let span = tracing::Span::current();
    span.record("stream", stream);
    if let Some(shard) = shard {
        span.record("shard_id", field::display(shard));
    }
}

/// A failed call is the client's business unless the server is at fault.
fn log_failure(op: &'static str, e: &ServerError) {
    match e {
        ServerError::Internal(_) => warn!(op, error = %e, "request failed"),
        _ => debug!(op, error = %e, "request refused"),
    }
}

/// The gRPC code's name as the metrics label it (`OK`, `UNAVAILABLE`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
