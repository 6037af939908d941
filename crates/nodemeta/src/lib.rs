//! Node-local metadata: the few small values a node keeps for itself, outside any Raft
//! log. Its identity (node id, cluster id) and, for every Raft group it hosts, the vote,
//! the last membership, the applied index, the committed log id and (for the meta
//! group) the state machine's snapshot.
//!
//! - [`store`]: the [`MetaStore`] trait, an ordered byte map with atomic write batches
//!   and an explicit `flush` that makes everything applied so far durable.
//! - [`batch`]: [`WriteBatch`], the unit of atomicity (put, delete, delete a prefix).
//! - [`mem`]: [`MemStore`], in memory, with the crash semantics of a disk: `crash()`
//!   drops every batch applied since the last flush, whole batches only.
//! - `sled_store`: [`SledStore`], the real one, on sled 0.34 (not under madsim).
//! - [`node_meta`]: [`NodeMeta`], the typed layer the rest of the server uses, and the
//!   key layout (documented there).
//! - [`error`]: [`MetaStoreError`], the one error type.
//! - [`limits`]: key and value size limits.
//!
//! Why sled sits behind a trait: sled starts background threads (its flusher) when a
//! database opens, and madsim refuses threads it did not create, so a simulated node
//! cannot open sled. Under `--cfg madsim` the sled implementation is not even compiled;
//! the simulation harness gives each node a [`MemStore`] and keeps it (it is `Clone`,
//! shared inside) across a killed node, calling [`MemStore::crash`] to lose what was
//! never flushed.
//!
//! *Architecture invariant*: this crate knows nothing of Raft. Values are opaque bytes;
//! the raft crate serializes openraft's types and decides what must be durable when.

pub mod batch;
pub mod error;
pub mod limits;
pub mod mem;
pub mod node_meta;
#[cfg(not(madsim))]
mod sled_store;
pub mod store;

pub use batch::{BatchOp, WriteBatch};
pub use error::MetaStoreError;
pub use mem::MemStore;
pub use node_meta::{GroupKey, NodeIdentity, NodeMeta};
#[cfg(not(madsim))]
pub use sled_store::SledStore;
pub use store::{KeyValue, MetaStore};
