//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use runnel_log::{Disk, Entry, LogConfig, SegmentLog, SimDisk};
use runnel_types::{LogIndex, Term};

/// Small segments and a fine index, so that tests cross many boundaries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 512,
        index_interval_bytes: 64,
    }
}

/// An entry whose payload is derived from its index, `len` bytes long.
pub fn entry(index: u64, term: u64, ts: u64, len: usize) -> Entry {
    let payload: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry {
        index: LogIndex(index),
        term: Term(term),
        timestamp_ms: ts,
        payload: Bytes::from(payload),
    }
}

/// Entries `from..=to` in `term`, timestamps equal to their index.
pub fn entries(from: u64, to: u64, term: u64, len: usize) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term, i * 10, len)).collect()
}

pub fn sim_dir() -> PathBuf {
    PathBuf::from("/data/shard-1")
}

pub fn open_sim(disk: &SimDisk, config: LogConfig) -> SegmentLog {
    SegmentLog::open(disk.handle(), sim_dir(), config).expect("open")
}

pub fn open_at(disk: Arc<dyn Disk>, dir: &Path, config: LogConfig) -> SegmentLog {
    SegmentLog::open(disk, dir, config).expect("open")
}

/// Every entry present, read in one call.
pub fn read_all(log: &SegmentLog) -> Vec<Entry> {
    log.read(LogIndex(0), LogIndex(u64::MAX), usize::MAX)
        .expect("read")
}
