//! The crate's one error type. Structured fields, so that the server can turn a
//! [`Error::NotLeader`] into a redirect with the leader's address, and an operator can
//! read which group, which node and which value were involved.

use runnel_types::{GroupId, NodeId};

/// What went wrong in shard replication.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node is not the group's leader. `leader` is the current leader and its
    /// address when known: retry there once.
    #[error(
        "node is not the leader of group {group}; leader: {}",
        leader_text(leader)
    )]
    NotLeader {
        group: GroupId,
        leader: Option<(NodeId, String)>,
    },

    /// The node does not host this group (never created here, or removed).
    #[error("group {group} is not hosted on node {node}")]
    UnknownGroup { group: GroupId, node: NodeId },

    /// `create_group` for a group this node already hosts.
    #[error("group {group} already exists on node {node}")]
    GroupExists { group: GroupId, node: NodeId },

    /// The group or the node is shutting down; the request may not have been applied.
    #[error("group {group} is shutting down")]
    ShuttingDown { group: GroupId },

    /// A write that breaks a limit (records per entry, bytes per entry).
    #[error("invalid write to group {group}: {reason}")]
    InvalidWrite { group: GroupId, reason: String },

    /// A read below the group's trim point (retention removed those entries).
    #[error("group {group}: entry {requested} was trimmed; the log starts at {first}")]
    Trimmed {
        group: GroupId,
        requested: runnel_types::LogIndex,
        first: runnel_types::LogIndex,
    },

    /// Bytes from the disk or a peer that do not decode.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },

    /// The group's segment log failed.
    #[error("segment log of group {group}: {source}")]
    Log {
        group: GroupId,
        #[source]
        source: runnel_log::LogError,
    },

    /// The node's metadata store failed.
    #[error("node metadata: {0}")]
    Meta(#[from] runnel_nodemeta::MetaStoreError),

    /// Disk I/O outside the segment log (directories of groups).
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// openraft refused or failed (fatal storage error, membership change refused, ...).
    #[error("raft error in group {group}: {detail}")]
    Raft { group: GroupId, detail: String },

    /// A peer could not be reached or answered with a transport error.
    #[error("transport to node {node} ({addr}): {detail}")]
    Transport {
        node: NodeId,
        addr: String,
        detail: String,
    },
}

fn leader_text(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("node {id} at {addr}"),
        None => "unknown (an election may be in progress)".to_string(),
    }
}

impl Error {
    /// For openraft's storage traits, which speak `io::Error`.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}

/// Converts a crate error into the `tonic::Status` the transport answers with.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let msg = e.to_string();
        match e {
            Error::UnknownGroup { .. } => tonic::Status::not_found(msg),
            Error::NotLeader { .. } => tonic::Status::failed_precondition(msg),
            Error::ShuttingDown { .. } => tonic::Status::unavailable(msg),
            Error::InvalidWrite { .. } | Error::Corrupt { .. } => {
                tonic::Status::invalid_argument(msg)
            }
            Error::GroupExists { .. } => tonic::Status::already_exists(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}
