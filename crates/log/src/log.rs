//! `SegmentLog`: the log's state, its locking, opening, and the small queries.
//! The operations live one per file: `write.rs` (append, roll, sync), `read.rs`
//! (read, term_of, find_by_timestamp), `trim.rs` (truncate_suffix, purge_prefix).
//!
//! Locking: one `RwLock` over the state. Appends, truncations and purges take it for
//! writing; reads take it for reading (and do their I/O under it, so that a truncation
//! never pulls bytes from under a read). `sync` takes it only to find the active file,
//! so appends go on while an fdatasync is in flight: that is what makes group commit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use runnel_types::LogIndex;

use crate::disk::Disk;
use crate::entry::{EntryId, LogConfig, LogStats};
use crate::error::LogError;
use crate::index::TermRuns;
use crate::recovery;
use crate::segment::Segment;

/// One shard replica's log: a directory of segment files. `Send + Sync`; share it in an
/// `Arc` between one writer and many readers.
#[derive(Debug)]
pub struct SegmentLog {
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) state: RwLock<State>,
}

#[derive(Debug)]
pub(crate) struct State {
    /// In base order; every one has at least one entry, except that the last may hold
    /// only purged entries after a truncation. The last one takes appends.
    pub segments: Vec<Segment>,
    pub purged: Option<EntryId>,
    pub terms: TermRuns,
    /// Why writes are refused, after a failed write or sync.
    pub poisoned: Option<String>,
}

impl State {
    /// The index the next append must start at.
    pub fn next_index(&self) -> LogIndex {
        match self.segments.last() {
            Some(seg) => seg.next_index,
            None => self.first_allowed(),
        }
    }

    /// The smallest index the log may hold: one past the purge point.
    pub fn first_allowed(&self) -> LogIndex {
        self.purged.map_or(LogIndex(1), |p| p.index.next())
    }

    /// `[first, last]` of the entries present, if any.
    pub fn visible(&self) -> Option<(LogIndex, LogIndex)> {
        let first_seg = self.segments.first()?;
        let first = first_seg.base.max(self.first_allowed());
        let last = self.next_index().prev()?;
        (first <= last).then_some((first, last))
    }

    /// The position in `segments` of the segment holding `index`, if any.
    pub fn segment_of(&self, index: LogIndex) -> Option<usize> {
        let n = self.segments.partition_point(|s| s.base <= index);
        let i = n.checked_sub(1)?;
        self.segments[i].contains(index).then_some(i)
    }
}

impl SegmentLog {
    /// Opens (creating the directory if missing) and recovers: cuts a torn tail, refuses
    /// corruption without touching anything. See `recovery.rs`.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<SegmentLog, LogError> {
        let dir = dir.into();
        let rec = recovery::recover(disk.as_ref(), &dir, &config)?;
        Ok(SegmentLog {
            disk,
            dir,
            config,
            state: RwLock::new(State {
                segments: rec.segments,
                purged: rec.purged,
                terms: rec.terms,
                poisoned: None,
            }),
        })
    }

    /// The first entry present, `None` when the log is empty.
    pub fn first_index(&self) -> Option<LogIndex> {
        self.read_state().visible().map(|(first, _)| first)
    }

    /// The last entry present, `None` when the log is empty.
    pub fn last_entry(&self) -> Option<EntryId> {
        let st = self.read_state();
        let (_, last) = st.visible()?;
        let term = st
            .terms
            .term_of(last)
            .expect("every present entry has a term");
        Some(EntryId { index: last, term })
    }

    /// The persisted purge point: the last purged entry.
    pub fn purged(&self) -> Option<EntryId> {
        self.read_state().purged
    }

    pub fn stats(&self) -> LogStats {
        let st = self.read_state();
        let visible = st.visible();
        LogStats {
            segments: st.segments.len(),
            bytes: st.segments.iter().map(|s| s.len).sum(),
            first_index: visible.map(|v| v.0),
            last_index: visible.map(|v| v.1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("no code panics while holding the log lock")
    }

    /// The state for a mutation, unless an earlier failure poisoned the log.
    pub(crate) fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>, LogError> {
        let st = self
            .state
            .write()
            .expect("no code panics while holding the log lock");
        match &st.poisoned {
            Some(cause) => Err(LogError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            }),
            None => Ok(st),
        }
    }
}

/// Runs a mutation's I/O; a failure poisons the log, since what reached the disk is
/// then unknown.
pub(crate) fn poison_on_err<T>(st: &mut State, r: Result<T, LogError>) -> Result<T, LogError> {
    if let Err(e) = &r {
        st.poisoned = Some(e.to_string());
    }
    r
}
