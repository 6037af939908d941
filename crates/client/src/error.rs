//! The SDK's one error type, decoded from a failed call's gRPC status: its `details`
//! bytes hold a `runnel.v1.ErrorDetail` whose `code` is stable (see `docs/errors.md`).
//! The message text is kept for people; decisions are taken on the variant only.

use std::time::Duration;

use prost::Message;
use runnel_proto::v1 as pb;
use runnel_proto::v1::ErrorCode;
use thiserror::Error;

/// Everything that can go wrong in a call of the SDK.
///
/// Server errors are decoded from the status details into the variant of their code;
/// [`ClientError::is_retryable`] says whether trying again may succeed.
///
/// ```
/// use runnel_client::ClientError;
/// use std::time::Duration;
///
/// let e = ClientError::Throttled { retry_after: Duration::from_millis(50), message: "busy".into() };
/// assert!(e.is_retryable());
/// ```
// Variant fields are described in each variant's doc.
#[allow(missing_docs)]
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The node does not lead the shard; `leader` is the leader's `host:port` when known.
    #[error("not the shard leader{}: {message}", leader.as_ref().map(|l| format!(" (leader: {l})")).unwrap_or_default())]
    NotLeader {
        leader: Option<String>,
        message: String,
    },

    /// The shard map the request was routed with is stale: refresh it and route again.
    #[error("stale shard map: {message}")]
    StaleShardMap { message: String },

    /// A write reached a closed shard (after a split or merge).
    #[error("shard closed: {message}")]
    ShardClosed { message: String },

    /// A field of the request is wrong; `field` names it and `limit` the bound.
    #[error("invalid argument{}{}: {message}",
        if field.is_empty() { String::new() } else { format!(" {field}") },
        if limit.is_empty() { String::new() } else { format!(" (limit: {limit})") })]
    InvalidArgument {
        field: String,
        limit: String,
        message: String,
    },

    /// No such stream, shard, node or group.
    #[error("not found: {message}")]
    NotFound { message: String },

    /// A stream of that name exists already.
    #[error("already exists: {message}")]
    AlreadyExists { message: String },

    /// The shard iterator is older than 5 minutes.
    #[error("shard iterator expired: {message}")]
    IteratorExpired { message: String },

    /// The shard iterator was altered or came from another cluster.
    #[error("invalid shard iterator: {message}")]
    IteratorInvalid { message: String },

    /// Too much in flight on the shard: back off `retry_after`.
    #[error("throttled (retry after {retry_after:?}): {message}")]
    Throttled {
        retry_after: Duration,
        message: String,
    },

    /// No leader now (election, no quorum), or the server could not be reached in a
    /// way that says nothing reached it.
    #[error("unavailable (retry after {retry_after:?}): {message}")]
    Unavailable {
        retry_after: Duration,
        message: String,
    },

    /// The stream is CREATING or DELETING.
    #[error("stream not active: {message}")]
    StreamNotActive { message: String },

    /// Another consumer-group member holds the lease on the shard.
    #[error("lease lost: {message}")]
    LeaseLost { message: String },

    /// An unexpected fault on the server.
    #[error("internal server error: {message}")]
    Internal { message: String },

    /// The call failed below the API: connection refused or reset, timeout, a status
    /// without Runnel details. Whether the server acted on the request is unknown.
    #[error("transport error talking to {address}: {message}")]
    Transport { address: String, message: String },

    /// The server answered something the SDK cannot make sense of.
    #[error("malformed response: {0}")]
    Protocol(String),

    /// The SDK's configuration or an argument given to it is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// `try_send` found the producer's buffer full.
    #[error("the producer buffer is full ({0}); wait (send) or slow down")]
    BufferFull(String),

    /// The record's retries did not succeed before its delivery deadline.
    #[error("gave up after {attempts} attempt(s) within the delivery deadline; last error: {last}")]
    DeadlineExceeded {
        attempts: u32,
        last: Box<ClientError>,
    },

    /// The producer, consumer or group was closed.
    #[error("closed")]
    Closed,
}

impl ClientError {
    /// Whether the same request may succeed if tried again (after a backoff, a shard
    /// map refresh or a redirect). Invalid requests and missing things are final.
    pub fn is_retryable(&self) -> bool {
        use ClientError::*;
        match self {
            NotLeader { .. } | StaleShardMap { .. } | ShardClosed { .. } | Throttled { .. } => true,
            Unavailable { .. } | StreamNotActive { .. } | Internal { .. } | Transport { .. } => {
                true
            }
            IteratorExpired { .. } => true,
            InvalidArgument { .. }
            | NotFound { .. }
            | AlreadyExists { .. }
            | IteratorInvalid { .. } => false,
            LeaseLost { .. }
            | Protocol(_)
            | Config(_)
            | BufferFull(_)
            | DeadlineExceeded { .. }
            | Closed => false,
        }
    }

    /// Whether the server may have acted on the request although it failed (so that a
    /// retry may duplicate a record). Only transport faults and internal errors leave
    /// the outcome unknown; every other code means the request was refused.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Transport { .. } | ClientError::Internal { .. }
        )
    }

    /// Whether the client should fetch the shard map again before retrying.
    pub fn needs_map_refresh(&self) -> bool {
        matches!(
            self,
            ClientError::NotLeader { leader: None, .. }
                | ClientError::StaleShardMap { .. }
                | ClientError::ShardClosed { .. }
        )
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Throttled { retry_after, .. }
            | ClientError::Unavailable { retry_after, .. } => {
                Some(*retry_after).filter(|d| !d.is_zero())
            }
            _ => None,
        }
    }

    /// Decodes a failed call's status. `address` names the node it came from, for
    /// transport errors. A status without Runnel details is classified by its gRPC code.
    pub fn from_status(status: &tonic::Status, address: &str) -> ClientError {
        let message = status.message().to_string();
        let details = status.details();
        if let Some(detail) = Some(details)
            .filter(|d| !d.is_empty())
            .and_then(|d| pb::ErrorDetail::decode(d).ok())
        {
            return ClientError::from_detail(&detail, message);
        }
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                ClientError::InvalidArgument {
                    field: String::new(),
                    limit: String::new(),
                    message,
                }
            }
            tonic::Code::NotFound => ClientError::NotFound { message },
            tonic::Code::AlreadyExists => ClientError::AlreadyExists { message },
            tonic::Code::ResourceExhausted => ClientError::Throttled {
                retry_after: Duration::ZERO,
                message,
            },
            tonic::Code::Unimplemented => {
                ClientError::Protocol(format!("{address}: unimplemented: {message}"))
            }
            _ => ClientError::Transport {
                address: address.to_string(),
                message: format!("{}: {message}", status.code()),
            },
        }
    }

    /// The error of a decoded `ErrorDetail`.
    pub fn from_detail(detail: &pb::ErrorDetail, message: String) -> ClientError {
        let leader = detail
            .leader
            .as_ref()
            .map(|l| l.address.clone())
            .filter(|a| !a.is_empty());
        let retry_after = Duration::from_millis(detail.retry_after_ms);
        match ErrorCode::try_from(detail.code) {
            Ok(ErrorCode::NotLeader) => ClientError::NotLeader { leader, message },
            Ok(ErrorCode::InvalidArgument) => ClientError::InvalidArgument {
                field: detail.field.clone(),
                limit: detail.limit.clone(),
                message,
            },
            Ok(ErrorCode::Throttled) => ClientError::Throttled {
                retry_after,
                message,
            },
            Ok(ErrorCode::Unavailable) => ClientError::Unavailable {
                retry_after,
                message,
            },
            Ok(code) => ClientError::from_code(code, message),
            Err(_) => {
                ClientError::Protocol(format!("unknown error code {}: {message}", detail.code))
            }
        }
    }

    /// The error of a bare code, as a `PutRecords` result entry carries it.
    pub fn from_code(code: ErrorCode, message: String) -> ClientError {
        match code {
            ErrorCode::NotLeader => ClientError::NotLeader {
                leader: None,
                message,
            },
            ErrorCode::StaleShardMap => ClientError::StaleShardMap { message },
            ErrorCode::InvalidArgument => ClientError::InvalidArgument {
                field: String::new(),
                limit: String::new(),
                message,
            },
            ErrorCode::NotFound => ClientError::NotFound { message },
            ErrorCode::AlreadyExists => ClientError::AlreadyExists { message },
            ErrorCode::IteratorExpired => ClientError::IteratorExpired { message },
            ErrorCode::IteratorInvalid => ClientError::IteratorInvalid { message },
            ErrorCode::Throttled => ClientError::Throttled {
                retry_after: Duration::ZERO,
                message,
            },
            ErrorCode::Unavailable => ClientError::Unavailable {
                retry_after: Duration::ZERO,
                message,
            },
            ErrorCode::StreamNotActive => ClientError::StreamNotActive { message },
            ErrorCode::ShardClosed => ClientError::ShardClosed { message },
            ErrorCode::LeaseLost => ClientError::LeaseLost { message },
            ErrorCode::Internal => ClientError::Internal { message },
            ErrorCode::Unspecified => {
                ClientError::Protocol(format!("error code UNSPECIFIED: {message}"))
            }
        }
    }
}

impl From<runnel_types::TypesError> for ClientError {
    fn from(e: runnel_types::TypesError) -> ClientError {
        ClientError::Config(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with(code: tonic::Code, detail: pb::ErrorDetail) -> tonic::Status {
        tonic::Status::with_details(code, "msg", detail.encode_to_vec().into())
    }

    #[test]
    fn not_leader_with_hint_decodes() {
        let d = pb::ErrorDetail {
            code: ErrorCode::NotLeader as i32,
            leader: Some(pb::LeaderHint {
                node_id: 2,
                address: "10.0.0.2:7100".into(),
            }),
            ..Default::default()
        };
        let e = ClientError::from_status(&status_with(tonic::Code::Unavailable, d), "a:1");
        assert_eq!(
            e,
            ClientError::NotLeader {
                leader: Some("10.0.0.2:7100".into()),
                message: "msg".into()
            }
        );
        assert!(e.is_retryable() && !e.needs_map_refresh());
        let bare = ClientError::NotLeader {
            leader: None,
            message: String::new(),
        };
        assert!(bare.needs_map_refresh());
    }

    #[test]
    fn throttled_and_invalid_carry_their_fields() {
        let d = pb::ErrorDetail {
            code: ErrorCode::Throttled as i32,
            retry_after_ms: 40,
            ..Default::default()
        };
        let e = ClientError::from_status(&status_with(tonic::Code::ResourceExhausted, d), "a:1");
        assert_eq!(e.retry_after(), Some(Duration::from_millis(40)));
        let d = pb::ErrorDetail {
            code: ErrorCode::InvalidArgument as i32,
            field: "records[3].partition_key".into(),
            limit: "256 bytes".into(),
            ..Default::default()
        };
        let e = ClientError::from_status(&status_with(tonic::Code::InvalidArgument, d), "a:1");
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("records[3].partition_key") && text.contains("256 bytes"),
            "{text}"
        );
    }

    #[test]
    fn statuses_without_details_fall_back_to_the_grpc_code() {
        let e = ClientError::from_status(&tonic::Status::unavailable("connection refused"), "h:1");
        assert!(matches!(e, ClientError::Transport { ref address, .. } if address == "h:1"));
        assert!(e.is_retryable() && e.outcome_unknown());
        let e = ClientError::from_status(&tonic::Status::not_found("x"), "h:1");
        assert!(matches!(e, ClientError::NotFound { .. }));
        // Garbage details do not panic; the gRPC code decides.
        let s =
            tonic::Status::with_details(tonic::Code::NotFound, "x", vec![0xff, 0xff, 0xff].into());
        assert!(matches!(
            ClientError::from_status(&s, "h:1"),
            ClientError::NotFound { .. }
        ));
    }

    #[test]
    fn every_code_maps_to_a_variant() {
        for code in 0..=13 {
            let code = ErrorCode::try_from(code).expect("codes 0..=13 exist");
            let e = ClientError::from_code(code, String::new());
            let refused = !e.outcome_unknown() || matches!(code, ErrorCode::Internal);
            assert!(refused, "{code:?}");
        }
        let d = pb::ErrorDetail {
            code: 999,
            ..Default::default()
        };
        assert!(matches!(
            ClientError::from_detail(&d, String::new()),
            ClientError::Protocol(_)
        ));
    }
}
