//! Snapshots. A shard's snapshot is its retained log: the entries after the trim point
//! up to the snapshot's last log id, not a second copy of the data. The leader reads
//! them lazily from its segment log while streaming them in chunks
//! (`network/client.rs`).
//!
//! **Receiving.** The receiver stages the entries on disk as they arrive ([`Staging`]):
//! a segment log of its own in `<data_dir>/snapshots/<group, 20 digits>.<n>/` (over the
//! node's [`Disk`], so the simulated disk covers it too), one append per chunk, fsynced
//! when the stream ends and checked to reach the snapshot's last index before openraft
//! is handed the snapshot. Memory is one chunk, whatever the shard's size.
//!
//! **Installing.** `install` copies the staged entries into the group's log, chunk by
//! chunk, so that a replica behind the trim point, or a brand new one, ends with the
//! same entries as the leader. The segment log cannot swap its contents in one step,
//! so the install is made restartable instead: before the first change to the group's
//! log, the snapshot's meta and the staging directory's name go durably into node
//! metadata (`INSTALLING_KEY`), and the staged copy is kept; the marker is cleared by
//! the same atomic metadata write that records the installed snapshot. A crash or an
//! I/O error in between leaves the marker, and the group's next open
//! (`finish_interrupted`) installs again from the staged copy. So a failed install
//! leaves the old log untouched (it failed before the marker: the stream was short, or
//! staging failed) or is finished on the next open; the group never runs on a half
//! replaced log.
//!
//! **Leftovers.** A staging directory is deleted when its snapshot is dropped (the
//! stream was cut off, openraft refused it, or it was installed). What a crash leaves
//! is deleted when the group opens again ([`StagingArea::clean`]), and when the group
//! is removed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use runnel_log::{Disk, Entry, EntryId, LogConfig, SegmentLog};
use runnel_nodemeta::{GroupKey, NodeMeta};
use runnel_types::{GroupId, LogIndex};
use tracing::{info, warn};

use crate::codec;
use crate::error::Error;
use crate::log_store::to_entry_id;
use crate::types::{RaftSnapshotMeta, RaftStoredMembership};

/// Bytes of entries per streamed chunk (and per read from the segment log).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// The node-metadata marker of an install in progress: the staging directory's name
/// and the snapshot's meta. Empty (or absent) when no install is in progress.
pub(crate) const INSTALLING_KEY: GroupKey = GroupKey::Custom("snapshot_installing");

/// Longest staging directory name kept in the marker (`<20 digits>.<u64>` is 41).
const STAGING_NAME_BYTES_MAX: usize = 64;

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
    /// Entries received from a leader, staged on disk.
    Staged(Arc<Staged>),
}

impl ShardSnapshot {
    pub fn from_log(log: Arc<SegmentLog>, last: LogIndex) -> ShardSnapshot {
        ShardSnapshot {
            source: Source::Log { log, last },
        }
    }

    /// A reader of the snapshot's entries, chunk by chunk.
    pub fn reader(&self, group: GroupId) -> SnapshotReader {
        let (log, last) = match &self.source {
            Source::Log { log, last } => (log.as_ref(), *last),
            Source::Staged(s) => (&s.log, LogIndex(u64::MAX)),
        };
        let trimmed = log.purged();
        let mut next = trimmed.map_or(LogIndex(1), |t| t.index.next());
        if let Some(first) = log.first_index() {
            next = next.max(first);
        }
        // Stop at the log's end: in operation the applied point never passes it; a
        // state machine driven without a log (openraft's storage suite) has nothing to
        // send.
        let end = log.last_entry().map_or(LogIndex(0), |l| l.index).min(last);
        SnapshotReader {
            source: self.source.clone(),
            group,
            trimmed,
            next,
            end,
        }
    }

    fn staged(&self) -> Option<&Arc<Staged>> {
        match &self.source {
            Source::Staged(s) => Some(s),
            Source::Log { .. } => None,
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
}

impl SnapshotReader {
    /// The entry just before the first one the snapshot carries (the trim point).
    pub fn trimmed(&self) -> Option<EntryId> {
        self.trimmed
    }

    /// Whether the entries (or the trim point) reach `index`.
    fn reaches(&self, index: LogIndex) -> bool {
        self.end >= index || self.trimmed.is_some_and(|t| t.index >= index)
    }

    /// The next chunk, `None` at the end. A gap means the source log was trimmed
    /// meanwhile: the snapshot is refused rather than sent with a hole.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Entry>>, Error> {
        if self.next > self.end {
            return Ok(None);
        }
        let log = match &self.source {
            Source::Log { log, .. } => log.as_ref(),
            Source::Staged(s) => &s.log,
        };
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
                        "entry {} of group {group} was trimmed while being read",
                        self.next
                    ),
                });
            }
        }
        self.next = chunk.last().map_or(self.next, |e| e.index.next());
        Ok(Some(chunk))
    }
}

/// Where a node stages the snapshots it receives: one directory per stream under
/// `<data_dir>/snapshots/`, named `<group, 20 digits>.<n>`.
#[derive(Clone, Debug)]
pub struct StagingArea {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    log_config: LogConfig,
    /// Numbers the next stream's directory; never reused while the process runs, and
    /// a group's directories from before a restart are gone once it opens.
    next: Arc<AtomicU64>,
}

impl StagingArea {
    pub fn new(disk: Arc<dyn Disk>, dir: impl Into<PathBuf>, log_config: LogConfig) -> Self {
        StagingArea {
            disk,
            dir: dir.into(),
            log_config,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn io_err(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.dir.display().to_string(),
            source,
        }
    }

    fn prefix(group: GroupId) -> String {
        format!("{:020}.", group.0)
    }

    /// Starts staging one received stream: an empty segment log purged up to the
    /// snapshot's trim point, so that its first entry must be the one after it.
    /// Synchronous (disk I/O).
    pub fn begin(&self, group: GroupId, trimmed: Option<EntryId>) -> Result<Staging, Error> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}{n}", Self::prefix(group));
        let dir = self.dir.join(&name);
        if self.disk.exists(&dir) {
            self.disk.remove_dir_all(&dir).map_err(|e| self.io_err(e))?;
        }
        let staged = self.open_staged(group, name)?;
        if let Some(t) = trimmed {
            let group = staged.group;
            staged
                .log
                .purge_prefix(t)
                .map_err(|source| Error::Log { group, source })?;
        }
        Ok(Staging {
            staged: Arc::new(staged),
        })
    }

    fn open_staged(&self, group: GroupId, name: String) -> Result<Staged, Error> {
        let dir = self.dir.join(&name);
        let log = SegmentLog::open(self.disk.clone(), dir.clone(), self.log_config.clone())
            .map_err(|source| Error::Log { group, source })?;
        Ok(Staged {
            group,
            disk: self.disk.clone(),
            name,
            dir,
            log,
            keep: AtomicBool::new(false),
        })
    }

    /// Deletes every staging directory of `group`: what a crash or a cut-off stream
    /// left. Call while no stream for the group is being received (when it opens or
    /// after it is removed). Synchronous (disk I/O).
    pub fn clean(&self, group: GroupId) -> Result<(), Error> {
        if !self.disk.exists(&self.dir) {
            return Ok(());
        }
        let prefix = Self::prefix(group);
        let names = self.disk.list_dir(&self.dir).map_err(|e| self.io_err(e))?;
        let mut removed = 0;
        for name in names.iter().filter(|n| n.starts_with(&prefix)) {
            self.disk
                .remove_dir_all(&self.dir.join(name))
                .map_err(|e| self.io_err(e))?;
            removed += 1;
        }
        if removed > 0 {
            self.disk.sync_dir(&self.dir).map_err(|e| self.io_err(e))?;
            info!(group_id = %group, removed, "removed snapshot staging leftovers");
        }
        Ok(())
    }

    /// The names of the staging directories present (for tests and operators).
    pub fn list(&self) -> Result<Vec<String>, Error> {
        if !self.disk.exists(&self.dir) {
            return Ok(Vec::new());
        }
        let mut names = self.disk.list_dir(&self.dir).map_err(|e| self.io_err(e))?;
        names.sort();
        Ok(names)
    }
}

/// One received snapshot's staged entries. Its directory goes with it when dropped,
/// unless an install from it began and did not finish (then the group's next open
/// needs it).
#[derive(Debug)]
struct Staged {
    group: GroupId,
    disk: Arc<dyn Disk>,
    /// The directory's name under the staging area, as the install marker names it.
    name: String,
    dir: PathBuf,
    log: SegmentLog,
    keep: AtomicBool,
}

impl Drop for Staged {
    /// A directory removal, small enough to run wherever the snapshot is dropped.
    fn drop(&mut self) {
        if self.keep.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.disk.remove_dir_all(&self.dir) {
            warn!(group_id = %self.group, dir = %self.dir.display(), error = %e,
                "removing a snapshot staging directory failed; the group's next open retries");
        }
    }
}

/// A snapshot being received: entries are appended as chunks arrive.
pub struct Staging {
    staged: Arc<Staged>,
}

impl Staging {
    /// Writes one chunk (not yet durable). Entries must run on from the previous ones
    /// (from one past the trim point for the first chunk). Synchronous (disk I/O).
    pub fn append(&self, entries: &[Entry]) -> Result<(), Error> {
        let group = self.staged.group;
        self.staged
            .log
            .append(entries)
            .map_err(|source| Error::Log { group, source })
    }

    /// Ends the stream: makes the staged entries durable and checks that they reach
    /// `last`, the snapshot's last entry. The snapshot openraft may then install.
    /// Synchronous (disk I/O).
    pub fn finish(self, last: Option<EntryId>) -> Result<ShardSnapshot, Error> {
        let s = &self.staged;
        let group = s.group;
        s.log
            .sync()
            .map_err(|source| Error::Log { group, source })?;
        let io = |source| Error::Io {
            path: s.dir.display().to_string(),
            source,
        };
        s.disk.sync_dir(&s.dir).map_err(io)?;
        if let Some(parent) = s.dir.parent() {
            s.disk.sync_dir(parent).map_err(io)?;
        }
        let snapshot = ShardSnapshot {
            source: Source::Staged(self.staged),
        };
        if let Some(last) = last {
            check_complete(group, &snapshot, last)?;
        }
        Ok(snapshot)
    }
}

/// Refuses a received snapshot whose entries stop short of its last entry.
fn check_complete(group: GroupId, snapshot: &ShardSnapshot, last: EntryId) -> Result<(), Error> {
    let reader = snapshot.reader(group);
    if reader.reaches(last.index) {
        return Ok(());
    }
    Err(Error::Corrupt {
        what: "snapshot",
        detail: format!(
            "group {group}: the entries received end at {} before the snapshot's last \
             index {}",
            reader.end, last.index
        ),
    })
}

/// Installs `snapshot` into the group's log `dst` and records it in node metadata
/// (snapshot meta, applied log id and membership, in one write, flushed). Restartable
/// (see the module doc): a received snapshot's install is marked in node metadata
/// before `dst` changes, and `finish_interrupted` completes it after a crash or an
/// error. Synchronous (disk I/O).
pub(crate) fn install(
    group: GroupId,
    dst: &SegmentLog,
    meta: &NodeMeta,
    snapshot: &ShardSnapshot,
    snapshot_meta: &RaftSnapshotMeta,
) -> Result<(), Error> {
    if let Some(last) = &snapshot_meta.last_log_id {
        let last = to_entry_id(last);
        if needs_replacing(group, dst, last)? {
            if let Some(staged) = snapshot.staged() {
                check_complete(group, snapshot, last)?;
                staged.keep.store(true, Ordering::SeqCst);
                let marker = encode_marker(&staged.name, snapshot_meta)?;
                meta.group_put_durable(group, INSTALLING_KEY, &marker)?;
            }
            replace_log(group, dst, snapshot, last)?;
        }
    }
    record(group, meta, snapshot_meta)?;
    if let Some(staged) = snapshot.staged() {
        staged.keep.store(false, Ordering::SeqCst);
    }
    Ok(())
}

/// Whether `dst` must be replaced to hold the snapshot's entries up to `last`. Not when
/// it already holds `last` with the same term (its entries up to `last` are then the
/// leader's, by log matching), nor when it is purged past `last`.
fn needs_replacing(group: GroupId, dst: &SegmentLog, last: EntryId) -> Result<bool, Error> {
    let log_err = |source| Error::Log { group, source };
    if dst.term_of(last.index).map_err(log_err)? == Some(last.term) {
        return Ok(false);
    }
    Ok(!dst.purged().is_some_and(|p| p.index >= last.index))
}

/// Replaces `dst`'s entries with the snapshot's up to `last`: every entry goes, the
/// purge point moves to the snapshot's trim point, the entries are appended and
/// fsynced. An empty snapshot (the leader trimmed up to `last`) leaves the log purged
/// up to `last`.
fn replace_log(
    group: GroupId,
    dst: &SegmentLog,
    snapshot: &ShardSnapshot,
    last: EntryId,
) -> Result<(), Error> {
    let log_err = |source| Error::Log { group, source };
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

/// Records an installed snapshot in node metadata: its meta, the applied log id and
/// membership it implies, and no install in progress; one atomic write, flushed.
fn record(group: GroupId, meta: &NodeMeta, snapshot_meta: &RaftSnapshotMeta) -> Result<(), Error> {
    let snapshot = codec::encode_snapshot_meta(snapshot_meta);
    let applied = codec::encode_log_id(snapshot_meta.last_log_id.as_ref());
    let membership: &RaftStoredMembership = &snapshot_meta.last_membership;
    let membership = codec::encode_stored_membership(membership);
    meta.group_put_all(
        group,
        &[
            (GroupKey::Snapshot, &snapshot),
            (GroupKey::Applied, &applied),
            (GroupKey::Membership, &membership),
            (INSTALLING_KEY, b""),
        ],
    )?;
    Ok(meta.flush()?)
}

/// Opening a group: finishes a snapshot install that a crash or an error interrupted
/// (from its staged copy), then deletes the group's staging leftovers. Runs before the
/// group's state machine loads its state, which the finished install updates.
/// Synchronous (disk I/O).
pub(crate) fn finish_interrupted(
    group: GroupId,
    dst: &SegmentLog,
    meta: &NodeMeta,
    staging: &StagingArea,
) -> Result<(), Error> {
    let marker = meta.group_get(group, INSTALLING_KEY)?.unwrap_or_default();
    if !marker.is_empty() {
        let (name, snapshot_meta) = decode_marker(&marker)?;
        if !staging.disk.exists(&staging.dir.join(&name)) {
            return Err(Error::Corrupt {
                what: "snapshot install marker",
                detail: format!(
                    "group {group}: the staged snapshot {name} it names is missing from {}",
                    staging.dir.display()
                ),
            });
        }
        let snapshot = ShardSnapshot {
            source: Source::Staged(Arc::new(staging.open_staged(group, name)?)),
        };
        install(group, dst, meta, &snapshot, &snapshot_meta)?;
        info!(group_id = %group, "finished an interrupted snapshot install");
    }
    staging.clean(group)
}

fn encode_marker(name: &str, snapshot_meta: &RaftSnapshotMeta) -> Result<Vec<u8>, Error> {
    let len = u8::try_from(name.len())
        .ok()
        .filter(|l| usize::from(*l) <= STAGING_NAME_BYTES_MAX)
        .ok_or_else(|| Error::Corrupt {
            what: "snapshot install marker",
            detail: format!("staging directory name {name:?} is too long"),
        })?;
    let mut out = vec![len];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&codec::encode_snapshot_meta(snapshot_meta));
    Ok(out)
}

fn decode_marker(bytes: &[u8]) -> Result<(String, RaftSnapshotMeta), Error> {
    let corrupt = |detail: &str| Error::Corrupt {
        what: "snapshot install marker",
        detail: detail.to_string(),
    };
    let (&len, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    let len = usize::from(len);
    if len > STAGING_NAME_BYTES_MAX || rest.len() < len {
        return Err(corrupt("the staging directory name is cut short"));
    }
    let (name, meta) = rest.split_at(len);
    let name = std::str::from_utf8(name)
        .map_err(|_| corrupt("the staging directory name is not UTF-8"))?;
    if name.contains('/') || name.starts_with('.') {
        return Err(corrupt("the staging directory name is not a plain name"));
    }
    Ok((name.to_string(), codec::decode_snapshot_meta(meta)?))
}

#[cfg(test)]
mod tests;
