//! [`NodeContext`]: what every request handler and background task of a node shares.
//!
//! *API boundary*: the public services (`crate::api`) see the cluster only through
//! this struct: the replication layer ([`runnel_raft::Registry`]; shard `S` is Raft
//! group `GroupId::from(S)`) for data, and [`Placement`] for metadata.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use runnel_types::NodeId;

use crate::metrics::Metrics;
use crate::placement::Placement;

/// Everything a node's handlers and tasks share. Cheap to pass around in an `Arc`.
pub struct NodeContext {
    pub node_id: NodeId,
    /// This node's public and peer gRPC address (one port serves both).
    pub advertise: String,
    /// The node's Raft groups: the meta group and one group per hosted shard.
    pub registry: Arc<runnel_raft::Registry>,
    /// The applied meta state and the way to change it.
    pub placement: Arc<Placement>,
    pub metrics: Arc<Metrics>,
    /// Replication factor of new streams when a request leaves it out.
    pub default_replication: u32,
}

/// Milliseconds since the Unix epoch by the system clock (simulated under madsim).
/// A clock before 1970 reads as 0.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
