//! Opening a log directory: validate everything first, read-only, then repair.
//!
//! Phase one scans every segment that is not wholly purged, frame by frame with CRC
//! checks, rebuilding the sparse indexes and term runs (nothing index-like is persisted:
//! the scan reads each segment once, sequentially, at disk speed, and also proves the
//! data readable). It tolerates exactly one kind of damage, a torn tail of the last
//! segment: a frame cut short, a zero-filled tail, a CRC mismatch, or a header never
//! fully written, each provided no valid frame follows. Anything else (a bad frame in a
//! sealed segment, a bad frame followed by a valid one, a gap between segments) is
//! `LogError::Corruption`, returned before anything was modified.
//!
//! Phase two applies the plan: cut the torn tail (`set_len` + fdatasync), delete
//! segments left over from an interrupted purge, the torn or empty last segment, and a
//! stale `purged.tmp`, then fsync the directory.

use std::path::{Path, PathBuf};

use runnel_types::LogIndex;
use tracing::warn;

use crate::disk::{Disk, DiskFile};
use crate::entry::{EntryId, LogConfig};
use crate::error::LogError;
use crate::frame::{self, FRAME_HEADER_BYTES};
use crate::index::TermRuns;
use crate::purge_file::{self, PURGE_TMP_FILE};
use crate::segment::{
    self, FrameCursor, HEADER_BYTES, HeaderCheck, Segment, Step, parse_segment_file_name,
    read_bytes,
};

/// Bytes per read while scanning a segment at open.
const SCAN_READ_BYTES: usize = 8 * 1024 * 1024;
/// Bytes per read while looking for valid frames after a bad one.
const PROBE_WINDOW_BYTES: usize = 1024 * 1024;

/// What the log starts from.
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub purged: Option<EntryId>,
    pub terms: TermRuns,
}

/// Changes phase two makes, all decided before any is made.
#[derive(Default)]
struct Plan {
    delete: Vec<PathBuf>,
    /// The last segment's torn tail: cut the file at this offset (unless deleted).
    cut: Option<(PathBuf, u64)>,
}

pub(crate) fn recover(
    disk: &dyn Disk,
    dir: &Path,
    config: &LogConfig,
) -> Result<Recovered, LogError> {
    disk.create_dir_all(dir)
        .map_err(|e| LogError::io(dir, "create dir", e))?;
    let names = disk
        .list_dir(dir)
        .map_err(|e| LogError::io(dir, "list dir", e))?;
    let purged = purge_file::read(disk, dir)?;
    let mut plan = Plan::default();
    let bases = segment_bases(dir, &names, &mut plan);
    let bases = skip_purged(dir, bases, purged, &mut plan);
    let mut segments = Vec::with_capacity(bases.len());
    let mut terms = TermRuns::default();
    for (i, base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let expected = expected_base(&segments, purged);
        let seg = scan_segment(
            disk, dir, *base, expected, last, config, &mut terms, &mut plan,
        )?;
        segments.extend(seg);
    }
    drop_empty_tail(&mut segments, purged, &mut plan);
    if let Some(p) = purged {
        terms.purge_before(p.index.next());
    }
    apply(disk, dir, &segments, plan)?;
    Ok(Recovered {
        segments,
        purged,
        terms,
    })
}

/// Sorted bases of the segment files; stray files are reported and left alone.
fn segment_bases(dir: &Path, names: &[String], plan: &mut Plan) -> Vec<LogIndex> {
    let mut bases = Vec::new();
    for name in names {
        if let Some(base) = parse_segment_file_name(name) {
            bases.push(base);
        } else if name == PURGE_TMP_FILE {
            plan.delete.push(dir.join(name));
        } else if name != purge_file::PURGE_FILE {
            warn!(dir = %dir.display(), file = %name, "ignoring a stray file in a log directory");
        }
    }
    bases.sort();
    bases
}

/// Drops (and plans to delete) segments whose successor starts at or before the first
/// unpurged index: an interrupted purge left them.
fn skip_purged(
    dir: &Path,
    bases: Vec<LogIndex>,
    purged: Option<EntryId>,
    plan: &mut Plan,
) -> Vec<LogIndex> {
    let Some(p) = purged else { return bases };
    let skip = bases
        .windows(2)
        .take_while(|w| w[1] <= p.index.next())
        .count();
    for base in &bases[..skip] {
        plan.delete
            .push(dir.join(segment::segment_file_name(*base)));
    }
    bases[skip..].to_vec()
}

/// The base the next segment must have: where the previous one ends, or, for the
/// first, at most the first unpurged index.
enum ExpectedBase {
    Exactly(LogIndex),
    AtMost(LogIndex),
}

fn expected_base(segments: &[Segment], purged: Option<EntryId>) -> ExpectedBase {
    match segments.last() {
        Some(prev) => ExpectedBase::Exactly(prev.next_index),
        None => ExpectedBase::AtMost(purged.map_or(LogIndex(1), |p| p.index.next())),
    }
}

/// Scans one segment; `None` when it is a torn last segment to delete.
#[allow(clippy::too_many_arguments)]
fn scan_segment(
    disk: &dyn Disk,
    dir: &Path,
    name_base: LogIndex,
    expected: ExpectedBase,
    last: bool,
    config: &LogConfig,
    terms: &mut TermRuns,
    plan: &mut Plan,
) -> Result<Option<Segment>, LogError> {
    let path = dir.join(segment::segment_file_name(name_base));
    let file = disk
        .open_file(&path, false)
        .map_err(|e| LogError::io(&path, "open", e))?;
    let file_len = file.len().map_err(|e| LogError::io(&path, "stat", e))?;
    let header = read_bytes(&path, file.as_ref(), 0, file_len.min(HEADER_BYTES) as usize)?;
    match segment::check_header(&path, &header)? {
        HeaderCheck::Valid(base) if base == name_base => {}
        HeaderCheck::Valid(base) => {
            let reason = format!("header says base index {base}, file name says {name_base}");
            return Err(LogError::corruption(&path, 0, reason));
        }
        HeaderCheck::Torn(reason) => {
            return torn_header(
                &path,
                file.as_ref(),
                file_len,
                name_base,
                last,
                reason,
                plan,
            );
        }
    }
    check_base(&path, name_base, expected)?;
    let mut seg = Segment::new(name_base, path, file, config.index_interval_bytes);
    scan_frames(&mut seg, file_len, last, terms, plan)?;
    Ok(Some(seg))
}

fn check_base(path: &Path, base: LogIndex, expected: ExpectedBase) -> Result<(), LogError> {
    let reason = match expected {
        ExpectedBase::Exactly(e) if base != e => {
            format!("segment starts at index {base} but the previous segment ends before {e}")
        }
        ExpectedBase::AtMost(e) if base > e => {
            format!("the first segment starts at index {base} but the log must hold index {e}")
        }
        _ => return Ok(()),
    };
    Err(LogError::corruption(path, 0, reason))
}

/// A damaged header is a torn creation only on the last segment and with nothing valid
/// after it.
fn torn_header(
    path: &Path,
    file: &dyn DiskFile,
    file_len: u64,
    base: LogIndex,
    last: bool,
    reason: String,
    plan: &mut Plan,
) -> Result<Option<Segment>, LogError> {
    if !last {
        return Err(LogError::corruption(
            path,
            0,
            format!("{reason} in a sealed segment"),
        ));
    }
    if let Some(at) = find_valid_frame(path, file, 1, file_len, base)? {
        let reason = format!("{reason}, yet a valid frame follows at offset {at}");
        return Err(LogError::corruption(path, 0, reason));
    }
    warn!(path = %path.display(), %reason, "deleting a last segment whose creation was torn");
    plan.delete.push(path.to_path_buf());
    Ok(None)
}

/// Walks every frame of `seg`, checking CRCs and index continuity.
fn scan_frames(
    seg: &mut Segment,
    file_len: u64,
    last: bool,
    terms: &mut TermRuns,
    plan: &mut Plan,
) -> Result<(), LogError> {
    let path = seg.path.clone();
    let file = seg.file.clone();
    let mut cursor = FrameCursor::over(
        &path,
        file.as_ref(),
        HEADER_BYTES,
        file_len,
        SCAN_READ_BYTES,
    );
    loop {
        match cursor.next_frame()? {
            Step::Frame(f) if f.header.index != seg.next_index => {
                let reason = format!(
                    "expected entry {} but found entry {}",
                    seg.next_index, f.header.index
                );
                return Err(LogError::corruption(&path, f.offset, reason));
            }
            Step::Frame(f) => {
                terms.push(f.header.index, f.term());
                let (index, ts) = (f.header.index, f.header.timestamp_ms);
                seg.record_frame(index, ts, f.offset, f.header.total as u64);
            }
            Step::End => return Ok(()),
            Step::Bad { offset, error } => {
                if !last {
                    let reason = format!("{error} in a sealed segment");
                    return Err(LogError::corruption(&path, offset, reason));
                }
                let next = seg.next_index;
                if let Some(at) =
                    find_valid_frame(&path, file.as_ref(), offset + 1, file_len, next)?
                {
                    let reason = format!("{error}, yet a valid frame follows at offset {at}");
                    return Err(LogError::corruption(&path, offset, reason));
                }
                warn!(path = %path.display(), offset, %error, cut_bytes = file_len - offset,
                    "cutting a torn tail off the last segment");
                plan.cut = Some((path.clone(), offset));
                return Ok(());
            }
        }
    }
}

/// Looks for a frame in `[start, end)` that is valid and could belong to this log
/// (index at or after `expected`). A cheap filter on the length and index fields keeps
/// this linear on garbage and on zero-filled tails.
fn find_valid_frame(
    path: &Path,
    file: &dyn DiskFile,
    start: u64,
    end: u64,
    expected: LogIndex,
) -> Result<Option<u64>, LogError> {
    let mut win = start;
    while win + FRAME_HEADER_BYTES as u64 <= end {
        let len = (end - win).min((PROBE_WINDOW_BYTES + FRAME_HEADER_BYTES) as u64) as usize;
        let buf = read_bytes(path, file, win, len)?;
        for i in 0..=buf.len() - FRAME_HEADER_BYTES {
            let at = win + i as u64;
            if is_valid_frame_at(path, file, &buf[i..], at, end, expected)? {
                return Ok(Some(at));
            }
        }
        win += (buf.len() - FRAME_HEADER_BYTES + 1) as u64;
    }
    Ok(None)
}

fn is_valid_frame_at(
    path: &Path,
    file: &dyn DiskFile,
    buf: &[u8],
    at: u64,
    end: u64,
    expected: LogIndex,
) -> Result<bool, LogError> {
    let Ok(total) = frame::peek_frame_len(buf) else {
        return Ok(false);
    };
    let Some(index) = frame::peek_index(buf) else {
        return Ok(false);
    };
    let plausible_max = expected
        .0
        .saturating_add((end - at) / FRAME_HEADER_BYTES as u64);
    if index < expected || index.0 > plausible_max || at + total as u64 > end {
        return Ok(false);
    }
    if buf.len() >= total {
        return Ok(frame::decode_frame(buf).is_ok());
    }
    let whole = read_bytes(path, file, at, total)?;
    Ok(frame::decode_frame(&whole).is_ok())
}

/// A last segment without entries holds nothing: delete it, as any segment whose
/// entries are all purged, so that every kept segment has a visible entry.
fn drop_empty_tail(segments: &mut Vec<Segment>, purged: Option<EntryId>, plan: &mut Plan) {
    let first_visible = purged.map_or(LogIndex(1), |p| p.index.next());
    if segments.last().is_some_and(|s| !s.has_entries()) {
        plan.delete.extend(segments.pop().map(|s| s.path));
    }
    let dead = segments
        .iter()
        .take_while(|s| s.next_index <= first_visible)
        .count();
    plan.delete.extend(segments.drain(..dead).map(|s| s.path));
}

/// Phase two: the repairs, then one directory fsync.
fn apply(disk: &dyn Disk, dir: &Path, segments: &[Segment], plan: Plan) -> Result<(), LogError> {
    let cut = plan.cut.filter(|(path, _)| !plan.delete.contains(path));
    if let Some((path, offset)) = cut {
        let seg = segments
            .iter()
            .find(|s| s.path == path)
            .expect("a cut segment is kept unless deleted");
        seg.file
            .set_len(offset)
            .map_err(|e| LogError::io(&path, "truncate torn tail", e))?;
        seg.file
            .sync_data()
            .map_err(|e| LogError::io(&path, "fdatasync", e))?;
    }
    for path in &plan.delete {
        disk.remove_file(path)
            .map_err(|e| LogError::io(path, "remove", e))?;
    }
    if !plan.delete.is_empty() {
        disk.sync_dir(dir)
            .map_err(|e| LogError::io(dir, "fsync dir", e))?;
    }
    Ok(())
}
