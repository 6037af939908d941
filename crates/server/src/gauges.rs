//! The node's gauges and its election counter, refreshed every [`GAUGES_INTERVAL`]
//! from what the node already knows: its replicas' Raft state (roles, replication lag,
//! leaderships won), its applied meta state (under-replicated and leaderless shards,
//! which nodes are up) and the filesystem of its data directory. The alert rules and
//! the dashboard in `deploy/observability/` read them; until this task existed they
//! were exported but never set, so those alerts could not fire.
//!
//! The census is pure ([`census`], [`ElectionTracker`]) and tested without a cluster;
//! [`run`] only gathers the inputs and sets the metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runnel_meta::NodeStatus;
use runnel_raft::{ReplicaRole, ReplicaView};
use runnel_types::{GroupId, ShardId};

use crate::context::NodeContext;
use crate::metrics::{Metrics, NodeLabel, Role, ShardLabel};

/// How often the gauges are refreshed: well under a Prometheus scrape interval's
/// usual 15 s, and cheap (one look at each hosted group).
pub const GAUGES_INTERVAL: Duration = Duration::from_secs(5);

/// What one look at this node's shard replicas found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Replicas by role name (`leader`, `follower`, `learner`, `candidate`); every
    /// name is present, zero included, so that a role that empties reads 0.
    pub roles: BTreeMap<&'static str, i64>,
    /// On the shards this node leads: entries the furthest replica is behind.
    pub lag: BTreeMap<ShardId, u64>,
}

const ROLES: [&str; 4] = ["leader", "follower", "learner", "candidate"];

fn role_name(role: ReplicaRole) -> Option<&'static str> {
    match role {
        ReplicaRole::Leader => Some("leader"),
        ReplicaRole::Follower => Some("follower"),
        ReplicaRole::Learner => Some("learner"),
        ReplicaRole::Candidate => Some("candidate"),
        ReplicaRole::Shutdown => None,
    }
}

/// Counts shard replicas (the meta group is not a shard) by role, and the lag of led ones.
pub fn census(views: &[(GroupId, ReplicaView)]) -> Census {
    let mut c = Census {
        roles: ROLES.iter().map(|r| (*r, 0)).collect(),
        lag: BTreeMap::new(),
    };
    for (group, view) in views.iter().filter(|(g, _)| !g.is_meta()) {
        if let Some(name) = role_name(view.role) {
            *c.roles.entry(name).or_default() += 1;
        }
        if let (ReplicaRole::Leader, Some(lag)) = (view.role, view.lag_max) {
            c.lag.insert(ShardId(group.0), lag);
        }
    }
    c
}

/// Counts leaderships won: a group seen leading in a term newer than the last one it
/// was seen leading in (meta group included). A leadership won and lost between two
/// looks is missed; elections that keep failing show as `candidate` replicas instead.
#[derive(Debug, Default)]
pub struct ElectionTracker {
    led: BTreeMap<GroupId, u64>,
}

impl ElectionTracker {
    /// Looks at every hosted group once; returns the leaderships won since last time.
    pub fn observe(&mut self, views: &[(GroupId, ReplicaView)]) -> u64 {
        let mut won = 0;
        for (group, view) in views {
            if view.role == ReplicaRole::Leader && self.led.get(group) < Some(&view.term) {
                self.led.insert(*group, view.term);
                won += 1;
            }
        }
        let hosted: BTreeSet<GroupId> = views.iter().map(|(g, _)| *g).collect();
        self.led.retain(|g, _| hosted.contains(g));
        won
    }
}

/// Refreshes the gauges every [`GAUGES_INTERVAL`] until the node stops.
pub async fn run(ctx: Arc<NodeContext>, data_dir: PathBuf) {
    let mut elections = ElectionTracker::default();
    loop {
        refresh(&ctx, &data_dir, &mut elections);
        tokio::time::sleep(GAUGES_INTERVAL).await;
    }
}

fn refresh(ctx: &NodeContext, data_dir: &std::path::Path, elections: &mut ElectionTracker) {
    let m: &Metrics = &ctx.metrics;
    let views: Vec<(GroupId, ReplicaView)> = ctx
        .registry
        .group_ids()
        .into_iter()
        .filter_map(|id| ctx.registry.group(id).ok().map(|g| (id, g.replica_view())))
        .collect();
    m.elections.inc_by(elections.observe(&views));
    let c = census(&views);
    for (role, n) in &c.roles {
        m.shards.get_or_create(&Role { role }).set(*n);
    }
    m.commit_lag.clear();
    for (shard, lag) in &c.lag {
        let label = ShardLabel {
            shard: shard.kinesis_name(),
        };
        m.commit_lag.get_or_create(&label).set(*lag as i64);
    }

    let voters = crate::api::cluster::meta_voters(ctx);
    let status = ctx
        .placement
        .read(|st| crate::api::cluster::status(st, &voters));
    m.under_replicated
        .set(i64::from(status.under_replicated_shards));
    m.leaderless.set(i64::from(status.leaderless_shards));
    // Only the meta leader's view of liveness is authoritative (it applies the
    // heartbeats first); the others export none, so `max` over nodes is that view.
    m.node_up.clear();
    if ctx.placement.is_meta_leader() {
        let nodes = ctx.placement.read(|st| {
            st.nodes
                .keys()
                .map(|id| {
                    (
                        *id,
                        st.node_is(*id, &[NodeStatus::Up, NodeStatus::Draining]),
                    )
                })
                .collect::<Vec<_>>()
        });
        for (id, up) in nodes {
            let label = NodeLabel {
                node: id.0.to_string(),
            };
            m.node_up.get_or_create(&label).set(i64::from(up));
        }
    }
    disk(m, data_dir);
}

/// Used and free bytes of the data directory's filesystem (free: what an unprivileged
/// writer may still use, as `df` shows it).
#[cfg(not(madsim))]
fn disk(m: &Metrics, data_dir: &std::path::Path) {
    match rustix::fs::statvfs(data_dir) {
        Ok(s) => {
            let block = s.f_frsize;
            m.disk_free.set(s.f_bavail.saturating_mul(block));
            m.disk_used
                .set(s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(block));
        }
        Err(e) => {
            tracing::warn!(dir = %data_dir.display(), error = %e, "statvfs of the data directory failed; disk gauges not updated");
        }
    }
}

/// The simulation's disks are in memory: there is no filesystem to measure.
#[cfg(madsim)]
fn disk(_: &Metrics, _: &std::path::Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(role: ReplicaRole, term: u64, lag_max: Option<u64>) -> ReplicaView {
        ReplicaView {
            role,
            term,
            lag_max,
        }
    }

    #[test]
    fn census_counts_shard_replicas_and_the_lag_of_led_ones() {
        let views = [
            (GroupId::META, view(ReplicaRole::Leader, 1, Some(0))),
            (GroupId(5), view(ReplicaRole::Leader, 2, Some(7))),
            (GroupId(6), view(ReplicaRole::Follower, 2, None)),
            (GroupId(7), view(ReplicaRole::Learner, 1, None)),
            (GroupId(8), view(ReplicaRole::Shutdown, 1, None)),
        ];
        let c = census(&views);
        assert_eq!(c.roles["leader"], 1, "the meta group is not a shard");
        assert_eq!(c.roles["follower"], 1);
        assert_eq!(c.roles["learner"], 1);
        assert_eq!(c.roles["candidate"], 0, "every role is present");
        assert_eq!(c.lag, BTreeMap::from([(ShardId(5), 7)]));
    }

    #[test]
    fn a_leadership_counts_once_per_term() {
        let mut t = ElectionTracker::default();
        let leads = |term| [(GroupId(5), view(ReplicaRole::Leader, term, Some(0)))];
        assert_eq!(t.observe(&leads(2)), 1);
        assert_eq!(t.observe(&leads(2)), 0, "still the same leadership");
        assert_eq!(
            t.observe(&[(GroupId(5), view(ReplicaRole::Follower, 3, None))]),
            0
        );
        assert_eq!(t.observe(&leads(4)), 1, "won again in a later term");
        // A group no longer hosted is forgotten; hosted again, its leadership counts.
        assert_eq!(t.observe(&[]), 0);
        assert_eq!(t.observe(&leads(4)), 1);
    }
}
