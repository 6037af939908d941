//! How a node finds its cluster, and how it stays registered.
//!
//! - [`prepare_meta_group`] (before the gRPC server starts): a node whose data dir
//!   already hosts the meta group reopens it and never bootstraps again. Otherwise,
//!   with `Bootstrap::Initial(voters)`, it creates the meta group; the lowest voter id
//!   initializes it with all voters while its log is empty. With `Bootstrap::Join`, it
//!   creates an empty meta group for the leader to replicate into.
//! - [`join`] (after the server is up): calls the internal `Join` at the given member
//!   until it succeeds; the meta leader registers the node and adds it as a meta
//!   learner.
//! - [`run_membership`]: registers this node (address, labels) and heartbeats every
//!   `heartbeat_interval_ms` with its load and the shards it leads, and sooner (at
//!   most every [`LEADER_REPORT_MIN_INTERVAL_MS`]) when the shards it leads change: a
//!   new stream is ACTIVE only once every shard's leader is reported, so a report
//!   that waited for the next period added up to a period to every creation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runnel_meta::limits::HEARTBEAT_LEADERS_MAX;
use runnel_meta::{Command, LeaderReport, NodeLoad};
use runnel_proto::internal::v1::JoinRequest;
use runnel_raft::{Group, Registry};
use runnel_types::{GroupId, NodeId, ShardId, Term};
use tracing::{Instrument, info, info_span, warn};

use super::Placement;
use super::service::{connect, node_labels};
use crate::config::Bootstrap;
use crate::context::now_ms;
use crate::error::ServerError;

/// Backoff between join attempts: doubles from the first to the last.
pub const JOIN_BACKOFF_MS: (u64, u64) = (200, 5_000);
/// Least time between two heartbeats sent early because the shards this node leads
/// changed (each heartbeat is a meta log entry).
pub const LEADER_REPORT_MIN_INTERVAL_MS: u64 = 200;

/// Hosts the meta group on this node (reopened, created, or created and initialized).
pub async fn prepare_meta_group(
    registry: &Registry,
    me: NodeId,
    bootstrap: &Bootstrap,
) -> Result<Arc<Group>, ServerError> {
    if let Ok(group) = registry.group(GroupId::META) {
        info!(node_id = %me, "meta group reopened; not bootstrapping again");
        if let Bootstrap::Initial(voters) = bootstrap {
            initialize_if_first(&group, me, voters).await?;
        }
        return Ok(group);
    }
    if let Bootstrap::Initial(voters) = bootstrap
        && !voters.contains_key(&me)
    {
        return Err(ServerError::invalid(
            "initial-cluster",
            format!(
                "does not name this node ({me}); list every meta voter, this one included, or use --join"
            ),
        ));
    }
    let group = registry.create_group(GroupId::META).await?;
    info!(node_id = %me, "meta group created");
    if let Bootstrap::Initial(voters) = bootstrap {
        initialize_if_first(&group, me, voters).await?;
    }
    Ok(group)
}

/// The lowest voter initializes the meta group, once: only while its log is empty and
/// it has never voted (a crash between creating and initializing is covered; a group
/// that has ever run is never initialized again).
async fn initialize_if_first(
    group: &Group,
    me: NodeId,
    voters: &BTreeMap<NodeId, String>,
) -> Result<(), ServerError> {
    if voters.keys().next() != Some(&me) || !log_is_empty(group) {
        return Ok(());
    }
    info!(node_id = %me, voters = ?voters.keys().collect::<Vec<_>>(), "initializing the meta group");
    group.initialize(voters).await?;
    Ok(())
}

/// Has this replica never seen a log entry nor a vote? The log is read from storage
/// (openraft's metrics may lag a reopened log; the simulation caught a restarted node
/// initializing twice that way).
pub fn log_is_empty(group: &Group) -> bool {
    let m = group.raft().metrics().borrow().clone();
    !group.has_log() && m.last_log_index.is_none() && m.current_term == 0
}

/// Joins through `via` until it works (backing off, forever: a node that cannot join
/// has nothing else to do; the operator sees the warnings).
pub async fn join(
    placement: Arc<Placement>,
    via: String,
    address: String,
    labels: BTreeMap<String, String>,
) {
    let me = placement.node_id();
    let mut backoff = JOIN_BACKOFF_MS.0;
    loop {
        let req = JoinRequest {
            node_id: me.0,
            address: address.clone(),
            labels: labels.clone().into_iter().collect(),
        };
        let attempt = async {
            let mut client = connect(&via).await?;
            client
                .join(req)
                .await
                .map_err(|s| ServerError::Unavailable {
                    what: format!("join through {via}"),
                    reason: s.message().to_string(),
                    retry_after_ms: backoff,
                })
        };
        match tokio::time::timeout(super::service::FORWARD_TIMEOUT, attempt).await {
            Ok(Ok(_)) => {
                info!(node_id = %me, via = %via, "joined the cluster");
                return;
            }
            Ok(Err(e)) => warn!(node_id = %me, via = %via, error = %e, "join failed; retrying"),
            Err(_) => warn!(node_id = %me, via = %via, "join timed out; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(backoff)).await;
        backoff = (backoff * 2).min(JOIN_BACKOFF_MS.1);
    }
}

/// Registers this node, then heartbeats, forever: every `heartbeat_interval_ms`, or
/// sooner when the shards it leads changed since the last heartbeat sent.
pub async fn run_membership(
    placement: Arc<Placement>,
    registry: Arc<Registry>,
    address: String,
    labels: BTreeMap<String, String>,
) {
    let me = placement.node_id();
    let span = info_span!("membership", node_id = %me);
    async move {
        let period = Duration::from_millis(placement.config.heartbeat_interval_ms);
        let check = period.min(Duration::from_millis(LEADER_REPORT_MIN_INTERVAL_MS));
        let mut registered = false;
        // The leaders of the last heartbeat that applied, and when it was sent.
        let mut reported: Option<Vec<LeaderReport>> = None;
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let cmd = if registered {
                heartbeat(&registry, me)
            } else {
                register_command(me, &address, &labels)
            };
            let leaders = match &cmd {
                Command::Heartbeat { leaders, .. } => Some(leaders.clone()),
                _ => None,
            };
            let due = !registered || last_sent.elapsed() >= period || leaders != reported;
            if !due {
                tokio::time::sleep(check).await;
                continue;
            }
            last_sent = tokio::time::Instant::now();
            match placement.propose(cmd).await {
                Ok(_) if !registered => {
                    info!(address = %address, "registered");
                    registered = true;
                    continue;
                }
                Ok(_) => reported = leaders,
                Err(e @ ServerError::NotFound { .. }) => {
                    warn!(error = %e, "heartbeat refused; registering again");
                    registered = false;
                }
                Err(e) => {
                    tracing::debug!(error = %e, registered, "membership proposal failed; retrying");
                    tokio::time::sleep(period).await;
                    continue;
                }
            }
            tokio::time::sleep(check).await;
        }
    }
    .instrument(span)
    .await
}

fn register_command(me: NodeId, address: &str, labels: &BTreeMap<String, String>) -> Command {
    Command::RegisterNode {
        node: me,
        address: address.to_string(),
        labels: node_labels(labels),
        capacity_weight: 1,
        now_ms: now_ms(),
    }
}

/// This node's heartbeat: load and the shards it leads (with their terms).
fn heartbeat(registry: &Registry, me: NodeId) -> Command {
    let mut leaders = Vec::new();
    let mut hosted = 0u32;
    for id in registry.group_ids() {
        if id.is_meta() {
            continue;
        }
        hosted += 1;
        let Ok(group) = registry.group(id) else {
            continue;
        };
        if group.is_leader() && leaders.len() < HEARTBEAT_LEADERS_MAX {
            let term = group.raft().metrics().borrow().current_term;
            leaders.push(LeaderReport {
                shard: ShardId(id.0),
                term: Term(term),
            });
        }
    }
    let load = NodeLoad {
        replicas_hosted: hosted,
        ..NodeLoad::default()
    };
    Command::Heartbeat {
        node: me,
        now_ms: now_ms(),
        load,
        leaders,
    }
}
