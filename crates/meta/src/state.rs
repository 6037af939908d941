//! The meta state: everything the placement service's Raft group agrees on. Plain data
//! in ordered maps (iteration order is part of determinism), changed only by
//! [`crate::apply`] and read by the planner.

use std::collections::BTreeMap;

use runnel_types::{HashRange, NodeId, SeqNo, ShardId, StreamName, Term};
use serde::{Deserialize, Serialize};

use crate::limits::RETENTION_MS_MIN_DEFAULT;
use crate::names::{GroupName, MemberId};

/// The whole replicated state of the meta group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub settings: ClusterSettings,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub streams: BTreeMap<StreamName, StreamInfo>,
    pub shards: BTreeMap<ShardId, ShardInfo>,
    /// Consumer groups, by group name, then by the stream the group consumes.
    pub groups: BTreeMap<GroupName, BTreeMap<StreamName, ConsumerGroup>>,
    /// The id the next created shard gets. Starts at 1 (0 is the meta group's `GroupId`)
    /// and only grows: a shard id is never reused.
    pub next_shard_id: ShardId,
    /// The cluster's identity, set once by the first `InitCluster` after bootstrap.
    #[serde(default)]
    pub identity: Option<ClusterIdentity>,
}

/// Who the cluster is: fixed at bootstrap, never changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// A random id chosen at bootstrap (shown in status; tells clusters apart).
    pub cluster_id: String,
    /// The key that tags shard iterator tokens, shared by every node.
    pub iterator_key: [u8; 16],
}

/// Settings fixed when the cluster is bootstrapped, replicated with the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// The shortest retention a stream may have (tests lower it).
    pub retention_ms_min: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            retention_ms_min: RETENTION_MS_MIN_DEFAULT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// `host:port` other nodes and clients reach this node at.
    pub address: String,
    pub labels: NodeLabels,
    /// Relative capacity: replicas and leaders are spread in proportion to it.
    pub capacity_weight: u32,
    pub status: NodeStatus,
    /// An operator asked to drain the node. Kept apart from `status` so that a draining
    /// node that goes down and comes back resumes draining.
    pub drain_requested: bool,
    pub registered_ms: u64,
    /// Time of the last heartbeat, as carried by the heartbeat command (never a clock).
    pub last_heartbeat_ms: u64,
    /// When the node was marked down; `None` unless `status` is `Down`.
    pub down_since_ms: Option<u64>,
    pub load: NodeLoad,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    /// Failure domain: replicas of a shard go to distinct zones where possible.
    pub zone: Option<String>,
    /// Any other labels, for operators and status output.
    pub other: BTreeMap<String, String>,
}

/// What a node reports about itself. Shown in cluster status; the planner balances by
/// replica and leader counts, not by these figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub replicas_hosted: u32,
    pub bytes_stored: u64,
    pub disk_bytes_free: u64,
    pub write_bytes_per_sec: u64,
}

/// A node's lifecycle: `Joining` (registered, no heartbeat yet) → `Up` ⇄ `Down`;
/// `Up` → `Draining` → `Drained`; `Drained` or `Down` → `Removed` (final).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeStatus {
    Joining,
    Up,
    Draining,
    Drained,
    Down,
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub name: StreamName,
    pub status: StreamStatus,
    pub retention_ms: u64,
    pub replication_factor: u32,
    pub created_ms: u64,
    /// Every shard of the stream that still exists, open or closed, in creation order.
    pub shards: Vec<ShardId>,
}

/// `Creating` until every shard has reported a leader, then `Active`; `Deleting` until
/// every replica has reclaimed its storage, then the stream is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamStatus {
    Creating,
    Active,
    Deleting,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub stream: StreamName,
    pub hash_range: HashRange,
    /// The shard(s) this one was split or merged from; empty for an original shard.
    pub parents: Vec<ShardId>,
    pub state: ShardState,
    /// First and last sequence numbers, once known (the last only once closed).
    pub starting_seq: Option<SeqNo>,
    pub ending_seq: Option<SeqNo>,
    /// The desired replica set, in placement order. Shard managers make their local
    /// replicas match it; shard leaders make the Raft membership match it.
    pub replicas: Vec<Replica>,
    /// The node that should lead (for leader balance). The shard's leader hands
    /// leadership to it whenever it is a live voter.
    pub preferred_leader: Option<NodeId>,
    /// The leader as last reported by a heartbeat, with the Raft term it reported.
    /// Always a voter of the desired set: reports from other nodes are ignored, and a
    /// replica that leads is not removed (it hands leadership over first), so a shard
    /// that has had a leader keeps one through its moves.
    pub leader: Option<ReportedLeader>,
    /// The replica move in progress, at most one per shard.
    pub pending_move: Option<PendingMove>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardState {
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub node: NodeId,
    pub role: ReplicaRole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRole {
    Voter,
    Learner,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedLeader {
    pub node: NodeId,
    pub term: Term,
}

/// One replica move: add `add` (as a learner), wait until the shard leader reports it
/// caught up, promote it to voter, wait for the leader to report the promotion, then
/// remove `remove` (if any) and wait for that report. A move never takes a voter away
/// before its replacement votes, so a shard never drops below a majority. If `remove`
/// leads the shard, its removal waits until it has handed leadership to another voter
/// (reported by the new leader's heartbeat): the leader is the one that carries the
/// move out, and a removed leader would leave nobody to finish it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMove {
    pub add: NodeId,
    pub remove: Option<NodeId>,
    pub phase: MovePhase,
    pub reason: MoveReason,
    pub started_ms: u64,
    /// When the move entered its current phase: a move stuck in one phase shows here.
    pub phase_since_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MovePhase {
    /// `add` is a learner in the desired set; the leader is catching it up.
    AddingLearner,
    /// The leader reported `add` caught up. The planner orders the promotion (the role
    /// in the desired set becomes voter); the leader changes membership and reports.
    Promoting,
    /// `add` votes. The planner orders the removal of `remove`; the leader reports it.
    Removing,
}

/// Why a move was started (for status output and for the planner's budget).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveReason {
    /// Replace a replica on a down (past the grace period) or removed node, or add one
    /// a shard lacks.
    Repair,
    /// Move a replica off a draining node.
    Drain,
    /// Spread a shard's replicas over more zones.
    Zone,
    /// Even out replica counts between nodes.
    Balance,
}

/// One consumer group's view of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    pub members: BTreeMap<MemberId, GroupMember>,
    pub leases: BTreeMap<ShardId, Lease>,
    pub checkpoints: BTreeMap<ShardId, Checkpoint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub session_timeout_ms: u64,
    pub last_heartbeat_ms: u64,
}

impl GroupMember {
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms
            >= self
                .last_heartbeat_ms
                .saturating_add(self.session_timeout_ms)
    }
}

/// A member's right to consume a shard. `counter` grows every time the lease changes
/// hands: a checkpoint must name the counter it holds, which fences off a previous
/// holder that has not yet noticed it lost the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder; `None` once released (the entry stays so the counter keeps growing).
    pub member: Option<MemberId>,
    pub expiry_ms: u64,
    pub counter: u64,
}

/// How far a group has consumed a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Checkpoint {
    /// Every record up to and including this sequence number is processed.
    At(SeqNo),
    /// The shard is closed and was read to its end: its children may start.
    ShardEnd,
}

impl Default for MetaState {
    fn default() -> Self {
        MetaState::new(ClusterSettings::default())
    }
}

impl MetaState {
    pub fn new(settings: ClusterSettings) -> Self {
        MetaState {
            settings,
            nodes: BTreeMap::new(),
            streams: BTreeMap::new(),
            shards: BTreeMap::new(),
            groups: BTreeMap::new(),
            next_shard_id: ShardId(1),
            identity: None,
        }
    }

    /// Is `node` known and in one of `statuses`?
    pub fn node_is(&self, node: NodeId, statuses: &[NodeStatus]) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|n| statuses.contains(&n.status))
    }

    /// Shards whose desired replica set names `node`.
    pub fn shards_on(&self, node: NodeId) -> impl Iterator<Item = &ShardInfo> {
        self.shards.values().filter(move |s| s.has_replica(node))
    }

    /// The stream of a shard, if both exist.
    pub fn stream_of(&self, shard: &ShardInfo) -> Option<&StreamInfo> {
        self.streams.get(&shard.stream)
    }

    /// The shards the planner places: those of `Creating` or `Active` streams. Closed
    /// shards are included: they stay readable until retention ends, so they keep
    /// their replicas.
    pub fn placed_shards(&self) -> impl Iterator<Item = (&ShardInfo, &StreamInfo)> {
        self.shards.values().filter_map(|s| {
            let stream = self.streams.get(&s.stream)?;
            (stream.status != StreamStatus::Deleting).then_some((s, stream))
        })
    }
}

impl ShardInfo {
    pub fn has_replica(&self, node: NodeId) -> bool {
        self.replicas.iter().any(|r| r.node == node)
    }

    pub fn role_of(&self, node: NodeId) -> Option<ReplicaRole> {
        self.replicas
            .iter()
            .find(|r| r.node == node)
            .map(|r| r.role)
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Voter)
            .map(|r| r.node)
    }

    /// The replicas the shard keeps once its pending move completes: the desired set
    /// without the replica the move removes. This is what balance counts.
    pub fn final_replicas(&self) -> impl Iterator<Item = NodeId> + '_ {
        let removing = self.pending_move.as_ref().and_then(|m| m.remove);
        self.replicas
            .iter()
            .map(|r| r.node)
            .filter(move |n| Some(*n) != removing)
    }
}

/// A majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}
