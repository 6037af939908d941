//! Conversions between openraft's messages and the protobuf ones of
//! `runnel.internal.v1`. Everything decoded here came from a peer: a missing field is an
//! [`Error::Corrupt`], never a panic.

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderError, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::vote::RaftLeaderId;
use runnel_log::Entry as LogEntry;
use runnel_proto::internal::v1 as pb;
use runnel_types::{LogIndex, Term};

use crate::codec;
use crate::error::Error;
use crate::types::{
    PeerNode, RaftEntry, RaftLeaderId as LeaderId, RaftLogId, RaftMembership, RaftSnapshotMeta,
    RaftStoredMembership, RaftVote, TypeConfig, log_id,
};

fn missing(what: &'static str, field: &str) -> Error {
    Error::Corrupt {
        what,
        detail: format!("field `{field}` is missing"),
    }
}

pub fn vote_to_pb(v: &RaftVote) -> pb::Vote {
    pb::Vote {
        term: v.leader_id.term,
        node_id: v.leader_id.voted_for,
        committed: v.committed,
    }
}

pub fn vote_from_pb(v: Option<pb::Vote>, what: &'static str) -> Result<RaftVote, Error> {
    let v = v.ok_or_else(|| missing(what, "vote"))?;
    Ok(openraft::impls::Vote {
        leader_id: LeaderId::new(v.term, v.node_id),
        committed: v.committed,
    })
}

pub fn log_id_to_pb(id: &RaftLogId) -> pb::LogId {
    pb::LogId {
        term: id.leader_id.term,
        index: id.index,
    }
}

pub fn log_id_from_pb(id: Option<pb::LogId>) -> Option<RaftLogId> {
    id.map(|id| log_id(id.term, id.index))
}

pub fn entry_to_pb(e: &RaftEntry) -> pb::Entry {
    pb::Entry {
        term: e.log_id.leader_id.term,
        index: e.log_id.index,
        payload: codec::encode_payload(&e.payload),
        timestamp_ms: 0,
    }
}

pub fn entry_from_pb(e: pb::Entry) -> Result<RaftEntry, Error> {
    Ok(codec::entry(
        e.term,
        e.index,
        codec::decode_payload(&e.payload)?,
    ))
}

pub fn log_entry_to_pb(e: LogEntry) -> pb::Entry {
    pb::Entry {
        term: e.term.0,
        index: e.index.0,
        payload: e.payload,
        timestamp_ms: e.timestamp_ms,
    }
}

pub fn log_entry_from_pb(e: pb::Entry) -> LogEntry {
    LogEntry {
        index: LogIndex(e.index),
        term: Term(e.term),
        timestamp_ms: e.timestamp_ms,
        payload: e.payload,
    }
}

pub fn append_to_pb(group: u64, r: &AppendEntriesRequest<TypeConfig>) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        group_id: group,
        vote: Some(vote_to_pb(&r.vote)),
        prev_log_id: r.prev_log_id.as_ref().map(log_id_to_pb),
        entries: r.entries.iter().map(entry_to_pb).collect(),
        leader_commit: r.leader_commit.as_ref().map(log_id_to_pb),
    }
}

pub fn append_from_pb(
    r: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, Error> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(r.vote, "append entries request")?,
        prev_log_id: log_id_from_pb(r.prev_log_id),
        entries: r
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: log_id_from_pb(r.leader_commit),
    })
}

pub fn append_resp_to_pb(r: &AppendEntriesResponse<TypeConfig>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(m) => R::PartialSuccess(pb::PartialSuccess {
            matching: m.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

/// A response, or the error a batch item carried (as text for openraft's error types).
pub fn append_resp_from_pb(
    r: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<TypeConfig>, String> {
    use pb::append_entries_response::Result as R;
    match r.result {
        Some(R::Success(_)) => Ok(AppendEntriesResponse::Success),
        Some(R::PartialSuccess(p)) => Ok(AppendEntriesResponse::PartialSuccess(log_id_from_pb(
            p.matching,
        ))),
        Some(R::Conflict(_)) => Ok(AppendEntriesResponse::Conflict),
        Some(R::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(
            vote_from_pb(Some(v), "append entries response").map_err(|e| e.to_string())?,
        )),
        Some(R::Error(e)) => Err(e.message),
        None => Err("append entries response has no result".to_string()),
    }
}

pub fn group_error(code: pb::GroupErrorCode, message: String) -> pb::AppendEntriesResponse {
    let e = pb::GroupError {
        code: code as i32,
        message,
    };
    pb::AppendEntriesResponse {
        result: Some(pb::append_entries_response::Result::Error(e)),
    }
}

pub fn vote_req_to_pb(group: u64, r: &VoteRequest<TypeConfig>, pre_vote: bool) -> pb::VoteRequest {
    pb::VoteRequest {
        group_id: group,
        vote: Some(vote_to_pb(&r.vote)),
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: r.leadership_transfer,
        pre_vote,
    }
}

pub fn vote_req_from_pb(r: pb::VoteRequest) -> Result<VoteRequest<TypeConfig>, Error> {
    Ok(VoteRequest {
        vote: vote_from_pb(r.vote, "vote request")?,
        last_log_id: log_id_from_pb(r.last_log_id),
        leadership_transfer: r.leadership_transfer,
    })
}

pub fn vote_resp_to_pb(r: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
    }
}

pub fn vote_resp_from_pb(r: pb::VoteResponse) -> Result<VoteResponse<TypeConfig>, Error> {
    Ok(VoteResponse::new(
        vote_from_pb(r.vote, "vote response")?,
        log_id_from_pb(r.last_log_id),
        r.vote_granted,
    ))
}

pub fn membership_to_pb(m: &RaftMembership) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|c| pb::MembershipConfig {
                voters: c.iter().copied().collect(),
            })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, n)| {
                (
                    *id,
                    pb::NodeAddr {
                        addr: n.addr.clone(),
                    },
                )
            })
            .collect(),
    }
}

pub fn membership_from_pb(m: Option<pb::Membership>) -> Result<RaftMembership, Error> {
    let m = m.ok_or_else(|| missing("snapshot meta", "membership"))?;
    let configs: Vec<BTreeSet<u64>> = m
        .configs
        .into_iter()
        .map(|c| c.voters.into_iter().collect())
        .collect();
    let nodes: BTreeMap<u64, PeerNode> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (id, PeerNode { addr: n.addr }))
        .collect();
    openraft::Membership::new(configs, nodes).map_err(|e| Error::Corrupt {
        what: "snapshot meta",
        detail: format!("invalid membership: {e}"),
    })
}

pub fn snapshot_meta_to_pb(m: &RaftSnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: m.last_log_id.as_ref().map(log_id_to_pb),
        membership_log_id: m.last_membership.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(m.last_membership.membership())),
    }
}

pub fn snapshot_meta_from_pb(m: Option<pb::SnapshotMeta>) -> Result<RaftSnapshotMeta, Error> {
    let m = m.ok_or_else(|| missing("snapshot header", "meta"))?;
    let membership = membership_from_pb(m.membership)?;
    Ok(RaftSnapshotMeta {
        last_log_id: log_id_from_pb(m.last_log_id),
        last_membership: RaftStoredMembership::new(log_id_from_pb(m.membership_log_id), membership),
    })
}

pub fn transfer_req_to_pb(
    group: u64,
    r: &TransferLeaderRequest<TypeConfig>,
) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        group_id: group,
        from_leader: Some(vote_to_pb(r.from_leader())),
        to_node_id: *r.to_node_id(),
        last_log_id: r.last_log_id().map(log_id_to_pb),
    }
}

pub fn transfer_req_from_pb(
    r: pb::TransferLeaderRequest,
) -> Result<TransferLeaderRequest<TypeConfig>, Error> {
    Ok(TransferLeaderRequest::new(
        vote_from_pb(r.from_leader, "transfer leader request")?,
        r.to_node_id,
        log_id_from_pb(r.last_log_id),
    ))
}

pub fn transfer_resp_to_pb(r: &TransferLeaderResponse<TypeConfig>) -> pb::TransferLeaderResponse {
    use pb::transfer_leader_response::Result as R;
    let result = match r {
        Ok(()) => R::Ok(pb::Empty {}),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            R::VoteChanged(pb::VoteChanged {
                expected: Some(vote_to_pb(expected)),
                actual: Some(vote_to_pb(actual)),
            })
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            R::LogNotFlushed(pb::LogNotFlushed {
                expected: expected.as_ref().map(log_id_to_pb),
                actual: actual.as_ref().map(log_id_to_pb),
            })
        }
    };
    pb::TransferLeaderResponse {
        result: Some(result),
    }
}

pub fn transfer_resp_from_pb(
    r: pb::TransferLeaderResponse,
) -> Result<TransferLeaderResponse<TypeConfig>, Error> {
    use pb::transfer_leader_response::Result as R;
    match r.result {
        Some(R::Ok(_)) => Ok(Ok(())),
        Some(R::VoteChanged(v)) => Ok(Err(TransferLeaderError::VoteChanged {
            expected: vote_from_pb(v.expected, "transfer leader response")?,
            actual: vote_from_pb(v.actual, "transfer leader response")?,
        })),
        Some(R::LogNotFlushed(l)) => Ok(Err(TransferLeaderError::LogNotFlushed {
            expected: log_id_from_pb(l.expected),
            actual: log_id_from_pb(l.actual),
        })),
        None => Err(missing("transfer leader response", "result")),
    }
}
