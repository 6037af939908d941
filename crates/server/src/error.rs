//! The server's one error type and its single conversion to a gRPC status.
//!
//! Every failed public call carries an encoded `runnel.v1.ErrorDetail` in the status
//! details: a stable [`ErrorCode`] the client matches on, the leader hint, the
//! retry-after, the field and the limit (docs/errors.md lists the codes). Errors are
//! logged where they are handled, not here.

use prost::Message;
use runnel_meta::MetaError;
use runnel_proto::v1::{ErrorCode, ErrorDetail, LeaderHint};
use runnel_types::NodeId;
use thiserror::Error;
use tonic::{Code, Status};

/// How long a client should wait before retrying when no leader is known.
pub const RETRY_AFTER_MS_NO_LEADER: u64 = 200;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("this node does not lead {what}; {}", hint_text(leader))]
    NotLeader {
        what: String,
        leader: Option<(NodeId, String)>,
    },

    #[error("invalid {field}: {problem}")]
    InvalidArgument {
        field: String,
        problem: String,
        limit: Option<String>,
    },

    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },

    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },

    #[error("{0}")]
    Iterator(#[from] crate::iterator::IteratorError),

    #[error("stream {name:?} is {status}, not ACTIVE: {what_to_do}")]
    StreamNotActive {
        name: String,
        status: &'static str,
        what_to_do: &'static str,
    },

    #[error("shard {shard} is closed: refresh the shard map (ListShards) and route again")]
    ShardClosed { shard: String },

    #[error("the shard map is stale: {reason}; refresh it with ListShards")]
    StaleShardMap { reason: String },

    #[error("{what} is not possible now: {reason}")]
    FailedPrecondition { what: String, reason: String },

    #[error("too many requests in flight on {what}; retry after {retry_after_ms} ms")]
    Throttled { what: String, retry_after_ms: u64 },

    #[error("{what} is unavailable: {reason}; retry after {retry_after_ms} ms")]
    Unavailable {
        what: String,
        reason: String,
        retry_after_ms: u64,
    },

    #[error("member does not hold the lease: {0}")]
    LeaseLost(String),

    #[error("internal error: {0}")]
    Internal(String),
}

fn hint_text(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("retry at node {id} ({addr})"),
        None => "no leader is known yet: retry shortly".to_string(),
    }
}

impl ServerError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ServerError {
        ServerError::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
            limit: None,
        }
    }

    pub fn invalid_limit(
        field: impl Into<String>,
        problem: impl Into<String>,
        limit: impl Into<String>,
    ) -> ServerError {
        ServerError::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
            limit: Some(limit.into()),
        }
    }

    /// The stable code a client matches on, and the gRPC status code that carries it.
    pub fn codes(&self) -> (ErrorCode, Code) {
        use ServerError::*;
        match self {
            NotLeader { .. } => (ErrorCode::NotLeader, Code::Unavailable),
            InvalidArgument { .. } => (ErrorCode::InvalidArgument, Code::InvalidArgument),
            NotFound { .. } => (ErrorCode::NotFound, Code::NotFound),
            AlreadyExists { .. } => (ErrorCode::AlreadyExists, Code::AlreadyExists),
            Iterator(crate::iterator::IteratorError::Expired { .. }) => {
                (ErrorCode::IteratorExpired, Code::FailedPrecondition)
            }
            Iterator(crate::iterator::IteratorError::Invalid { .. }) => {
                (ErrorCode::IteratorInvalid, Code::InvalidArgument)
            }
            StreamNotActive { .. } => (ErrorCode::StreamNotActive, Code::FailedPrecondition),
            ShardClosed { .. } => (ErrorCode::ShardClosed, Code::FailedPrecondition),
            StaleShardMap { .. } => (ErrorCode::StaleShardMap, Code::FailedPrecondition),
            FailedPrecondition { .. } => (ErrorCode::InvalidArgument, Code::FailedPrecondition),
            Throttled { .. } => (ErrorCode::Throttled, Code::ResourceExhausted),
            Unavailable { .. } => (ErrorCode::Unavailable, Code::Unavailable),
            LeaseLost(_) => (ErrorCode::LeaseLost, Code::FailedPrecondition),
            Internal(_) => (ErrorCode::Internal, Code::Internal),
        }
    }

    /// The structured detail that goes into the status.
    pub fn detail(&self) -> ErrorDetail {
        let (code, _) = self.codes();
        let mut d = ErrorDetail {
            code: code as i32,
            ..Default::default()
        };
        match self {
            ServerError::NotLeader {
                leader: Some((id, addr)),
                ..
            } => {
                d.leader = Some(LeaderHint {
                    node_id: id.0,
                    address: addr.clone(),
                });
            }
            ServerError::NotLeader { leader: None, .. } => {
                d.retry_after_ms = RETRY_AFTER_MS_NO_LEADER
            }
            ServerError::InvalidArgument { field, limit, .. } => {
                d.field = field.clone();
                d.limit = limit.clone().unwrap_or_default();
            }
            ServerError::Throttled { retry_after_ms, .. }
            | ServerError::Unavailable { retry_after_ms, .. } => {
                d.retry_after_ms = *retry_after_ms;
            }
            _ => {}
        }
        d
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let (_, code) = e.codes();
        let details = e.detail().encode_to_vec();
        Status::with_details(code, e.to_string(), details.into())
    }
}

impl From<MetaError> for ServerError {
    fn from(e: MetaError) -> ServerError {
        match e {
            MetaError::InvalidArgument {
                field,
                value,
                limit,
            } => ServerError::InvalidArgument {
                field: field.to_string(),
                problem: format!("{value} is out of range ({limit})"),
                limit: Some(limit),
            },
            MetaError::AlreadyExists { kind, name, .. } => {
                ServerError::AlreadyExists { kind, name }
            }
            MetaError::NotFound { kind, name } => ServerError::NotFound { kind, name },
            e @ (MetaError::LeaseNotHeld { .. } | MetaError::CheckpointRegression { .. }) => {
                ServerError::LeaseLost(e.to_string())
            }
            MetaError::FailedPrecondition { what, reason } => {
                ServerError::FailedPrecondition { what, reason }
            }
            e => ServerError::FailedPrecondition {
                what: "the request".into(),
                reason: e.to_string(),
            },
        }
    }
}

impl From<runnel_raft::Error> for ServerError {
    fn from(e: runnel_raft::Error) -> ServerError {
        use runnel_raft::Error as R;
        match e {
            R::NotLeader { group, leader } => ServerError::NotLeader {
                what: format!("group {group}"),
                leader,
            },
            R::UnknownGroup { group, node } => ServerError::NotLeader {
                what: format!("group {group} (node {node} holds no replica of it)"),
                leader: None,
            },
            R::ShuttingDown { group } => ServerError::Unavailable {
                what: format!("group {group}"),
                reason: "the node is shutting down".into(),
                retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
            },
            R::InvalidWrite { reason, .. } => ServerError::invalid("records", reason),
            e @ R::Transport { .. } => ServerError::Unavailable {
                what: "a peer".into(),
                reason: e.to_string(),
                retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
            },
            e => ServerError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_the_hint_in_the_details() {
        let e = ServerError::NotLeader {
            what: "shard 3".into(),
            leader: Some((NodeId(2), "n2:7100".into())),
        };
        let status = Status::from(e);
        assert_eq!(status.code(), Code::Unavailable);
        let d = ErrorDetail::decode(status.details()).unwrap();
        assert_eq!(d.code, ErrorCode::NotLeader as i32);
        assert_eq!(d.leader.unwrap().address, "n2:7100");
    }

    #[test]
    fn invalid_argument_names_field_and_limit() {
        let e = ServerError::invalid_limit("records[3].partition_key", "is 300 bytes", "256 bytes");
        let status = Status::from(e);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("records[3].partition_key"));
        let d = ErrorDetail::decode(status.details()).unwrap();
        assert_eq!(
            (d.field.as_str(), d.limit.as_str()),
            ("records[3].partition_key", "256 bytes")
        );
    }
}
