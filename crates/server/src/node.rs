//! One running node: [`Node::start`] wires the pieces together, [`NodeHandle`] stops
//! them.
//!
//! One gRPC port (`config.listen`) serves everything: the Raft transport of every
//! group ([`runnel_raft::Registry::service`]), the internal `Meta` service
//! ([`crate::placement::service`]) and the public API (`crate::api`). Background
//! tasks: the meta applier, the membership loop (register, heartbeat), the meta
//! leader's planning loop (idle unless this node leads the meta group), the shard
//! manager, and in real builds the admin HTTP port.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use runnel_log::Disk;
use runnel_nodemeta::{MetaStore, NodeMeta};
use runnel_proto::internal::v1::meta_server::MetaServer;
use runnel_proto::internal::v1::raft_transport_server::RaftTransportServer;
use runnel_raft::{RaftTimings, Registry, RegistryConfig};
use runnel_types::NodeId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Bootstrap, Config};
use crate::context::NodeContext;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::placement::bootstrap::{join, log_is_empty, prepare_meta_group, run_membership};
use crate::placement::service::MetaService;
use crate::placement::{Placement, PlacementConfig, applier, leader};
use crate::shard_manager::ShardManager;

/// The whole shutdown, at most.

/// How often the gRPC server pings a client connection (see `serve`).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the server drops the connection.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Of which handing off leaderships may take at most.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// Knobs tests turn (production uses the defaults).
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    pub placement: PlacementConfig,
    pub raft: Option<RaftTimings>,
}

pub struct Node;

/// A running node.
pub struct NodeHandle {
    pub ctx: Arc<NodeContext>,
    /// `/readyz` answers 200 while set.
    pub ready: Arc<AtomicBool>,
    /// Set when shutdown begins: gRPC health then answers NOT_SERVING.
    stopping: Arc<AtomicBool>,
    /// Ends open subscriptions, which would otherwise keep the server from draining.
    subscriptions: crate::api::SubscriptionsStop,
    tasks: Vec<JoinHandle<()>>,
    server_stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts a node with the production timings.
    pub async fn start(
        config: Config,
        disk: Arc<dyn Disk>,
        store: Arc<dyn MetaStore>,
    ) -> Result<NodeHandle, ServerError> {
        Node::start_with(config, disk, store, NodeOptions::default()).await
    }

    pub async fn start_with(
        config: Config,
        disk: Arc<dyn Disk>,
        store: Arc<dyn MetaStore>,
        options: NodeOptions,
    ) -> Result<NodeHandle, ServerError> {
        let me = config.node_id;
        let span = info_span!("node", node_id = %me);
        start_inner(config, disk, store, options)
            .instrument(span)
            .await
    }
}

async fn start_inner(
    config: Config,
    disk: Arc<dyn Disk>,
    store: Arc<dyn MetaStore>,
    options: NodeOptions,
) -> Result<NodeHandle, ServerError> {
    let me = config.node_id;
    let started_ms = crate::context::now_ms();
    let mut rc = RegistryConfig::new(me, config.advertise.clone(), config.data_dir.clone());
    if let Some(t) = options.raft.clone() {
        rc.timings = t;
    }
    let (metrics, prom) = Metrics::new();
    let fsync = metrics.fsync_duration.clone();
    rc.fsync_observer = Some(runnel_raft::FsyncObserver::new(move |took| {
        fsync.observe(took.as_secs_f64())
    }));
    let registry = Arc::new(Registry::new(rc, disk, Arc::new(NodeMeta::new(store)))?);
    let reopened = registry.open_existing().await?;
    info!(groups = reopened.len(), "hosted groups reopened");
    let meta_group = prepare_meta_group(&registry, me, &config.bootstrap).await?;
    let seeds = match &config.bootstrap {
        Bootstrap::Initial(voters) => voters.clone(),
        Bootstrap::Join(_) => BTreeMap::new(),
    };
    let placement = Arc::new(Placement::new(
        me,
        registry.clone(),
        seeds,
        options.placement,
        config.min_retention_ms,
    ));
    let ctx = Arc::new(NodeContext {
        node_id: me,
        advertise: config.advertise.clone(),
        registry: registry.clone(),
        placement: placement.clone(),
        metrics: Arc::new(metrics),
        default_replication: config.default_replication,
    });

    let mut tasks = Vec::new();
    let meta_committed = meta_group.committed();
    let needs_join = matches!(config.bootstrap, Bootstrap::Join(_)) && log_is_empty(&meta_group);
    tasks.push(tokio::spawn(applier::run(placement.clone(), meta_group)));
    let stopping = Arc::new(AtomicBool::new(false));
    // Not ready until joined and caught up with the meta log (see `health`).
    let ready = Arc::new(AtomicBool::new(false));
    let (server_stop, server, subscriptions) = serve(&config, &ctx, &stopping, &ready)?;
    if let (true, Bootstrap::Join(via)) = (needs_join, &config.bootstrap) {
        let t = join(
            placement.clone(),
            via.clone(),
            config.advertise.clone(),
            config.labels.clone(),
        );
        tasks.push(tokio::spawn(t));
    }
    let membership = run_membership(
        placement.clone(),
        registry.clone(),
        config.advertise.clone(),
        config.labels.clone(),
    );
    tasks.push(tokio::spawn(membership));
    tasks.push(tokio::spawn(leader::run(placement.clone())));
    tasks.push(tokio::spawn(crate::api::run_retention(ctx.clone())));
    tasks.push(tokio::spawn(crate::health::track_readiness(
        ctx.clone(),
        ready.clone(),
        started_ms,
    )));
    tasks.push(tokio::spawn(
        ShardManager::new(registry.clone(), placement.clone()).run(meta_committed),
    ));
    tasks.push(tokio::spawn(crate::gauges::run(
        ctx.clone(),
        config.data_dir.clone(),
    )));

    #[cfg(not(madsim))]
    tasks.push(admin(&config, prom, &registry, &ready).await?);
    #[cfg(madsim)]
    drop(prom);
    info!(listen = %config.listen, advertise = %config.advertise, "node started");
    Ok(NodeHandle {
        ctx,
        ready,
        stopping,
        subscriptions,
        tasks,
        server_stop: Some(server_stop),
        server: Some(server),
    })
}

/// Starts the gRPC server on `config.listen`.
fn serve(
    config: &Config,
    ctx: &Arc<NodeContext>,
    stopping: &Arc<AtomicBool>,
    ready: &Arc<AtomicBool>,
) -> Result<
    (
        oneshot::Sender<()>,
        JoinHandle<()>,
        crate::api::SubscriptionsStop,
    ),
    ServerError,
> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        // Pings on open connections, so that a client that vanished without closing
        // its connection (power loss, cut link) frees its subscription slot and task
        // within KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT instead of never.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(crate::health::HealthServer::new(
            crate::health::HealthService::new(stopping.clone()).with_readiness(ready.clone()),
        ))
        .add_service(RaftTransportServer::new(ctx.registry.service()))
        .add_service(MetaServer::new(MetaService::new(ctx.placement.clone())));
    let (router, subscriptions) = crate::api::add_services_with_stop(router, ctx.clone());
    // Server reflection, so that grpcurl works without the .proto files. Real builds
    // only: tonic-reflection is built against the real tonic.
    #[cfg(not(madsim))]
    let router = {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(runnel_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServerError::Internal(format!("server reflection: {e}")))?;
        router.add_service(reflection)
    };
    let listen = config.listen;
    let me = ctx.node_id;
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = stop_rx.await;
        };
        if let Err(e) = router.serve_with_shutdown(listen, stop).await {
            tracing::error!(node_id = %me, listen = %listen, error = %e, "gRPC server failed");
        }
    });
    Ok((stop_tx, task, subscriptions))
}

#[cfg(not(madsim))]
async fn admin(
    config: &Config,
    prom: prometheus_client::registry::Registry,
    _registry: &Arc<Registry>,
    ready: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ServerError> {
    let listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| {
            ServerError::invalid(
                "admin-listen",
                format!("cannot listen on {}: {e}", config.admin_listen),
            )
        })?;
    let state = crate::admin_http::AdminState {
        registry: Arc::new(prom),
        ready: ready.clone(),
    };
    let me = config.node_id;
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::admin_http::serve(listener, state).await {
            tracing::error!(node_id = %me, error = %e, "admin HTTP port failed");
        }
    }))
}

impl NodeHandle {
    pub fn node_id(&self) -> NodeId {
        self.ctx.node_id
    }

    /// Graceful stop (SIGTERM): not ready any more, background work stopped,
    /// leaderships handed off, the gRPC server drained, every group shut down; all
    /// within [`SHUTDOWN_TIMEOUT`], after which the rest is abandoned.
    pub async fn shutdown(mut self) {
        let me = self.ctx.node_id;
        let span = info_span!("shutdown", node_id = %me);
        async {
            if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.shutdown_steps())
                .await
                .is_err()
            {
                warn!("shutdown took too long; abandoning the rest");
            }
            info!("node stopped");
        }
        .instrument(span)
        .await
    }

    async fn shutdown_steps(&mut self) {
        self.ready.store(false, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        self.subscriptions.stop();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = tokio::time::timeout(HANDOFF_TIMEOUT, hand_off(&self.ctx.registry)).await;
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.ctx.registry.shutdown().await;
    }

    /// Stops abruptly: tasks and server aborted, groups stopped without handing off
    /// (tests use it to kill a node).
    pub async fn kill(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.ctx.registry.shutdown().await;
    }
}

/// Asks each group this node leads to hand leadership to another voter. (Takes effect
/// once the transport carries TransferLeader; see `shard_manager`.)
async fn hand_off(registry: &Registry) {
    for id in registry.group_ids() {
        let Ok(group) = registry.group(id) else {
            continue;
        };
        if !group.is_leader() {
            continue;
        }
        let to = {
            let m = group.raft().metrics().borrow().clone();
            let me = registry.node_id().0;
            m.membership_config
                .membership()
                .voter_ids()
                .find(|v| *v != me)
        };
        if let Some(to) = to {
            let _ = group.raft().trigger().transfer_leader(to).await;
        }
    }
}
