//! Runnel's vocabulary, shared by the server, the SDK and the CLI.
//!
//! - [`ids`]: typed ids (`NodeId`, `ShardId`, `LogIndex`, `Term`, `SeqNo`, `StreamName`).
//! - [`hash`]: the 128-bit hash key space, MD5 of partition keys, ranges that tile it.
//! - [`record`]: records and the encoding of a record batch (one Raft entry's payload).
//! - [`limits`]: every limit, named, in one place.
//!
//! *Architecture invariant*: no I/O, no async, no Raft, no gRPC. Everything here is a
//! value and pure functions over values, so that every other crate (and the SDK, which
//! never depends on the server) can share it.

pub mod error;
pub mod hash;
pub mod ids;
pub mod limits;
pub mod planted;
pub mod record;

pub use error::TypesError;
pub use hash::{HashKey, HashRange};
pub use ids::{GroupId, LogIndex, NodeId, SeqNo, ShardId, StreamName, Term};
pub use record::Record;
