//! Three (and four) in-process nodes on loopback TCP with real files in temporary
//! directories: replication, leader failover and restart, catch-up by snapshot behind
//! the trim point, membership changes; with 1 group and with 64.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Cluster;
use runnel_log::RealDisk;
use runnel_nodemeta::{MemStore, NodeMeta};
use runnel_raft::{RaftTimings, Registry, RegistryConfig};
use runnel_types::{GroupId, NodeId};

struct Node {
    registry: Arc<Registry>,
    server: tokio::task::JoinHandle<()>,
}

/// Nodes with real segment files; node metadata in a `MemStore` the test keeps across
/// restarts (sled has its own tests; this keeps restarts free of its directory lock).
struct RealCluster {
    timings: RaftTimings,
    dir: tempfile::TempDir,
    ports: BTreeMap<NodeId, u16>,
    metas: BTreeMap<NodeId, MemStore>,
    nodes: BTreeMap<NodeId, Node>,
}

impl RealCluster {
    fn new() -> RealCluster {
        RealCluster::with_timings(RaftTimings {
            heartbeat_interval_ms: 50,
            election_timeout_ms_min: 300,
            election_timeout_ms_max: 600,
        })
    }

    /// Many groups: 64 groups on 3 nodes, 192 openraft instances sharing two cores,
    /// at the production timings ([`RaftTimings::default`]). Idle groups quiesce
    /// (`quiesce.rs`), so between the test's bursts of writes only node-level probes
    /// run, not 192 heartbeat timers. The many-group tests still take turns
    /// ([`HEAVY`]) so that two of them never share the cores.
    fn many_groups() -> RealCluster {
        RealCluster::with_timings(RaftTimings::default())
    }

    fn with_timings(timings: RaftTimings) -> RealCluster {
        RealCluster {
            timings,
            dir: tempfile::tempdir().expect("tempdir"),
            ports: BTreeMap::new(),
            metas: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Cluster for RealCluster {
    fn addr(&self, node: NodeId) -> String {
        format!("127.0.0.1:{}", self.ports[&node])
    }

    async fn start(&mut self, node: NodeId) -> anyhow::Result<()> {
        if !self.ports.contains_key(&node) {
            self.ports.insert(node, free_port());
        }
        let addr = self.addr(node);
        let store = self.metas.entry(node).or_default().clone();
        let meta = Arc::new(NodeMeta::new(Arc::new(store)));
        let mut cfg = RegistryConfig::new(
            node,
            addr.clone(),
            self.dir.path().join(format!("node-{node}")),
        );
        cfg.timings = self.timings.clone();
        let registry = Arc::new(Registry::new(cfg, RealDisk::shared(), meta)?);
        registry.open_existing().await?;
        let svc = registry.service().into_server();
        let sock: std::net::SocketAddr = addr.parse()?;
        let server = tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve(sock)
                .await
            {
                tracing::error!(error = %e, "server stopped");
            }
        });
        // Let the listener bind before peers dial.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.nodes.insert(node, Node { registry, server });
        Ok(())
    }

    async fn kill(&mut self, node: NodeId) -> anyhow::Result<()> {
        if let Some(n) = self.nodes.remove(&node) {
            n.server.abort();
            let _ = n.server.await;
            n.registry.shutdown().await;
        }
        Ok(())
    }

    fn registry(&self, node: NodeId) -> Option<Arc<Registry>> {
        self.nodes.get(&node).map(|n| n.registry.clone())
    }

    async fn create_group(&self, node: NodeId, group: GroupId) -> anyhow::Result<()> {
        self.registry(node)
            .ok_or_else(|| anyhow::anyhow!("node {node} is down"))?
            .create_group(group)
            .await?;
        Ok(())
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        for n in self.nodes.values() {
            n.server.abort();
        }
    }
}

/// Held by each many-group test for its whole run: they take turns (see
/// [`RealCluster::many_groups`]).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn groups(n: u64) -> Vec<GroupId> {
    (1..=n).map(GroupId).collect()
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_replicates_fails_over_and_restarts() -> anyhow::Result<()> {
    init_tracing();
    common::replicate_failover_restart(&mut RealCluster::new(), &groups(1), 10).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_groups_replicate_fail_over_and_restart() -> anyhow::Result<()> {
    init_tracing();
    let _turn = HEAVY.lock().await;
    common::replicate_failover_restart(&mut RealCluster::many_groups(), &groups(64), 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_behind_trim_point_catches_up_by_snapshot() -> anyhow::Result<()> {
    init_tracing();
    common::follower_behind_trim_point(&mut RealCluster::new(), &groups(1), 10).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_by_a_snapshot_of_several_chunks() -> anyhow::Result<()> {
    init_tracing();
    common::follower_catches_up_by_large_snapshot(&mut RealCluster::new(), GroupId(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_cancelled_wiped_and_added_again_catches_up() -> anyhow::Result<()> {
    init_tracing();
    common::learner_cancelled_wiped_and_added_again(&mut RealCluster::new(), GroupId(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_groups_catch_up_by_snapshot() -> anyhow::Result<()> {
    init_tracing();
    let _turn = HEAVY.lock().await;
    common::follower_behind_trim_point(&mut RealCluster::many_groups(), &groups(64), 4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_add_learner_promote_remove_voter() -> anyhow::Result<()> {
    init_tracing();
    common::membership_change(&mut RealCluster::new(), &groups(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfers_to_a_chosen_follower() -> anyhow::Result<()> {
    init_tracing();
    common::transfer_leadership(&mut RealCluster::new(), &groups(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_quiesce_and_still_fail_over() -> anyhow::Result<()> {
    init_tracing();
    common::idle_groups_quiesce_and_fail_over(&mut RealCluster::new(), &groups(2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_group_gets_not_found() -> anyhow::Result<()> {
    init_tracing();
    let mut c = RealCluster::new();
    c.start(NodeId(1)).await?;
    let url = format!("http://{}", c.addr(NodeId(1)));
    let mut client =
        runnel_proto::internal::v1::raft_transport_client::RaftTransportClient::connect(url)
            .await?;
    let req = runnel_proto::internal::v1::VoteRequest {
        group_id: 99,
        ..Default::default()
    };
    let status = client.vote(req).await.expect_err("group 99 is not hosted");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
    let batch = runnel_proto::internal::v1::BatchAppendRequest {
        requests: vec![runnel_proto::internal::v1::AppendEntriesRequest {
            group_id: 99,
            ..Default::default()
        }],
    };
    let resp = client.batch_append(batch).await?.into_inner();
    let Some(runnel_proto::internal::v1::append_entries_response::Result::Error(e)) =
        &resp.responses[0].result
    else {
        panic!("expected a per-item error, got {resp:?}");
    };
    assert_eq!(
        e.code,
        runnel_proto::internal::v1::GroupErrorCode::UnknownGroup as i32
    );
    Ok(())
}
