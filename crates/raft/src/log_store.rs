//! openraft's `RaftLogStorage` and `RaftLogReader` over one group's [`SegmentLog`]:
//! each Raft entry is one segment-log entry, `(index, term, timestamp_ms, payload)`,
//! with the payload in [`codec`](crate::codec)'s encoding. Vote and committed log id
//! live in `runnel-nodemeta`.
//!
//! **Two purge points.** openraft purges its log after a snapshot; for Runnel the log
//! *is* the data, so an openraft purge is mostly logical: it moves `raft_purged` (what
//! openraft may no longer read) and deletes segment files only up to the retention
//! floor set by [`GroupStorage::set_trim_floor`]. After a follower installs a snapshot,
//! openraft purges up to the snapshot's last log id, yet the snapshot's entries stay on
//! disk for readers. The physical purge point is never above the logical one.
//!
//! **Timestamps.** A record batch carries the leader's arrival time. Blank and
//! membership entries carry none and inherit the previous entry's; every entry's
//! stored timestamp is the running maximum, so it never decreases along the log and is
//! the same on every replica (it is a function of the log prefix).
//!
//! **Index offset.** openraft numbers its log from 0 (the initial membership entry of a
//! new group is entry 0); the segment log and sequence numbers count from 1. Segment-log
//! index = Raft index + 1, everywhere: [`to_log_index`] and [`to_raft_index`] are the
//! only conversions. Everything this crate exposes (commit watch, write results,
//! reads) is in segment-log indices.
//!
//! **Durability.** `append` writes and returns; `IOFlushed` fires after an fsync that
//! covers the entries (`flush.rs`: the next append overlaps that fsync); the vote is
//! flushed before `save_vote` returns; `truncate_after` and physical purges are durable
//! when the segment log returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use runnel_log::{Entry, EntryId, SegmentLog};
use runnel_nodemeta::{GroupKey, NodeMeta};
use runnel_types::{GroupId, LogIndex, Term};

use crate::codec;
use crate::error::Error;
use crate::flush::{FlushQueue, FsyncObserver};
use crate::io::blocking;
use crate::tail_cache::{TailBudget, TailCache};
use crate::types::{RaftEntry, RaftLogId, RaftVote, TypeConfig, log_id};

/// Bytes read from the segment log per call when openraft asks for a range.
const READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The nodemeta key of the logical (openraft) purge point.
pub(crate) const RAFT_PURGED_KEY: GroupKey = GroupKey::Custom("raft_purged");

/// The segment-log index of a Raft log index.
pub fn to_log_index(raft_index: u64) -> LogIndex {
    LogIndex(raft_index + 1)
}

/// The Raft log index of a segment-log index (which starts at 1).
pub fn to_raft_index(index: LogIndex) -> u64 {
    index.0.saturating_sub(1)
}

/// The Raft log id of a segment-log entry id.
pub fn to_raft_log_id(id: EntryId) -> RaftLogId {
    log_id(id.term.0, to_raft_index(id.index))
}

/// The segment-log entry id of a Raft log id.
pub fn to_entry_id(id: &RaftLogId) -> EntryId {
    EntryId {
        index: to_log_index(id.index),
        term: Term(id.leader_id.term),
    }
}

/// Everything a group's storage adapters share: its log, its node's metadata, and the
/// two purge points.
#[derive(Debug)]
pub struct GroupStorage {
    pub(crate) group: GroupId,
    pub(crate) log: Arc<SegmentLog>,
    pub(crate) meta: Arc<NodeMeta>,
    raft_purged: Mutex<Option<RaftLogId>>,
    trim_floor: AtomicU64,
    last_timestamp_ms: Mutex<u64>,
    /// fsyncs owed to openraft for appends already written (see `flush.rs`).
    pub(crate) flush: FlushQueue,
    /// The newest entries, for replication to read without the disk.
    tail: Mutex<TailCache>,
    /// Told the duration of every fsync (set once, before the group starts).
    fsync_observer: Option<FsyncObserver>,
    /// When the commit point was last written to node metadata.
    pub(crate) committed_written: Throttle,
    /// When the state machine's applied state was last written to node metadata.
    pub(crate) applied_written: Throttle,
}

/// How often a busy group writes its commit point and applied state to node metadata.
/// Both are hints that may lag after a crash (openraft re-applies committed entries
/// above the applied state, and learns the commit point again from the leader), so
/// writing them for every entry bought nothing: in a profile at 2,000 records/s those
/// sled writes, on the blocking pool and sled's I/O threads, were a third of the
/// node's CPU. A membership change is written at once, and a snapshot writes the
/// applied state with its own meta (so the applied state on disk never falls below a
/// purge point).
pub(crate) const META_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Spaces out writes of one value: `due` says whether one may go now.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Mutex<Option<std::time::Instant>>,
}

impl Throttle {
    /// True (and counts as written now) when nothing was written for `interval`.
    pub(crate) fn due(&self, interval: std::time::Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|l| now.saturating_duration_since(l) < interval) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Counts as written now.
    pub(crate) fn mark(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
    }
}

impl GroupStorage {
    /// Loads the logical purge point and the last entry's timestamp.
    pub fn open(
        group: GroupId,
        log: Arc<SegmentLog>,
        meta: Arc<NodeMeta>,
    ) -> Result<GroupStorage, Error> {
        let raft_purged = match meta.group_get(group, RAFT_PURGED_KEY)? {
            Some(bytes) => codec::decode_log_id(&bytes)?,
            None => None,
        };
        let storage = GroupStorage {
            group,
            log,
            meta,
            raft_purged: Mutex::new(raft_purged),
            trim_floor: AtomicU64::new(0),
            last_timestamp_ms: Mutex::new(0),
            flush: FlushQueue::default(),
            tail: Mutex::new(TailCache::default()),
            fsync_observer: None,
            committed_written: Throttle::default(),
            applied_written: Throttle::default(),
        };
        storage.reload_last_timestamp()?;
        Ok(storage)
    }

    pub fn log(&self) -> &Arc<SegmentLog> {
        &self.log
    }

    /// Allows purges to delete entries up to `index` from disk (retention).
    pub fn set_trim_floor(&self, index: LogIndex) {
        self.trim_floor.fetch_max(index.0, Ordering::SeqCst);
    }

    fn log_err(&self, source: runnel_log::LogError) -> Error {
        Error::Log {
            group: self.group,
            source,
        }
    }

    pub(crate) fn raft_purged(&self) -> Option<RaftLogId> {
        *self
            .raft_purged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The purge point openraft sees: the later of the logical and physical ones.
    fn last_purged(&self) -> Option<RaftLogId> {
        let physical = self.log.purged().map(to_raft_log_id);
        self.raft_purged().max(physical)
    }

    pub(crate) fn reload_last_timestamp(&self) -> Result<(), Error> {
        let ts = match self.log.last_entry() {
            Some(last) => {
                let entries = self
                    .log
                    .read(last.index, last.index.next(), 1)
                    .map_err(|e| self.log_err(e))?;
                entries.first().map_or(0, |e| e.timestamp_ms)
            }
            None => 0,
        };
        *self
            .last_timestamp_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ts;
        Ok(())
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, TailCache> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the in-memory tail: the log's tail changed other than by openraft's
    /// append or truncation (a snapshot was installed).
    pub(crate) fn forget_tail(&self) {
        self.tail().clear();
    }

    /// Raft entries `[from, to)` from the tail cache, if it holds them all and still
    /// ends at the log's last entry.
    fn cached_entries(&self, from: u64, to: u64) -> Option<Vec<RaftEntry>> {
        let floor = self.last_purged().map_or(0, |p| p.index + 1);
        let last = self.log.last_entry().map(|l| to_raft_index(l.index));
        let tail = self.tail();
        if last.is_none() || tail.last_index() != last {
            return None;
        }
        tail.get(from.max(floor), to)
    }

    /// Segment-log entries for openraft entries, with running-maximum timestamps.
    fn to_log_entries(&self, entries: &[RaftEntry]) -> Vec<Entry> {
        let mut ts = self
            .last_timestamp_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .map(|e| {
                if let Some(t) = codec::payload_timestamp(&e.payload) {
                    *ts = (*ts).max(t);
                }
                Entry {
                    index: to_log_index(e.log_id.index),
                    term: Term(e.log_id.leader_id.term),
                    timestamp_ms: *ts,
                    payload: codec::encode_payload(&e.payload),
                }
            })
            .collect()
    }

    /// Writes `entries` (not yet durable: [`FlushQueue`] fsyncs them).
    fn append_write(&self, entries: &[Entry]) -> Result<(), Error> {
        self.skip_gap(entries)?;
        self.log.append(entries).map_err(|e| self.log_err(e))
    }

    /// Counts this group's cached committed entries against `budget`, the node's (set
    /// before the group starts; by default each storage has a budget of its own).
    pub(crate) fn with_tail_budget(self, budget: Arc<TailBudget>) -> GroupStorage {
        *self.tail() = TailCache::new(budget);
        self
    }

    /// Reports every later fsync's duration to `observer`.
    pub fn with_fsync_observer(mut self, observer: Option<FsyncObserver>) -> GroupStorage {
        self.fsync_observer = observer;
        self
    }

    /// Makes every entry written so far durable: one fdatasync.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let result = self.log.sync().map_err(|e| self.log_err(e));
        if let Some(observer) = &self.fsync_observer {
            observer.observe(started.elapsed());
        }
        result
    }

    /// A first append that does not start right after the purge point, on a log with no
    /// entries: move the purge point to just before it. openraft itself never does this
    /// (a new replica starts at index 0 or from a snapshot); its storage suite does.
    fn skip_gap(&self, entries: &[Entry]) -> Result<(), Error> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if self.log.last_entry().is_some() {
            return Ok(());
        }
        let expected = self.log.purged().map_or(LogIndex(1), |p| p.index.next());
        if let Some(before) = first.index.prev()
            && first.index > expected
        {
            self.log
                .purge_prefix(EntryId {
                    index: before,
                    term: first.term,
                })
                .map_err(|e| self.log_err(e))?;
        }
        Ok(())
    }

    /// Entries openraft may read in Raft indices `[from, to)`: above the logical purge
    /// point.
    pub(crate) fn read_raft_entries(&self, from: u64, to: u64) -> Result<Vec<RaftEntry>, Error> {
        let floor = self.last_purged().map_or(0, |p| p.index + 1);
        let mut next = to_log_index(from.max(floor));
        let to = LogIndex(to.saturating_add(1));
        let mut out = Vec::new();
        while next < to {
            let chunk = self
                .log
                .read(next, to, READ_CHUNK_BYTES)
                .map_err(|e| self.log_err(e))?;
            let Some(last) = chunk.last() else { break };
            next = last.index.next();
            for e in chunk {
                let payload = codec::decode_payload(&e.payload)?;
                out.push(codec::entry(e.term.0, to_raft_index(e.index), payload));
            }
        }
        Ok(out)
    }

    fn truncate_after(&self, last: Option<RaftLogId>) -> Result<(), Error> {
        let from = to_log_index(last.map_or(0, |l| l.index + 1));
        let has_tail = self.log.last_entry().is_some_and(|l| l.index >= from);
        let planted = runnel_types::planted::enabled(runnel_types::planted::Bug::SkipTruncate);
        self.tail().truncate_after(last.map(|l| l.index));
        if has_tail && !planted {
            self.log
                .truncate_suffix(from)
                .map_err(|e| self.log_err(e))?;
            self.reload_last_timestamp()?;
        }
        Ok(())
    }

    /// openraft's purge: logical always, physical up to the trim floor, and past the
    /// last entry when openraft purges beyond it (so that the next append is
    /// contiguous).
    fn purge(&self, upto: RaftLogId) -> Result<(), Error> {
        self.meta.group_put(
            self.group,
            RAFT_PURGED_KEY,
            &codec::encode_log_id(Some(&upto)),
        )?;
        {
            let mut purged = self
                .raft_purged
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *purged = (*purged).max(Some(upto));
        }
        let physical = self.log.purged().map_or(0, |p| p.index.0);
        let last = self.log.last_entry().map_or(0, |l| l.index.0);
        let upto_index = to_log_index(upto.index).0;
        let beyond_last = upto_index > last;
        if beyond_last {
            self.tail().clear();
        } else {
            self.tail().evict_upto(upto.index);
        }
        let target = if beyond_last {
            to_entry_id(&upto)
        } else {
            let index = upto_index.min(self.trim_floor.load(Ordering::SeqCst));
            if index <= physical {
                return Ok(());
            }
            let term = self
                .log
                .term_of(LogIndex(index))
                .map_err(|e| self.log_err(e))?;
            let Some(term) = term else {
                return Err(Error::Corrupt {
                    what: "segment log",
                    detail: format!(
                        "entry {index} to purge up to is missing in group {}",
                        self.group
                    ),
                });
            };
            EntryId {
                index: LogIndex(index),
                term,
            }
        };
        // The metadata write above must not be lost while the files are gone.
        self.meta.flush()?;
        self.log.purge_prefix(target).map_err(|e| self.log_err(e))?;
        if beyond_last {
            self.reload_last_timestamp()?;
        }
        Ok(())
    }
}

/// The `RaftLogStorage` of one group; also its `RaftLogReader` (cheap clones).
#[derive(Clone, Debug)]
pub struct LogStore {
    storage: Arc<GroupStorage>,
}

impl LogStore {
    pub fn new(storage: Arc<GroupStorage>) -> LogStore {
        LogStore { storage }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&GroupStorage) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, io::Error> {
        let storage = self.storage.clone();
        blocking(move || f(&storage)).await?.map_err(Error::into_io)
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, io::Error> {
        let (from, to) = bounds(&range);
        if let Some(entries) = self.storage.cached_entries(from, to) {
            return Ok(entries);
        }
        self.run(move |s| s.read_raft_entries(from, to)).await
    }

    async fn read_vote(&mut self) -> Result<Option<RaftVote>, io::Error> {
        self.run(|s| match s.meta.group_get(s.group, GroupKey::Vote)? {
            Some(bytes) => codec::decode_vote(&bytes).map(Some),
            None => Ok(None),
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let s = &self.storage;
        let last_purged_log_id = s.last_purged();
        let last = s.log.last_entry().map(to_raft_log_id);
        let last_log_id = last.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &RaftVote) -> Result<(), io::Error> {
        let bytes = codec::encode_vote(vote);
        // A vote is a promise: it is on disk before the node answers.
        self.run(move |s| Ok(s.meta.group_put_durable(s.group, GroupKey::Vote, &bytes)?))
            .await
    }

    async fn save_committed(&mut self, committed: Option<RaftLogId>) -> Result<(), io::Error> {
        if let Some(c) = &committed {
            self.storage
                .tail()
                .committed_upto(c.index, crate::tail_cache::COMMITTED_KEEP_BYTES);
        }
        // Not flushed, and at most every META_WRITE_INTERVAL: a committed log id lost or
        // stale after a crash is learnt again from the leader.
        if !self.storage.committed_written.due(META_WRITE_INTERVAL) {
            return Ok(());
        }
        let bytes = codec::encode_log_id(committed.as_ref());
        self.run(move |s| Ok(s.meta.group_put(s.group, GroupKey::Committed, &bytes)?))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<RaftLogId>, io::Error> {
        self.run(|s| match s.meta.group_get(s.group, GroupKey::Committed)? {
            Some(bytes) => codec::decode_log_id(&bytes),
            None => Ok(None),
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let raft_entries: Vec<RaftEntry> = entries.into_iter().collect();
        let entries = self.storage.to_log_entries(&raft_entries);
        // Written here; `IOFlushed` fires only once a later fsync covers the entries,
        // while openraft goes on with the next append (see `flush.rs`).
        if let Err(e) = self.run(move |s| s.append_write(&entries)).await {
            callback.io_completed(Err(io::Error::other(e.to_string())));
            return Err(e);
        }
        self.storage.tail().push(&raft_entries);
        if runnel_types::planted::enabled(runnel_types::planted::Bug::AckBeforeSync)
            && !self.storage.group.is_meta()
        {
            // PLANTED BUG (simulation only): a shard's entries acknowledged, never
            // synced. (Not the meta group's: losing its committed entries too, a seed
            // fails through liveness and placement instead of the durability checks;
            // SIMULATION.md.)
            callback.io_completed(Ok(()));
            return Ok(());
        }
        FlushQueue::push(&self.storage, callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<RaftLogId>) -> Result<(), io::Error> {
        // Outstanding flushes first, so that none fires for entries cut here.
        self.storage.flush.drain(&self.storage).await;
        self.run(move |s| s.truncate_after(last_log_id)).await
    }

    async fn purge(&mut self, log_id: RaftLogId) -> Result<(), io::Error> {
        self.storage.flush.drain(&self.storage).await;
        self.run(move |s| s.purge(log_id)).await
    }
}
