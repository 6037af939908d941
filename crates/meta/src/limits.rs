//! Limits of the meta state, named in one place (the cluster-wide ones of streams and
//! records live in `runnel_types::limits`). Everything the meta state holds is bounded,
//! so that its snapshot stays small enough to send in one piece.

/// Nodes that are not removed. Removed nodes stay as tombstones (their ids are never
/// reused) and count against [`NODE_TOMBSTONES_MAX`] instead.
pub const NODES_MAX: usize = 1_000;
pub const NODE_TOMBSTONES_MAX: usize = 10_000;

/// The cluster id chosen at bootstrap.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// A node's advertised address, `host:port`.
pub const NODE_ADDRESS_BYTES_MAX: usize = 255;

/// Node labels: at most this many, keys and values at most this long.
pub const NODE_LABELS_MAX: usize = 16;
pub const NODE_LABEL_BYTES_MAX: usize = 63;

/// Capacity weight of a node relative to the others (a node of weight 200 gets twice the
/// replicas and leaders of a node of weight 100).
pub const CAPACITY_WEIGHT_MIN: u32 = 1;
pub const CAPACITY_WEIGHT_MAX: u32 = 10_000;
pub const CAPACITY_WEIGHT_DEFAULT: u32 = 100;

/// Streams in the cluster, and shards in the cluster (open, closed or being deleted).
pub const STREAMS_MAX: usize = 10_000;
pub const SHARDS_MAX: usize = 100_000;

/// Retention below this needs the cluster setting lowered (tests do); a sane default.
pub const RETENTION_MS_MIN_DEFAULT: u64 = 3600 * 1000;
/// The lowest the cluster's minimum retention may be set (`runneld --min-retention`):
/// short retention is for tests and demos, but below a second the retention loop's own
/// period would dominate.
pub const RETENTION_MS_MIN_FLOOR: u64 = 1000;

/// Consumer groups: names as stream names; member ids up to this long; members per group.
pub const GROUP_NAME_BYTES_MAX: usize = 128;
pub const MEMBER_ID_BYTES_MAX: usize = 256;
pub const GROUP_MEMBERS_MAX: usize = 1_000;
pub const GROUPS_MAX: usize = 10_000;

/// A consumer's session (and lease) lasts this long after its last heartbeat.
pub const SESSION_TIMEOUT_MS_MIN: u64 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: u64 = 10 * 60 * 1000;

/// Actions in one `ApplyPlacement` command.
pub const PLACEMENT_ACTIONS_MAX: usize = 10_000;

/// Shard leaders one heartbeat may report.
pub const HEARTBEAT_LEADERS_MAX: usize = SHARDS_MAX;
