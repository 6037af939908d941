//! Appending: frames built into one buffer and written with one `write_at` per segment
//! touched; rolling to a new segment; `sync` (group commit).
//!
//! Rolling syncs the segment it leaves and the directory entry of the one it creates,
//! so that at most the last segment ever holds unsynced bytes. Recovery relies on that:
//! only the last segment may have a torn tail, and `sync` need only fdatasync one file.

use runnel_types::LogIndex;

use crate::entry::Entry;
use crate::error::LogError;
use crate::frame::{self, PAYLOAD_BYTES_MAX, frame_len};
use crate::index::TermRuns;
use crate::log::{SegmentLog, State, poison_on_err};
use crate::segment::{self, HEADER_BYTES, Segment};

impl SegmentLog {
    /// Appends `entries` (written, not synced). Their indices must run on from the
    /// log's last index (from one past the purge point, or 1, when empty).
    pub fn append(&self, entries: &[Entry]) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut st = self.write_state()?;
        check_batch(entries, st.next_index())?;
        let r = self.append_locked(&mut st, entries);
        poison_on_err(&mut st, r)
    }

    /// Makes everything appended so far durable: one fdatasync of the active segment.
    /// Appends may proceed meanwhile; they are covered by the next `sync`.
    pub fn sync(&self) -> Result<(), LogError> {
        let active = {
            let st = self.write_state()?;
            st.segments.last().map(|s| (s.file.clone(), s.path.clone()))
        };
        let Some((file, path)) = active else {
            return Ok(());
        };
        if let Err(e) = file.sync_data() {
            let err = LogError::io(path, "fdatasync", e);
            let mut st = self
                .state
                .write()
                .expect("no code panics while holding the log lock");
            return poison_on_err(&mut st, Err(err));
        }
        Ok(())
    }

    fn append_locked(&self, st: &mut State, entries: &[Entry]) -> Result<(), LogError> {
        let mut rest = entries;
        while let Some(first) = rest.first() {
            self.make_room(st, frame_len(first.payload.len()) as u64)?;
            let State {
                segments, terms, ..
            } = st;
            let seg = segments
                .last_mut()
                .expect("make_room leaves an active segment");
            let n = fitting(seg.len, rest, self.config.segment_bytes_max);
            let (batch, tail) = rest.split_at(n);
            write_batch(seg, terms, batch)?;
            rest = tail;
        }
        Ok(())
    }

    /// Ensures the active segment can take a frame of `frame_bytes` (an oversized frame
    /// goes alone into a fresh segment).
    fn make_room(&self, st: &mut State, frame_bytes: u64) -> Result<(), LogError> {
        let next = st.next_index();
        let full = match st.segments.last() {
            None => true,
            Some(seg) => {
                seg.len > HEADER_BYTES && seg.len + frame_bytes > self.config.segment_bytes_max
            }
        };
        if !full {
            return Ok(());
        }
        if let Some(seg) = st.segments.last() {
            seg.file
                .sync_data()
                .map_err(|e| LogError::io(&seg.path, "fdatasync on roll", e))?;
        }
        let seg = self.create_segment(next)?;
        st.segments.push(seg);
        Ok(())
    }

    /// Creates a segment file with its header and makes its name durable.
    fn create_segment(&self, base: LogIndex) -> Result<Segment, LogError> {
        let path = self.dir.join(segment::segment_file_name(base));
        let file = self
            .disk
            .open_file(&path, true)
            .map_err(|e| LogError::io(&path, "create", e))?;
        file.set_len(0)
            .map_err(|e| LogError::io(&path, "truncate", e))?;
        file.write_at(&segment::encode_header(base), 0)
            .map_err(|e| LogError::io(&path, "write header", e))?;
        self.disk
            .sync_dir(&self.dir)
            .map_err(|e| LogError::io(&self.dir, "fsync dir", e))?;
        Ok(Segment::new(
            base,
            path,
            file,
            self.config.index_interval_bytes,
        ))
    }
}

/// Rejects a batch that is not contiguous from `next` or holds an oversized payload.
fn check_batch(entries: &[Entry], next: LogIndex) -> Result<(), LogError> {
    let mut expected = next;
    for e in entries {
        if e.index != expected {
            return Err(LogError::NonContiguous {
                expected,
                got: e.index,
            });
        }
        if e.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(LogError::EntryTooLarge {
                index: e.index,
                len: e.payload.len(),
                max: PAYLOAD_BYTES_MAX,
            });
        }
        expected = expected.next();
    }
    Ok(())
}

/// How many of `entries` go into a segment now `seg_len` bytes long: at least one.
fn fitting(seg_len: u64, entries: &[Entry], segment_bytes_max: u64) -> usize {
    let mut len = seg_len;
    let mut n = 0;
    for e in entries {
        let f = frame_len(e.payload.len()) as u64;
        if n > 0 && len + f > segment_bytes_max {
            break;
        }
        len += f;
        n += 1;
    }
    n
}

/// Encodes `batch` into one buffer and writes it at the end of `seg`.
fn write_batch(seg: &mut Segment, terms: &mut TermRuns, batch: &[Entry]) -> Result<(), LogError> {
    let bytes: usize = batch.iter().map(|e| frame_len(e.payload.len())).sum();
    let mut buf = Vec::with_capacity(bytes);
    for e in batch {
        frame::encode_frame(&mut buf, e);
    }
    seg.file
        .write_at(&buf, seg.len)
        .map_err(|e| LogError::io(&seg.path, "write", e))?;
    for e in batch {
        let offset = seg.len;
        seg.record_frame(
            e.index,
            e.timestamp_ms,
            offset,
            frame_len(e.payload.len()) as u64,
        );
        terms.push(e.index, e.term);
    }
    Ok(())
}
