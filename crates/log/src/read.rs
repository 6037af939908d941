//! Reading: ranges of entries, terms, timestamp lookups.
//!
//! A range read finds its start through the sparse index and reads each segment's span
//! with one `read_at` (bounded by the byte budget), then slices payloads out of that
//! buffer without copying. Every frame read is CRC-checked again.

use runnel_types::{LogIndex, Term};

use crate::entry::Entry;
use crate::error::LogError;
use crate::log::SegmentLog;
use crate::segment::{Segment, Step};

/// Extra bytes read beyond a byte budget: frame headers, and the stretch between a
/// sparse index point and the first wanted entry.
const READ_SLACK_BYTES: usize = 64 * 1024;
/// Bytes per read when scanning for a timestamp.
const TIMESTAMP_SCAN_BYTES: usize = 64 * 1024;

/// Entries gathered by a read and their payload bytes.
struct Gathered {
    entries: Vec<Entry>,
    payload_bytes: usize,
    max_bytes: usize,
}

impl Gathered {
    /// Takes `e` unless it would exceed the budget; the first entry always fits.
    fn take(&mut self, e: Entry) -> bool {
        let len = e.payload.len();
        if !self.entries.is_empty() && self.payload_bytes.saturating_add(len) > self.max_bytes {
            return false;
        }
        self.payload_bytes += len;
        self.entries.push(e);
        true
    }
}

impl SegmentLog {
    /// The entries present in `[from, to_exclusive)`, in order, stopping before the
    /// payload total would exceed `max_bytes` (yet at least one entry if any is in range).
    pub fn read(
        &self,
        from: LogIndex,
        to_exclusive: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let st = self.read_state();
        let mut out = Gathered {
            entries: Vec::new(),
            payload_bytes: 0,
            max_bytes,
        };
        let Some((first, last)) = st.visible() else {
            return Ok(out.entries);
        };
        let (from, to) = (from.max(first), to_exclusive.min(last.next()));
        if from >= to {
            return Ok(out.entries);
        }
        let start = st.segment_of(from).expect("a present index has a segment");
        let mut next = from;
        for seg in &st.segments[start..] {
            if next >= to || !self.read_segment(seg, next, to, &mut out)? {
                break;
            }
            next = seg.next_index;
        }
        Ok(out.entries)
    }

    /// The term of the entry at `index`, `None` unless it is present.
    pub fn term_of(&self, index: LogIndex) -> Result<Option<Term>, LogError> {
        let st = self.read_state();
        Ok(match st.visible() {
            Some((first, last)) if first <= index && index <= last => st.terms.term_of(index),
            _ => None,
        })
    }

    /// The first entry with a timestamp at or after `timestamp_ms`. Timestamps count as
    /// a running maximum (a new leader's clock may be behind), so the answer only moves
    /// forward as `timestamp_ms` grows.
    pub fn find_by_timestamp(&self, timestamp_ms: u64) -> Result<Option<LogIndex>, LogError> {
        let st = self.read_state();
        let Some((first, _)) = st.visible() else {
            return Ok(None);
        };
        for seg in &st.segments {
            if seg.next_index <= first || seg.max_ts < timestamp_ms {
                continue;
            }
            if let Some(found) = scan_for_timestamp(seg, first, timestamp_ms)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Reads entries `[from, to)` of `seg` into `out`; false once the budget or `to`
    /// stopped the read.
    fn read_segment(
        &self,
        seg: &Segment,
        from: LogIndex,
        to: LogIndex,
        out: &mut Gathered,
    ) -> Result<bool, LogError> {
        let point = seg
            .index
            .floor(from)
            .expect("a segment's first frame is a point");
        let end = seg.index.ceil_offset(to).unwrap_or(seg.len);
        let budget = out.max_bytes.saturating_sub(out.payload_bytes);
        let slack = self.config.index_interval_bytes as usize + READ_SLACK_BYTES;
        let read_size = (end - point.offset).min(budget.saturating_add(slack) as u64);
        let mut cursor = seg.cursor(point.offset, end, read_size as usize);
        let mut expected = point.index;
        loop {
            let f = match cursor.next_frame()? {
                Step::End => return Ok(true),
                Step::Bad { offset, error } => {
                    let reason = format!("{error} while reading entry {expected}");
                    return Err(LogError::corruption(&seg.path, offset, reason));
                }
                Step::Frame(f) => f,
            };
            check_index(seg, f.offset, expected, f.header.index)?;
            expected = expected.next();
            if f.header.index >= to {
                return Ok(false);
            }
            if f.header.index >= from && !out.take(f.entry()) {
                return Ok(false);
            }
        }
    }
}

/// The first entry of `seg` at or after `first` with a timestamp >= `ts`.
fn scan_for_timestamp(
    seg: &Segment,
    first: LogIndex,
    ts: u64,
) -> Result<Option<LogIndex>, LogError> {
    let visible = seg
        .index
        .floor(first.max(seg.base))
        .expect("a segment's first frame is a point");
    let start = match seg.index.timestamp_floor(ts) {
        Some(p) if p.offset > visible.offset => p,
        _ => visible,
    };
    let mut cursor = seg.cursor(start.offset, seg.len, TIMESTAMP_SCAN_BYTES);
    let mut expected = start.index;
    loop {
        match cursor.next_frame()? {
            Step::End => return Ok(None),
            Step::Bad { offset, error } => {
                let reason = format!("{error} while looking up timestamp {ts}");
                return Err(LogError::corruption(&seg.path, offset, reason));
            }
            Step::Frame(f) => {
                check_index(seg, f.offset, expected, f.header.index)?;
                expected = expected.next();
                if f.header.index >= first && f.header.timestamp_ms >= ts {
                    return Ok(Some(f.header.index));
                }
            }
        }
    }
}

fn check_index(
    seg: &Segment,
    offset: u64,
    expected: LogIndex,
    found: LogIndex,
) -> Result<(), LogError> {
    if found == expected {
        return Ok(());
    }
    let reason = format!("expected entry {expected} but found entry {found}");
    Err(LogError::corruption(&seg.path, offset, reason))
}
