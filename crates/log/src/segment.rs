//! One segment file: its name, its header, its in-memory state, and a cursor that walks
//! its frames with few, large reads.
//!
//! Header (32 bytes, little-endian):
//! ```text
//!  0  8  magic b"RNNLSEG\0"
//!  8  4  format version (1)
//! 12  4  reserved, 0
//! 16  8  base index: the index of the segment's first entry (also its file name)
//! 24  4  CRC32C of bytes 0..24
//! 28  4  reserved, 0
//! ```
//! Frames (`frame.rs`) follow back to back, indices contiguous from the base.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use runnel_types::{LogIndex, Term};

use crate::disk::DiskFile;
use crate::error::LogError;
use crate::frame::{self, FrameError, FrameHeader};
use crate::index::{IndexPoint, SparseIndex};

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RNNLSEG\0";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: u64 = 32;
const SEGMENT_SUFFIX: &str = ".seg";

/// `00000000000000000001.seg`: zero-padded so that names sort like indices.
pub(crate) fn segment_file_name(base: LogIndex) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", base.0)
}

/// The base index a segment file name stands for, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(LogIndex)
}

pub(crate) fn encode_header(base: LogIndex) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.0.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What the first bytes of a segment file say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid(LogIndex),
    /// Short, zero magic or a CRC mismatch: a header whose write never completed, if
    /// this is the last segment and nothing valid follows.
    Torn(String),
}

/// Checks a header. A foreign magic or version is an error at once: those bytes were
/// written whole by someone, not torn.
pub(crate) fn check_header(path: &Path, bytes: &[u8]) -> Result<HeaderCheck, LogError> {
    if bytes.len() < HEADER_BYTES as usize {
        return Ok(HeaderCheck::Torn(format!(
            "header cut short at {} bytes",
            bytes.len()
        )));
    }
    let magic = &bytes[0..8];
    if magic != SEGMENT_MAGIC {
        if magic.iter().all(|b| *b == 0) {
            return Ok(HeaderCheck::Torn("header is zero-filled".into()));
        }
        return Err(LogError::BadMagic {
            path: path.to_path_buf(),
            found: magic.to_vec(),
        });
    }
    // The version before the CRC: another version may lay out the rest differently.
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version == 0 {
        return Ok(HeaderCheck::Torn(
            "header incomplete (version is zero)".into(),
        ));
    }
    if version != FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let stored = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if stored != crc32c::crc32c(&bytes[..24]) {
        return Ok(HeaderCheck::Torn("header CRC mismatch".into()));
    }
    let base = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    Ok(HeaderCheck::Valid(LogIndex(base)))
}

/// A segment as the log sees it: entries `[base, next_index)` in bytes `[0, len)`.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: LogIndex,
    pub path: PathBuf,
    pub file: Arc<dyn DiskFile>,
    /// Bytes of header and whole frames; the file is never longer once recovered.
    pub len: u64,
    pub next_index: LogIndex,
    /// The largest timestamp of its entries (0 when it has none).
    pub max_ts: u64,
    pub index: SparseIndex,
}

impl Segment {
    /// A segment holding only its header.
    pub fn new(
        base: LogIndex,
        path: PathBuf,
        file: Arc<dyn DiskFile>,
        index_interval: u64,
    ) -> Self {
        Segment {
            base,
            path,
            file,
            len: HEADER_BYTES,
            next_index: base,
            max_ts: 0,
            index: SparseIndex::new(index_interval),
        }
    }

    pub fn has_entries(&self) -> bool {
        self.next_index > self.base
    }

    pub fn contains(&self, index: LogIndex) -> bool {
        self.base <= index && index < self.next_index
    }

    /// Accounts for a frame written at `offset` (the current end).
    pub fn record_frame(&mut self, index: LogIndex, timestamp_ms: u64, offset: u64, total: u64) {
        debug_assert_eq!(index, self.next_index, "frames are contiguous");
        debug_assert_eq!(offset, self.len, "frames are back to back");
        self.index.on_frame(IndexPoint {
            index,
            offset,
            max_ts_before: self.max_ts,
        });
        self.max_ts = self.max_ts.max(timestamp_ms);
        self.next_index = index.next();
        self.len = offset + total;
    }

    /// A cursor over the frames in `[start, end)`, reading `read_size` bytes at a time.
    pub fn cursor(&self, start: u64, end: u64, read_size: usize) -> FrameCursor<'_> {
        FrameCursor::over(&self.path, self.file.as_ref(), start, end, read_size)
    }
}

/// One frame found by a cursor: its offset, header, and bytes (sharing the read buffer).
#[derive(Debug)]
pub(crate) struct FoundFrame {
    pub offset: u64,
    pub header: FrameHeader,
    pub bytes: Bytes,
}

impl FoundFrame {
    pub fn entry(&self) -> crate::Entry {
        crate::Entry {
            index: self.header.index,
            term: self.header.term,
            timestamp_ms: self.header.timestamp_ms,
            payload: self.bytes.slice(frame::FRAME_HEADER_BYTES..),
        }
    }

    pub fn term(&self) -> Term {
        self.header.term
    }
}

/// What a cursor found next.
#[derive(Debug)]
pub(crate) enum Step {
    Frame(FoundFrame),
    /// Bytes at `offset` are not a valid frame (or one crossing the end of the range).
    Bad {
        offset: u64,
        error: FrameError,
    },
    End,
}

/// Walks frames with one `read_at` per `read_size` bytes; a frame larger than that gets
/// a read of its own size.
pub(crate) struct FrameCursor<'a> {
    path: &'a Path,
    file: &'a dyn DiskFile,
    pos: u64,
    end: u64,
    chunk: Bytes,
    chunk_off: u64,
    read_size: usize,
}

impl<'a> FrameCursor<'a> {
    pub fn over(
        path: &'a Path,
        file: &'a dyn DiskFile,
        start: u64,
        end: u64,
        read_size: usize,
    ) -> Self {
        FrameCursor {
            path,
            file,
            pos: start,
            end,
            chunk: Bytes::new(),
            chunk_off: start,
            read_size: read_size.max(frame::FRAME_HEADER_BYTES),
        }
    }

    pub fn next_frame(&mut self) -> Result<Step, LogError> {
        loop {
            if self.pos >= self.end {
                return Ok(Step::End);
            }
            let avail = self.chunk.slice((self.pos - self.chunk_off) as usize..);
            match frame::decode_frame(&avail) {
                Ok(header) => {
                    let found = FoundFrame {
                        offset: self.pos,
                        header,
                        bytes: avail.slice(..header.total),
                    };
                    self.pos += header.total as u64;
                    return Ok(Step::Frame(found));
                }
                Err(FrameError::Incomplete { needed })
                    if (avail.len() as u64) < self.remaining() =>
                {
                    if needed as u64 > self.remaining() {
                        return Ok(self.bad(FrameError::Incomplete { needed }));
                    }
                    self.refill(needed)?;
                }
                Err(error) => return Ok(self.bad(error)),
            }
        }
    }

    /// The offset of the next frame to decode.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn bad(&self, error: FrameError) -> Step {
        Step::Bad {
            offset: self.pos,
            error,
        }
    }

    fn refill(&mut self, needed: usize) -> Result<(), LogError> {
        let len = (self.read_size.max(needed) as u64).min(self.remaining()) as usize;
        self.chunk = read_bytes(self.path, self.file, self.pos, len)?;
        self.chunk_off = self.pos;
        Ok(())
    }
}

/// Reads exactly `len` bytes at `offset` into a fresh buffer.
pub(crate) fn read_bytes(
    path: &Path,
    file: &dyn DiskFile,
    offset: u64,
    len: usize,
) -> Result<Bytes, LogError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| LogError::io(path, "read", e))?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_strangers() {
        let name = segment_file_name(LogIndex(42));
        assert_eq!(name, "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name(&name), Some(LogIndex(42)));
        for bad in [
            "42.seg",
            "0000000000000000004x.seg",
            "00000000000000000042.tmp",
            "purged",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_checks() {
        let p = Path::new("x.seg");
        let h = encode_header(LogIndex(7));
        assert_eq!(
            check_header(p, &h).expect("ok"),
            HeaderCheck::Valid(LogIndex(7))
        );
        assert!(matches!(
            check_header(p, &h[..10]),
            Ok(HeaderCheck::Torn(_))
        ));
        assert!(matches!(
            check_header(p, &[0; 32]),
            Ok(HeaderCheck::Torn(_))
        ));
        let mut flipped = h;
        flipped[17] ^= 1;
        assert!(matches!(
            check_header(p, &flipped),
            Ok(HeaderCheck::Torn(_))
        ));
        let mut magic = h;
        magic[0] = b'X';
        assert!(matches!(
            check_header(p, &magic),
            Err(LogError::BadMagic { .. })
        ));
        let mut version = h;
        version[8] = 9;
        assert!(matches!(
            check_header(p, &version),
            Err(LogError::UnsupportedVersion { found: 9, .. })
        ));
    }
}
