//! openraft's type configuration for every Runnel group, and short aliases.

pub mod config;

pub use config::{Command, EncodedPayload, PeerNode, Reply, TypeConfig};

/// The openraft instance of one group.
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::ShardStateMachine>;
pub type RaftEntry = openraft::alias::EntryOf<TypeConfig>;
pub type RaftPayload = openraft::alias::PayloadOf<TypeConfig>;
pub type RaftLogId = openraft::alias::LogIdOf<TypeConfig>;
pub type RaftVote = openraft::alias::VoteOf<TypeConfig>;
pub type RaftMembership = openraft::Membership<u64, PeerNode>;
pub type RaftStoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type RaftSnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type RaftLeaderId = openraft::alias::LeaderIdOf<TypeConfig>;
pub type RaftCommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;

/// A log id from a term and an index.
pub fn log_id(term: u64, index: u64) -> RaftLogId {
    openraft::LogId::new(
        openraft::vote::leader_id_std::CommittedLeaderId::new(term),
        index,
    )
}
