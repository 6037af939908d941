//! The segment log: one shard replica's durable log of entries `(index, term,
//! timestamp_ms, payload)` in a directory of segment files, over the [`Disk`] trait.
//!
//! *Architecture invariant*: this crate knows nothing of Raft or gRPC. The Raft glue
//! (`crates/raft`) maps its log onto [`SegmentLog`]; payloads are opaque bytes here.
//!
//! What is where:
//! - [`SegmentLog`] and its state, locking and small queries: `log.rs`; one file per
//!   operation: `write.rs` (append, roll, sync), `read.rs` (read, term_of,
//!   find_by_timestamp), `trim.rs` (truncate_suffix, purge_prefix).
//! - `recovery.rs`: opening a directory, cutting a torn tail, refusing corruption.
//! - [`frame`]: the on-disk frame of one entry and its decoder (fuzzed in `fuzz/`).
//! - `segment.rs`: segment file names and header, a segment's in-memory state, and the
//!   cursor that walks frames with few, large reads.
//! - `index.rs`: the sparse offset/timestamp index per segment and the term runs.
//! - `purge_file.rs`: the persisted purge point.
//! - [`disk`]: the [`Disk`] trait and [`RealDisk`]; [`sim_disk`]: [`SimDisk`], in memory,
//!   with crash, torn writes and injected failures, for tests and simulation.
//! - `entry.rs`: [`Entry`], [`EntryId`], [`LogConfig`], [`LogStats`]; `error.rs`: [`LogError`].
//!
//! *Durability*: `append` writes, `sync` makes durable (group commit: many appends, one
//! sync). `truncate_suffix` and `purge_prefix` are durable when they return. A failed
//! write or sync poisons the log until it is reopened.

pub mod disk;
mod entry;
mod error;
pub mod frame;
mod index;
mod log;
mod purge_file;
mod read;
mod recovery;
mod segment;
pub mod sim_disk;
mod trim;
mod write;

pub use disk::{Disk, DiskFile, RealDisk};
pub use entry::{Entry, EntryId, LogConfig, LogStats};
pub use error::LogError;
pub use log::SegmentLog;
pub use sim_disk::SimDisk;
