//! The Raft transport between nodes: one gRPC channel per peer, shared by all groups.
//!
//! - [`client`]: [`Router`](client::Router), openraft-multi's `GroupRouter` over our
//!   peers, and the per-group network factory.
//! - [`batcher`]: the per-peer task that turns many groups' AppendEntries into one
//!   `BatchAppend` RPC.
//! - [`server`]: the `RaftTransport` gRPC service.
//! - `liveness`: node-level probes of each peer, what quiesced groups rely on.
//! - [`wire`]: openraft messages to and from protobuf.

pub mod batcher;
pub mod client;
pub(crate) mod liveness;
pub mod server;
pub mod wire;

use std::time::Duration;

/// Largest Raft transport message a node accepts (tonic's default is 4 MiB, less than
/// one full record batch). The bound that matters: one AppendEntries carries at most
/// [`APPEND_ENTRIES_MAX`] entries, and an entry is at most one write of
/// `BATCH_BYTES_MAX` (4 MiB) or one group-commit entry
/// (`PipelineConfig::entry_bytes_max`), so 32 × 4 MiB plus framing fits.
pub const MESSAGE_BYTES_MAX: usize = 160 * 1024 * 1024;

/// Entries per AppendEntries (openraft's `max_payload_entries`; its default, 300, times
/// 4 MiB entries would make messages of more than a gigabyte).
pub const APPEND_ENTRIES_MAX: u64 = 32;

/// Limits and windows of the transport. Every field is a bound.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// How long a batch of heartbeats (AppendEntries without entries) waits for more
    /// items before it is sent. An item that carries entries is sent at once.
    pub batch_window: Duration,
    /// Most AppendEntries per `BatchAppend` RPC.
    pub batch_items_max: usize,
    /// Payload bytes after which a `BatchAppend` is sent without waiting for more items
    /// (one item larger than this still goes, alone).
    pub batch_bytes_max: usize,
    /// Queued AppendEntries per peer before senders wait (back-pressure).
    pub queue_items_max: usize,
    /// `BatchAppend` RPCs in flight per peer.
    pub inflight_batches_max: usize,
    /// Time to establish a connection to a peer.
    pub connect_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            batch_window: Duration::from_millis(5),
            batch_items_max: 1024,
            batch_bytes_max: 8 * 1024 * 1024,
            queue_items_max: 8192,
            inflight_batches_max: 8,
            connect_timeout: Duration::from_secs(2),
        }
    }
}
