//! In-memory indexes, rebuilt when a log is opened (see `recovery.rs`):
//! - [`SparseIndex`]: per segment, one frame position every `index_interval_bytes`, with
//!   the largest timestamp seen before it, so that reads and timestamp lookups start
//!   near their entry instead of at the start of the segment.
//! - [`TermRuns`]: per log, where each term starts. Terms change rarely, so this is tiny
//!   and answers `term_of` without touching the disk.

use runnel_types::{LogIndex, Term};

/// A frame position kept by the sparse index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexPoint {
    pub index: LogIndex,
    pub offset: u64,
    /// The largest timestamp among the segment's frames before this one (0 if none).
    pub max_ts_before: u64,
}

#[derive(Debug)]
pub(crate) struct SparseIndex {
    interval: u64,
    points: Vec<IndexPoint>,
}

impl SparseIndex {
    pub fn new(interval_bytes: u64) -> SparseIndex {
        SparseIndex {
            interval: interval_bytes.max(1),
            points: Vec::new(),
        }
    }

    /// Notes a frame appended at `offset`: kept if it is the segment's first or at least
    /// one interval past the last kept point.
    pub fn on_frame(&mut self, point: IndexPoint) {
        let due = match self.points.last() {
            None => true,
            Some(last) => point.offset - last.offset >= self.interval,
        };
        if due {
            self.points.push(point);
        }
    }

    /// The last point at or before `index`.
    pub fn floor(&self, index: LogIndex) -> Option<IndexPoint> {
        let n = self.points.partition_point(|p| p.index <= index);
        n.checked_sub(1).map(|i| self.points[i])
    }

    /// The offset of the first point at or after `index`: where a read of entries
    /// below `index` can stop.
    pub fn ceil_offset(&self, index: LogIndex) -> Option<u64> {
        let n = self.points.partition_point(|p| p.index < index);
        self.points.get(n).map(|p| p.offset)
    }

    /// The point from which a scan finds the first frame with a timestamp >= `ts`: the
    /// last point before which every timestamp is below `ts`.
    pub fn timestamp_floor(&self, ts: u64) -> Option<IndexPoint> {
        let n = self.points.partition_point(|p| p.max_ts_before < ts);
        n.checked_sub(1).map(|i| self.points[i])
    }

    /// Forgets points at or after `from` (the segment was cut there).
    pub fn truncate(&mut self, from: LogIndex) {
        let n = self.points.partition_point(|p| p.index < from);
        self.points.truncate(n);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }
}

/// The first index of each run of equal terms, in index order.
#[derive(Debug, Default)]
pub(crate) struct TermRuns {
    runs: Vec<(LogIndex, Term)>,
}

impl TermRuns {
    pub fn push(&mut self, index: LogIndex, term: Term) {
        if self.runs.last().is_none_or(|(_, t)| *t != term) {
            self.runs.push((index, term));
        }
    }

    /// The term of `index`, assuming the caller checked it is in the log.
    pub fn term_of(&self, index: LogIndex) -> Option<Term> {
        let n = self.runs.partition_point(|(start, _)| *start <= index);
        n.checked_sub(1).map(|i| self.runs[i].1)
    }

    /// Forgets entries at or after `from`.
    pub fn truncate(&mut self, from: LogIndex) {
        let n = self.runs.partition_point(|(start, _)| *start < from);
        self.runs.truncate(n);
    }

    /// Forgets runs that end before `first_kept`.
    pub fn purge_before(&mut self, first_kept: LogIndex) {
        let n = self.runs.partition_point(|(start, _)| *start <= first_kept);
        if n > 1 {
            self.runs.drain(..n - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(index: u64, offset: u64, ts: u64) -> IndexPoint {
        IndexPoint {
            index: LogIndex(index),
            offset,
            max_ts_before: ts,
        }
    }

    #[test]
    fn sparse_index_keeps_one_point_per_interval() {
        let mut idx = SparseIndex::new(100);
        for i in 0..10u64 {
            idx.on_frame(pt(i + 1, 32 + i * 40, i * 10));
        }
        // Frames at 32, 72, 112, 152, ...: kept at 32, 152, 272, 392.
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.floor(LogIndex(5)), Some(pt(4, 152, 30)));
        assert_eq!(idx.floor(LogIndex(0)), None);
        assert_eq!(idx.ceil_offset(LogIndex(5)), Some(272));
        assert_eq!(idx.ceil_offset(LogIndex(8)), Some(392));
        assert_eq!(idx.ceil_offset(LogIndex(11)), None);
        assert_eq!(idx.timestamp_floor(35).map(|p| p.index), Some(LogIndex(4)));
        assert_eq!(idx.timestamp_floor(0).map(|p| p.index), None);
        idx.truncate(LogIndex(4));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn term_runs_answer_truncate_and_purge() {
        let mut runs = TermRuns::default();
        for (i, t) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 5)] {
            runs.push(LogIndex(i), Term(t));
        }
        assert_eq!(runs.term_of(LogIndex(2)), Some(Term(1)));
        assert_eq!(runs.term_of(LogIndex(4)), Some(Term(2)));
        assert_eq!(runs.term_of(LogIndex(9)), Some(Term(5)));
        runs.truncate(LogIndex(4));
        assert_eq!(runs.term_of(LogIndex(9)), Some(Term(2)));
        runs.purge_before(LogIndex(3));
        assert_eq!(runs.runs, vec![(LogIndex(3), Term(2))]);
        runs.purge_before(LogIndex(4));
        assert_eq!(runs.runs, vec![(LogIndex(3), Term(2))]);
    }
}
