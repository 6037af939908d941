//! Removing entries: a suffix (Raft conflict) or a prefix (snapshot, retention).
//!
//! Both are durable when they return. A suffix is removed back to front: later
//! segments are deleted (and the directory synced) before the segment holding `from` is
//! cut, so a crash in between leaves a log that is merely not yet truncated, never one
//! with a gap. A prefix is removed by persisting the purge point first and deleting whole
//! segments after; recovery finishes an interrupted deletion.

use runnel_types::LogIndex;

use crate::entry::EntryId;
use crate::error::LogError;
use crate::log::{SegmentLog, State, poison_on_err};
use crate::purge_file;
use crate::segment::{Segment, Step};

/// Bytes per read while looking for the cut point.
const CUT_SCAN_BYTES: usize = 64 * 1024;

impl SegmentLog {
    /// Removes every entry at or after `from`. Entries already purged are out of reach:
    /// a `from` at or below the purge point empties the log down to it.
    pub fn truncate_suffix(&self, from: LogIndex) -> Result<(), LogError> {
        let mut st = self.write_state()?;
        let from = from.max(st.first_allowed());
        if from >= st.next_index() {
            return Ok(());
        }
        let r = self.truncate_locked(&mut st, from);
        poison_on_err(&mut st, r)
    }

    /// Removes every entry up to and including `up_to.index` and persists `up_to` as the
    /// purge point. Past the last entry, the log becomes empty and the next append must
    /// be `up_to.index + 1`. A purge point at or below the current one changes nothing.
    pub fn purge_prefix(&self, up_to: EntryId) -> Result<(), LogError> {
        let mut st = self.write_state()?;
        if st.purged.is_some_and(|p| p.index >= up_to.index) {
            return Ok(());
        }
        let r = self.purge_locked(&mut st, up_to);
        poison_on_err(&mut st, r)
    }

    fn truncate_locked(&self, st: &mut State, from: LogIndex) -> Result<(), LogError> {
        let mut removed = false;
        while let Some(seg) = st.segments.pop_if(|s| s.base >= from) {
            self.remove_segment_file(&seg)?;
            removed = true;
        }
        if removed {
            self.sync_dir()?;
        }
        if let Some(seg) = st.segments.last_mut().filter(|s| s.next_index > from) {
            cut_segment(seg, from)?;
        }
        st.terms.truncate(from);
        Ok(())
    }

    fn purge_locked(&self, st: &mut State, up_to: EntryId) -> Result<(), LogError> {
        purge_file::write(self.disk.as_ref(), &self.dir, up_to)?;
        st.purged = Some(up_to);
        let first_visible = up_to.index.next();
        let dead = st
            .segments
            .iter()
            .take_while(|s| s.next_index <= first_visible)
            .count();
        for seg in st.segments.drain(..dead) {
            self.remove_segment_file(&seg)?;
        }
        if dead > 0 {
            self.sync_dir()?;
        }
        st.terms.purge_before(first_visible);
        Ok(())
    }

    fn remove_segment_file(&self, seg: &Segment) -> Result<(), LogError> {
        self.disk
            .remove_file(&seg.path)
            .map_err(|e| LogError::io(&seg.path, "remove", e))
    }

    fn sync_dir(&self) -> Result<(), LogError> {
        self.disk
            .sync_dir(&self.dir)
            .map_err(|e| LogError::io(&self.dir, "fsync dir", e))
    }
}

/// Cuts `seg` just before entry `from` (which it holds), durably.
fn cut_segment(seg: &mut Segment, from: LogIndex) -> Result<(), LogError> {
    let point = seg
        .index
        .floor(from)
        .expect("a segment's first frame is a point");
    let mut max_ts = point.max_ts_before;
    let mut cursor = seg.cursor(point.offset, seg.len, CUT_SCAN_BYTES);
    let offset = loop {
        match cursor.next_frame()? {
            Step::Frame(f) if f.header.index == from => break f.offset,
            Step::Frame(f) => max_ts = max_ts.max(f.header.timestamp_ms),
            Step::Bad { offset, error } => {
                let reason = format!("{error} while looking for entry {from} to truncate");
                return Err(LogError::corruption(&seg.path, offset, reason));
            }
            Step::End => {
                let reason = format!("entry {from} not found where the index says it is");
                return Err(LogError::corruption(&seg.path, cursor.position(), reason));
            }
        }
    };
    seg.file
        .set_len(offset)
        .map_err(|e| LogError::io(&seg.path, "truncate", e))?;
    seg.file
        .sync_data()
        .map_err(|e| LogError::io(&seg.path, "fdatasync", e))?;
    seg.len = offset;
    seg.next_index = from;
    seg.max_ts = max_ts;
    seg.index.truncate(from);
    Ok(())
}
