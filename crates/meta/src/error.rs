//! The one error type of the meta crate. Every variant carries the values a person needs
//! to act: which field, which value, which limit, which state stood in the way.
//!
//! An `apply` that returns an error has changed nothing: commands validate before they
//! mutate, so a rejected command in the Raft log is a no-op on every replica.

use runnel_types::{NodeId, ShardId};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// A parameter is out of range or malformed.
    #[error("invalid {field} {value}: {limit}")]
    InvalidArgument {
        field: &'static str,
        value: String,
        limit: String,
    },

    /// Creating something that exists (a stream, including one still being deleted).
    #[error("{kind} {name} already exists{hint}")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        hint: &'static str,
    },

    /// Naming something the meta state does not know.
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },

    /// The request is well formed but the current state does not allow it; `reason` says
    /// what stands in the way and what to do about it.
    #[error("{what} is not possible now: {reason}")]
    FailedPrecondition { what: String, reason: String },

    /// A removed node tries to come back under the same id.
    #[error(
        "node {node} was removed from the cluster; start it with a new node id and an empty data directory"
    )]
    NodeRemoved { node: NodeId },

    /// A consumer acted on a shard lease it does not hold (any more).
    #[error(
        "member {member:?} of group {group} does not hold lease {counter} on shard {shard}; \
         heartbeat to learn its current leases"
    )]
    LeaseNotHeld {
        group: String,
        member: String,
        shard: ShardId,
        counter: u64,
    },

    /// A checkpoint that would move a consumer group backwards.
    #[error(
        "checkpoint for shard {shard} of group {group} would move back from {current} to {proposed}"
    )]
    CheckpointRegression {
        group: String,
        shard: ShardId,
        current: String,
        proposed: String,
    },

    /// A shard leader's report about a move that is not (or no longer) in progress.
    /// Harmless: the reporter drops it; the planner's view is the meta state's.
    #[error("stale report for shard {shard} about node {node}: {reason}")]
    StaleReport {
        shard: ShardId,
        node: NodeId,
        reason: String,
    },
}

impl MetaError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl ToString,
        limit: impl Into<String>,
    ) -> Self {
        MetaError::InvalidArgument {
            field,
            value: value.to_string(),
            limit: limit.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, name: impl ToString) -> Self {
        MetaError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    pub(crate) fn precondition(what: impl Into<String>, reason: impl Into<String>) -> Self {
        MetaError::FailedPrecondition {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn stale(shard: ShardId, node: NodeId, reason: impl Into<String>) -> Self {
        MetaError::StaleReport {
            shard,
            node,
            reason: reason.into(),
        }
    }
}
