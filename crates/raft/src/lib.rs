//! Shard replication: one openraft group per shard, many groups per node, over one
//! gRPC channel per peer node.
//!
//! What is where:
//! - [`types`]: the one openraft type configuration (`TypeConfig`), the command a
//!   group replicates ([`Command`]) and the peer node type ([`PeerNode`]).
//! - [`runtime`]: openraft's `AsyncRuntime` over the `tokio` in scope (madsim under
//!   `--cfg madsim`); [`detwatch`]: a watch channel with a deterministic wake order.
//! - [`io`]: where synchronous disk I/O runs (tokio's blocking pool; inline under
//!   madsim).
//! - [`codec`]: compact binary encodings of entries' payloads and of the values kept
//!   in node metadata.
//! - [`log_store`]: `RaftLogStorage` over the segment log; `flush`: the fsyncs behind
//!   its appends (a write overlaps the previous fsync; one fsync covers many appends);
//!   `tail_cache`: the newest entries in memory, so replication does not read them back; [`state_machine`]: the
//!   state machine (commit point, membership, snapshot meta; no copy of the data);
//!   [`snapshot`]: snapshots that carry the retained log, streamed in chunks; the
//!   receiver stages them on disk and installs them restartably.
//! - `network/`: the transport. [`network::client`] routes every group's RPCs to one
//!   channel per peer; [`network::batcher`] gathers the AppendEntries of many groups
//!   into one `BatchAppend` RPC; [`network::server`] is the gRPC service;
//!   [`network::wire`] converts between openraft's messages and the protobuf ones.
//! - [`registry`]: the groups a node hosts (create, open on restart, remove).
//! - [`group`]: one hosted group's handle: write, read committed entries, watch the
//!   commit point, change membership, hand leadership to another voter, trim.
//! - [`pipeline`]: group commit on the leader: concurrent writes gathered into one
//!   Raft entry.
//! - [`quiesce`]: idle groups stop ticking on every replica; node-level probes
//!   (`network/liveness.rs`) stand in for their heartbeats. `lease`: the first write
//!   after a quiesced spell renews the leader's lapsed lease instead of failing.
//! - [`error`]: [`Error`], the one error type.
//! - `inspect`: white-box views of a group (its segment log) for tests and the
//!   simulation's checkers.
//!
//! *Architecture invariant*: openraft's types do not leak past this crate's public
//! API except through [`types`]; the rest of the server speaks `runnel_types` ids.

pub mod codec;
pub mod detwatch;
pub mod error;
pub mod flush;
pub mod group;
mod inspect;
pub mod io;
mod lease;
pub mod log_store;
pub mod network;
pub mod pipeline;
pub mod quiesce;
pub mod registry;
pub mod runtime;
pub mod snapshot;
pub mod state_machine;
mod tail_cache;
pub mod types;

pub use error::Error;
pub use flush::FsyncObserver;
pub use group::{CommitWatch, CommittedBatch, Group, ReadBatches, ReplicaRole, ReplicaView};
pub use network::TransportConfig;
pub use pipeline::{PipelineConfig, WriteAck};
pub use quiesce::QuiesceConfig;
pub use registry::{RaftTimings, Registry, RegistryConfig};
pub use types::{Command, PeerNode, Reply, TypeConfig};
