//! One openraft type configuration for all groups, shard and meta alike, so that one
//! transport, one runtime and one storage adapter serve them all.
//!
//! - Node ids are `u64` ([`runnel_types::NodeId`] on our side of the API).
//! - Standard Raft leader ids (one leader per term): a log id is then `(term, index)`,
//!   exactly what the segment log stores for each entry.
//! - `D` is a [`Command`]: for a shard, one record batch formed by group commit.
//! - `R` is a [`Reply`]: the (segment-log) index the command was applied at.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The type configuration of every Runnel Raft group.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = PeerNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = crate::runtime::RunnelRt,
);

/// What a group knows of a peer node: where to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the peer's internal gRPC endpoint.
    pub addr: String,
}

impl PeerNode {
    pub fn new(addr: impl Into<String>) -> PeerNode {
        PeerNode { addr: addr.into() }
    }
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// A command proposed to a group: the `D` of every Raft entry. An enum so that the meta
/// group's commands can join later without a second type configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A shard write: an encoded record batch (`runnel_types::record::encode_batch`)
    /// and the leader's arrival time.
    Records {
        /// Milliseconds since the Unix epoch when the leader formed the batch.
        timestamp_ms: u64,
        /// Number of records in `batch`, so that no one decodes it to count.
        records: u32,
        batch: Bytes,
        /// The whole entry payload `batch` is a slice of, when the command was built
        /// by [`crate::codec::records_command`] or decoded from a payload: the log and
        /// every follower's AppendEntries then share it instead of encoding it again.
        #[serde(skip)]
        encoded: EncodedPayload,
    },
}

/// A cached encoding of a command (see [`Command::Records`]). Not part of the
/// command's value: two commands are equal whether or not either carries it.
#[derive(Clone, Default)]
pub struct EncodedPayload(pub(crate) Option<Bytes>);

impl PartialEq for EncodedPayload {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EncodedPayload {}

impl fmt::Debug for EncodedPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "cached" } else { "none" })
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Records {
                timestamp_ms,
                records,
                batch,
                ..
            } => {
                write!(
                    f,
                    "Records{{n: {records}, bytes: {}, ts: {timestamp_ms}}}",
                    batch.len()
                )
            }
        }
    }
}

/// What applying a command returns to its proposer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The entry's segment-log index (Raft index + 1): a record's sequence number is
    /// `SeqNo::new(LogIndex(index), slot)`.
    pub index: u64,
}
