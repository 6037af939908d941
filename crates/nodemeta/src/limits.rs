//! Size limits of node-local metadata, named in one place. Checked by
//! [`WriteBatch::check_limits`](crate::WriteBatch::check_limits) before any store
//! applies a batch, so that both stores refuse the same inputs.

/// A key: our keys are short paths such as `group/00000000000000000001/vote`.
pub const KEY_BYTES_MAX: usize = 1024;

/// A value. The largest is the meta group's state-machine snapshot (nodes, streams,
/// shards, leases); past this size it belongs in a file of its own, not in sled.
pub const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Operations in one batch.
pub const BATCH_OPS_MAX: usize = 4096;

/// A cluster id in a node's identity.
pub const CLUSTER_ID_BYTES_MAX: usize = 255;
