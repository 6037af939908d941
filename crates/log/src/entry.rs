//! The values the log stores and is configured with.

use bytes::Bytes;
use runnel_types::{LogIndex, Term};

/// An entry's identity: enough for Raft to compare logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryId {
    pub index: LogIndex,
    pub term: Term,
}

/// One log entry. The payload is opaque to this crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub timestamp_ms: u64,
    pub payload: Bytes,
}

impl Entry {
    pub fn id(&self) -> EntryId {
        EntryId {
            index: self.index,
            term: self.term,
        }
    }
}

/// Tuning of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls once it would exceed this size (an entry larger than it gets a
    /// segment of its own). Retention deletes whole segments, so this is also its grain.
    pub segment_bytes_max: u64,
    /// The sparse index keeps one position per this many bytes of a segment: a read or
    /// a timestamp lookup scans at most about this much before reaching its entry.
    pub index_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 64 * 1024 * 1024,
            index_interval_bytes: 4 * 1024,
        }
    }
}

/// A snapshot of the log's size, for metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStats {
    /// Segment files on disk.
    pub segments: usize,
    /// Their total size, headers and purged-but-not-yet-deleted entries included.
    pub bytes: u64,
    pub first_index: Option<LogIndex>,
    pub last_index: Option<LogIndex>,
}
