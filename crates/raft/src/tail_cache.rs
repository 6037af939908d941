//! The newest entries of a group's log, kept in memory for replication.
//!
//! Why: openraft's replication reads every entry it sends back through the log reader,
//! just after `append` wrote it. From the segment log that is a hop to the blocking
//! pool, a `pread`, a CRC check and a payload decode per follower; profiles of the
//! write path showed that read-back as a large share of the leader's work. The
//! entries openraft just appended are still at hand, so the reader serves them from
//! here (record batches are `Bytes`: a clone shares the memory).
//!
//! Invariant: the cache holds a contiguous run of entries that ends at the log's last
//! entry, or nothing. `append` extends it, `truncate_after` cuts it, and anything
//! else that changes the log's tail behind openraft's back (a snapshot install, a
//! purge past the last entry) clears it. A read it cannot serve whole falls back to
//! the log. Bounded by bytes. Committed entries are kept up to
//! [`COMMITTED_KEEP_BYTES`]: a commit needs only a majority, and under load the third
//! replica trails the commit point by a few entries; dropping them at commit sent its
//! replication to the disk (12% of a node's CPU in a whole-cluster profile; with 4
//! MiB kept it still was 29%, gone with 32 MiB). A group that goes quiet drops its
//! cache when it quiesces (every follower has matched). So that thousands of busy
//! groups cannot hold 32 MiB each, committed entries across a node are bounded by a
//! [`TailBudget`] ([`COMMITTED_NODE_BYTES_MAX`] by default): past it, each group keeps
//! at most its fair share of the budget (the budget over the groups holding committed
//! entries), so that the trailing followers of busy groups slow down evenly rather than
//! all going to the disk at once.
//!
//! The budget is per node (one per registry), not per process: `runnel dev` and the
//! tests run three nodes in one process, and with a process-wide bound one node's
//! groups took the others' share. Under load the shared bound was reached within two
//! seconds, every group then kept nothing, and the third replicas' replication read
//! from the disk: 22% of the process's CPU, and full-load throughput fell by a quarter
//! from one run to the next.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::EntryPayload;

use crate::types::{Command, RaftEntry};

/// Payload bytes a group keeps in memory: the group-commit entries in flight (at most
/// 8 of 1 MiB) and the committed ones kept for trailing followers.
pub(crate) const TAIL_CACHE_BYTES_MAX: usize = 40 * 1024 * 1024;
/// Bytes of committed entries a group keeps for trailing followers.
pub(crate) const COMMITTED_KEEP_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of committed entries all groups of one node keep together.
pub const COMMITTED_NODE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// The committed bytes that every tail cache of one node holds, against one bound.
#[derive(Debug)]
pub struct TailBudget {
    max: usize,
    held: AtomicUsize,
    /// Caches holding any committed entry: they share the budget when it is short.
    holders: AtomicUsize,
}

impl TailBudget {
    pub fn new(max: usize) -> Arc<TailBudget> {
        Arc::new(TailBudget {
            max,
            held: AtomicUsize::new(0),
            holders: AtomicUsize::new(0),
        })
    }

    /// Committed bytes held by the node's caches.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// What one cache may keep of `wanted`: all of it while the node is within its
    /// budget, else its fair share.
    fn allowance(&self, wanted: usize) -> usize {
        if self.held() <= self.max {
            return wanted;
        }
        wanted.min(self.max / self.holders.load(Ordering::Relaxed).max(1))
    }
}

#[derive(Debug)]
pub(crate) struct TailCache {
    entries: VecDeque<RaftEntry>,
    bytes: usize,
    /// How many entries at the front are committed, and their bytes.
    committed: usize,
    committed_bytes: usize,
    budget: Arc<TailBudget>,
}

impl Default for TailCache {
    /// A cache with a budget of its own (tests, the storage suite).
    fn default() -> Self {
        TailCache::new(TailBudget::new(COMMITTED_NODE_BYTES_MAX))
    }
}

fn entry_bytes(e: &RaftEntry) -> usize {
    match &e.payload {
        EntryPayload::Normal(Command::Records { batch, .. }) => batch.len() + 64,
        _ => 256,
    }
}

impl TailCache {
    pub(crate) fn new(budget: Arc<TailBudget>) -> TailCache {
        TailCache {
            entries: VecDeque::new(),
            bytes: 0,
            committed: 0,
            committed_bytes: 0,
            budget,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// The Raft index of the newest entry held.
    pub(crate) fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id.index)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.committed = 0;
        self.uncount_committed(self.committed_bytes);
    }

    fn count_committed(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.committed_bytes == 0 {
            self.budget.holders.fetch_add(1, Ordering::Relaxed);
        }
        self.committed_bytes += n;
        self.budget.held.fetch_add(n, Ordering::Relaxed);
    }

    fn uncount_committed(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.committed_bytes -= n;
        self.budget.held.fetch_sub(n, Ordering::Relaxed);
        if self.committed_bytes == 0 {
            self.budget.holders.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Entries just appended to the log (contiguous with what is held, or the run
    /// starts again from them).
    pub(crate) fn push(&mut self, appended: &[RaftEntry]) {
        let Some(first) = appended.first() else {
            return;
        };
        if self
            .last_index()
            .is_some_and(|l| l + 1 != first.log_id.index)
        {
            self.clear();
        }
        for e in appended {
            self.bytes += entry_bytes(e);
            self.entries.push_back(e.clone());
        }
        while self.bytes > TAIL_CACHE_BYTES_MAX && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            let n = entry_bytes(&e);
            self.bytes -= n;
            if self.committed > 0 {
                self.committed -= 1;
                self.uncount_committed(n);
            }
        }
    }

    /// Drops entries up to Raft index `index` (purged from the log).
    pub(crate) fn evict_upto(&mut self, index: u64) {
        while self.first_index().is_some_and(|f| f <= index) {
            self.pop_front();
        }
    }

    /// Entries up to Raft index `index` are committed: keeps the newest of them up to
    /// `keep` bytes for followers that trail the commit point, drops the rest.
    pub(crate) fn committed_upto(&mut self, index: u64, keep: usize) {
        while let Some(e) = self.entries.get(self.committed) {
            if e.log_id.index > index {
                break;
            }
            let n = entry_bytes(e);
            self.committed += 1;
            self.count_committed(n);
        }
        let keep = self.budget.allowance(keep);
        while self.committed > 0 && self.committed_bytes > keep {
            self.pop_front();
        }
    }

    /// Drops entries after Raft index `last` (a truncation of the log's suffix).
    pub(crate) fn truncate_after(&mut self, last: Option<u64>) {
        while self
            .last_index()
            .is_some_and(|l| last.is_none_or(|last| l > last))
        {
            if let Some(e) = self.entries.pop_back() {
                let n = entry_bytes(&e);
                self.bytes -= n;
                if self.committed > self.entries.len() {
                    // Committed entries are never truncated; stay consistent anyway.
                    self.committed -= 1;
                    self.uncount_committed(n);
                }
            }
        }
    }

    /// Raft indices `[from, to)`, clipped to the newest entry, if every one is held.
    /// The caller has checked that the cache ends at the log's last entry.
    pub(crate) fn get(&self, from: u64, to: u64) -> Option<Vec<RaftEntry>> {
        let (first, last) = (self.first_index()?, self.last_index()?);
        if from < first {
            return None;
        }
        let end = to.min(last + 1);
        if from >= end {
            return Some(Vec::new());
        }
        let skip = (from - first) as usize;
        let n = (end - from) as usize;
        Some(self.entries.iter().skip(skip).take(n).cloned().collect())
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.uncount_committed(self.committed_bytes);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec;

    fn entries(from: u64, to: u64) -> Vec<RaftEntry> {
        (from..to)
            .map(|i| {
                let cmd = Command::Records {
                    timestamp_ms: i,
                    records: 1,
                    batch: Bytes::from(vec![0u8; 10]),
                    encoded: Default::default(),
                };
                codec::entry(1, i, EntryPayload::Normal(cmd))
            })
            .collect()
    }

    fn indices(v: &[RaftEntry]) -> Vec<u64> {
        v.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn serves_only_what_it_holds() {
        let mut c = TailCache::default();
        c.push(&entries(5, 10));
        assert_eq!(c.get(4, 8), None);
        assert_eq!(c.get(6, 8).map(|v| indices(&v)), Some(vec![6, 7]));
        assert_eq!(c.get(8, 100).map(|v| indices(&v)), Some(vec![8, 9]));
        c.truncate_after(Some(7));
        assert_eq!(c.last_index(), Some(7));
        c.push(&entries(8, 9));
        assert_eq!(c.get(5, 100).map(|v| indices(&v)), Some(vec![5, 6, 7, 8]));
        c.evict_upto(6);
        assert_eq!(c.get(6, 8), None);
        // A gap restarts the run.
        c.push(&entries(20, 22));
        assert_eq!(c.get(8, 9), None);
        assert_eq!(c.get(20, 22).map(|v| indices(&v)), Some(vec![20, 21]));
        c.truncate_after(None);
        assert_eq!(c.last_index(), None);
    }

    #[test]
    fn keeps_the_newest_committed_entries_within_their_budget() {
        let mut c = TailCache::default();
        c.push(&entries(1, 11));
        let each = entry_bytes(&entries(1, 2)[0]);
        // Entries 1..=6 committed; room for three of them.
        c.committed_upto(6, 3 * each);
        assert_eq!(c.get(1, 100), None);
        assert_eq!(c.get(4, 100).map(|v| indices(&v)), Some((4..11).collect()));
        // Nothing committed is dropped while it fits.
        c.committed_upto(6, 100 * each);
        assert_eq!(c.get(4, 5).map(|v| indices(&v)), Some(vec![4]));
        // Uncommitted entries are never dropped for the committed budget.
        c.committed_upto(10, 0);
        assert_eq!(c.get(10, 11), None);
        assert_eq!(c.last_index(), None);
        c.push(&entries(11, 13));
        assert_eq!(c.get(11, 13).map(|v| indices(&v)), Some(vec![11, 12]));
        c.committed_upto(11, 0);
        assert_eq!(c.get(12, 13).map(|v| indices(&v)), Some(vec![12]));
        assert_eq!(c.bytes, each);
    }

    #[test]
    fn a_short_node_budget_is_shared_fairly() {
        let each = entry_bytes(&entries(1, 2)[0]);
        // Room for 8 committed entries on the node; two caches want 10 each.
        let budget = TailBudget::new(8 * each);
        let (mut a, mut b) = (
            TailCache::new(budget.clone()),
            TailCache::new(budget.clone()),
        );
        a.push(&entries(1, 11));
        a.committed_upto(10, 100 * each);
        // Alone and over budget: a keeps the whole budget (its share is all of it).
        assert_eq!(budget.held(), 8 * each);
        assert_eq!(a.get(3, 11).map(|v| v.len()), Some(8));
        b.push(&entries(1, 11));
        b.committed_upto(10, 100 * each);
        // b took its share; once a commits again, it gives back to its own share.
        assert_eq!(b.get(7, 11).map(|v| v.len()), Some(4));
        assert_eq!(b.get(6, 11), None);
        a.push(&entries(11, 12));
        a.committed_upto(11, 100 * each);
        assert_eq!(a.get(8, 12).map(|v| v.len()), Some(4));
        assert_eq!(a.get(7, 12), None);
        assert_eq!(budget.held(), 8 * each);
        // A cache that is dropped or cleared gives its bytes back.
        drop(b);
        a.clear();
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.holders.load(Ordering::Relaxed), 0);
    }
}
