//! Snapshots. A shard's snapshot is its retained log: the entries after the trim point
//! up to the snapshot's last log id, not a second copy of the data. The leader reads
//! them lazily from its segment log while streaming them in chunks; the receiver
//! gathers them and [`install`] writes them into its own log, so that a replica behind
//! the trim point, or a brand new one, ends with the same entries as the leader.
//!
//! Left for later: the receiver holds the streamed entries in memory until openraft
//! installs them (bounded by the leader's retained log). Staging them in a side
//! directory on disk would bound memory for very large shards.

use std::sync::Arc;

use runnel_log::{Entry, EntryId, SegmentLog};
use runnel_types::{GroupId, LogIndex};

use crate::error::Error;

/// Bytes of entries per streamed chunk (and per read from the segment log).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// openraft's `SnapshotData` for Runnel groups.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    /// The entries after the log's purge point, up to `last`, read when streamed.
    Log {
        log: Arc<SegmentLog>,
        last: LogIndex,
    },
    /// Entries received from a leader, after `trimmed`.
    Received {
        trimmed: Option<EntryId>,
        entries: Vec<Entry>,
    },
}

impl ShardSnapshot {
    pub fn from_log(log: Arc<SegmentLog>, last: LogIndex) -> ShardSnapshot {
        ShardSnapshot {
            source: Source::Log { log, last },
        }
    }

    pub fn received(trimmed: Option<EntryId>, entries: Vec<Entry>) -> ShardSnapshot {
        ShardSnapshot {
            source: Source::Received { trimmed, entries },
        }
    }

    /// A reader of the snapshot's entries, chunk by chunk.
    pub fn reader(&self, group: GroupId) -> SnapshotReader {
        let (trimmed, next, end) = match &self.source {
            Source::Received { trimmed, .. } => (*trimmed, LogIndex(0), LogIndex(0)),
            Source::Log { log, last } => {
                let trimmed = log.purged();
                let mut next = trimmed.map_or(LogIndex(1), |t| t.index.next());
                if let Some(first) = log.first_index() {
                    next = next.max(first);
                }
                // Stop at the log's end: in operation the applied point never passes
                // it; a state machine driven without a log (openraft's storage suite)
                // has nothing to send.
                let end = log.last_entry().map_or(LogIndex(0), |l| l.index).min(*last);
                (trimmed, next, end)
            }
        };
        SnapshotReader {
            source: self.source.clone(),
            group,
            trimmed,
            next,
            end,
            pos: 0,
        }
    }
}

/// Reads a snapshot's entries in chunks of about [`SNAPSHOT_CHUNK_BYTES`], in index
/// order. Synchronous (disk reads): call it where blocking is allowed.
pub struct SnapshotReader {
    source: Source,
    group: GroupId,
    trimmed: Option<EntryId>,
    next: LogIndex,
    end: LogIndex,
    pos: usize,
}

impl SnapshotReader {
    /// The entry just before the first one the snapshot carries (the trim point).
    pub fn trimmed(&self) -> Option<EntryId> {
        self.trimmed
    }

    /// The next chunk, `None` at the end. A gap means the source log was trimmed
    /// meanwhile: the snapshot is refused rather than sent with a hole.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Entry>>, Error> {
        match &self.source {
            Source::Received { entries, .. } => {
                if self.pos >= entries.len() {
                    return Ok(None);
                }
                let end = (self.pos + chunk_len(entries)).min(entries.len());
                let chunk = entries[self.pos..end].to_vec();
                self.pos = end;
                Ok(Some(chunk))
            }
            Source::Log { log, .. } => {
                if self.next > self.end {
                    return Ok(None);
                }
                let group = self.group;
                let chunk = log
                    .read(self.next, self.end.next(), SNAPSHOT_CHUNK_BYTES)
                    .map_err(|source| Error::Log { group, source })?;
                match chunk.first() {
                    Some(e) if e.index == self.next => {}
                    _ => {
                        return Err(Error::Corrupt {
                            what: "snapshot source",
                            detail: format!(
                                "entry {} of group {group} was trimmed while being sent",
                                self.next
                            ),
                        });
                    }
                }
                self.next = chunk.last().map_or(self.next, |e| e.index.next());
                Ok(Some(chunk))
            }
        }
    }
}

fn chunk_len(entries: &[Entry]) -> usize {
    let total: usize = entries.iter().map(|e| e.payload.len()).sum();
    let avg = total / entries.len().max(1);
    (SNAPSHOT_CHUNK_BYTES / avg.max(1)).max(1)
}

/// Makes `dst` hold the snapshot's entries up to `last`, trimmed below them.
///
/// If `dst` already holds `last` with the same term, its entries up to `last` are the
/// leader's (log matching) and nothing is written. Otherwise the local log is replaced:
/// every entry goes, the purge point moves to the snapshot's trim point, the entries
/// are appended and fsynced. An empty snapshot (the leader trimmed up to `last`) leaves
/// the log purged up to `last`.
pub fn install(
    group: GroupId,
    dst: &SegmentLog,
    snapshot: &ShardSnapshot,
    last: EntryId,
) -> Result<(), Error> {
    let log_err = |source| Error::Log { group, source };
    if dst.term_of(last.index).map_err(log_err)? == Some(last.term) {
        return Ok(());
    }
    if dst.purged().is_some_and(|p| p.index >= last.index) {
        return Ok(());
    }
    if let Some(first) = dst.first_index() {
        dst.truncate_suffix(first).map_err(log_err)?;
    }
    let mut reader = snapshot.reader(group);
    if let Some(t) = reader.trimmed()
        && dst.purged().is_none_or(|p| p.index < t.index)
    {
        dst.purge_prefix(t).map_err(log_err)?;
    }
    while let Some(entries) = reader.next_chunk()? {
        let floor = dst.purged().map_or(LogIndex(0), |p| p.index);
        let keep: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > floor && e.index <= last.index)
            .collect();
        if !keep.is_empty() {
            dst.append(&keep).map_err(log_err)?;
        }
    }
    dst.sync().map_err(log_err)?;
    match dst.last_entry() {
        Some(l) if l.index >= last.index => Ok(()),
        Some(l) => Err(Error::Corrupt {
            what: "snapshot",
            detail: format!(
                "group {group}: entries end at {} before the snapshot's last index {}",
                l.index, last.index
            ),
        }),
        None => dst.purge_prefix(last).map_err(log_err),
    }
}
