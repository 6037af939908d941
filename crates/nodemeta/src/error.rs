//! The one error type of node-local metadata. Each message says what went wrong, with
//! which value, and what the operator can do about it.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetaStoreError {
    /// Another process holds the data dir's lock.
    #[error(
        "metadata dir {} is locked by another process: another runneld is probably running \
         with this data dir; stop it, or give this node a data dir of its own",
        path.display()
    )]
    DirLocked {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file system refused a read, a write or an fsync.
    #[error(
        "I/O error while {op} metadata dir {}: {source}; check that the disk is mounted, \
         writable and not full",
        path.display()
    )]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store's own files fail their checks.
    #[error(
        "metadata dir {} is corrupt ({detail}); this node's votes cannot be trusted: \
         wipe the data dir and re-add the node to the cluster as a new node",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    /// Any other failure of the storage engine (a bug or an unsupported use of it).
    #[error("metadata store failed while {op} {}: {detail}; this is a bug, please report it", path.display())]
    Backend {
        op: &'static str,
        path: PathBuf,
        detail: String,
    },

    /// A value read back does not decode: written by a newer runneld, or damaged.
    #[error(
        "metadata value under {key:?} cannot be decoded: {reason}; if a newer runneld \
         wrote this data dir, run that version"
    )]
    CorruptValue { key: String, reason: String },

    /// A key read back does not fit the key layout.
    #[error("metadata key {key:?} does not fit the key layout: {reason}")]
    CorruptKey { key: String, reason: String },

    /// The data dir already belongs to another node (or cluster).
    #[error(
        "this data dir belongs to node {existing_node_id} of cluster {existing_cluster_id:?}, \
         not to node {new_node_id} of cluster {new_cluster_id:?}: a data dir belongs to one \
         node for its whole life; point --data-dir at this node's own dir, or start the \
         node with id {existing_node_id} of cluster {existing_cluster_id:?}"
    )]
    IdentityConflict {
        existing_node_id: u64,
        existing_cluster_id: String,
        new_node_id: u64,
        new_cluster_id: String,
    },

    /// An identity that cannot be stored.
    #[error("invalid node identity: {reason}")]
    InvalidIdentity { reason: String },

    /// A [`GroupKey::Custom`](crate::GroupKey::Custom) name that the key layout cannot hold.
    #[error("invalid group key name {name:?}: {reason}")]
    InvalidGroupKey {
        name: &'static str,
        reason: &'static str,
    },

    /// A key or value past its limit in [`crate::limits`].
    #[error("{what} of {len} bytes under {key:?} is larger than the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        key: String,
        len: usize,
        max: usize,
    },

    /// A batch with more operations than [`crate::limits::BATCH_OPS_MAX`].
    #[error("write batch of {ops} operations is larger than the limit of {max}; split it")]
    BatchTooLarge { ops: usize, max: usize },
}
