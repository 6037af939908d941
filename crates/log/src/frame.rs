//! The frame: how one entry is laid out in a segment file.
//!
//! ```text
//! offset size
//!  0     4   len: bytes after the CRC field = 24 + payload length (u32, little-endian)
//!  4     4   crc: CRC32C of the len field followed by bytes 8 .. 8+len
//!  8     8   index
//! 16     8   term
//! 24     8   timestamp_ms
//! 32     len-24  payload
//! ```
//!
//! The CRC also covers the length, so a flipped length bit is caught even when the new
//! length happens to frame other valid-looking bytes. A declared length above
//! [`PAYLOAD_BYTES_MAX`] is rejected before anything is allocated. Decoding is total: any
//! byte string yields a frame or a [`FrameError`], never a panic (fuzzed in `fuzz/`).

use bytes::Bytes;
use runnel_types::{LogIndex, Term};

use crate::entry::Entry;

/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Bytes of the fields after the CRC that are not payload.
const FIXED_BODY_BYTES: usize = 24;
/// The largest payload an entry may have (a Raft entry is at most a few MiB).
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends before the frame does; `needed` bytes would hold it all.
    Incomplete { needed: usize },
    /// The length field is impossible (zero-filled space lands here).
    BadLength { len: u32 },
    /// The bytes do not match their checksum.
    BadCrc { stored: u32, computed: u32 },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete { needed } => {
                write!(f, "frame cut short (needs {needed} bytes)")
            }
            FrameError::BadLength { len } => write!(f, "impossible frame length {len}"),
            FrameError::BadCrc { stored, computed } => {
                write!(
                    f,
                    "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
        }
    }
}

/// A decoded frame's fixed fields; the payload is `buf[FRAME_HEADER_BYTES..total]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub index: LogIndex,
    pub term: Term,
    pub timestamp_ms: u64,
    /// Bytes of the whole frame, header included.
    pub total: usize,
}

impl FrameHeader {
    pub fn payload_len(&self) -> usize {
        self.total - FRAME_HEADER_BYTES
    }
}

/// The frame size of an entry with `payload_len` bytes of payload.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_BYTES + payload_len
}

/// Appends `entry`'s frame to `buf`. The CRC is computed over the bytes as placed in
/// `buf` (what will be written), not over the source.
pub fn encode_frame(buf: &mut Vec<u8>, entry: &Entry) {
    debug_assert!(
        entry.payload.len() <= PAYLOAD_BYTES_MAX,
        "checked by the caller"
    );
    let start = buf.len();
    let len = (FIXED_BODY_BYTES + entry.payload.len()) as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&entry.index.0.to_le_bytes());
    buf.extend_from_slice(&entry.term.0.to_le_bytes());
    buf.extend_from_slice(&entry.timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&entry.payload);
    let crc = frame_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC of a whole frame: its length field and everything after the CRC field.
fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[..4]), &frame[8..])
}

/// Reads the length field and checks it, without touching the rest: the number of bytes
/// the whole frame occupies.
pub fn peek_frame_len(buf: &[u8]) -> Result<usize, FrameError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Err(FrameError::Incomplete {
            needed: FRAME_HEADER_BYTES,
        });
    };
    let len = u32::from_le_bytes(le4(len_bytes));
    let body = len as usize;
    if !(FIXED_BODY_BYTES..=FIXED_BODY_BYTES + PAYLOAD_BYTES_MAX).contains(&body) {
        return Err(FrameError::BadLength { len });
    }
    Ok(8 + body)
}

/// Decodes and verifies the frame at the start of `buf`.
pub fn decode_frame(buf: &[u8]) -> Result<FrameHeader, FrameError> {
    let total = peek_frame_len(buf)?;
    if buf.len() < total {
        return Err(FrameError::Incomplete { needed: total });
    }
    let frame = &buf[..total];
    let stored = u32::from_le_bytes(le4(&frame[4..8]));
    let computed = frame_crc(frame);
    if stored != computed {
        return Err(FrameError::BadCrc { stored, computed });
    }
    Ok(FrameHeader {
        index: LogIndex(u64::from_le_bytes(le8(&frame[8..16]))),
        term: Term(u64::from_le_bytes(le8(&frame[16..24]))),
        timestamp_ms: u64::from_le_bytes(le8(&frame[24..32])),
        total,
    })
}

/// The index field of a frame header, unverified: used to judge whether bytes after a
/// bad frame could be a later valid frame before paying for a CRC.
pub fn peek_index(buf: &[u8]) -> Option<LogIndex> {
    buf.get(8..16).map(|b| LogIndex(u64::from_le_bytes(le8(b))))
}

/// Decodes the frame at the start of `buf` into an entry whose payload shares `buf`.
pub fn decode_entry(buf: &Bytes) -> Result<(Entry, usize), FrameError> {
    let h = decode_frame(buf)?;
    let entry = Entry {
        index: h.index,
        term: h.term,
        timestamp_ms: h.timestamp_ms,
        payload: buf.slice(FRAME_HEADER_BYTES..h.total),
    };
    Ok((entry, h.total))
}

/// Decodes consecutive frames from `buf` until it ends or a frame is bad: the frames and
/// how the walk stopped (`None` when `buf` ended exactly at a frame boundary).
pub fn decode_frames(buf: &[u8]) -> (Vec<FrameHeader>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        match decode_frame(&buf[pos..]) {
            Ok(h) => {
                pos += h.total;
                frames.push(h);
            }
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

fn le4(b: &[u8]) -> [u8; 4] {
    b.try_into().expect("callers pass exactly 4 bytes")
}

fn le8(b: &[u8]) -> [u8; 8] {
    b.try_into().expect("callers pass exactly 8 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, payload: &[u8]) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(3),
            timestamp_ms: 99,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, &entry(7, b"hello"));
        encode_frame(&mut buf, &entry(8, b""));
        let bytes = Bytes::from(buf);
        let (e, n) = decode_entry(&bytes).expect("valid");
        assert_eq!(e, entry(7, b"hello"));
        assert_eq!(n, frame_len(5));
        let (e2, _) = decode_entry(&bytes.slice(n..)).expect("valid");
        assert_eq!(e2, entry(8, b""));
        let (frames, stop) = decode_frames(&bytes);
        assert_eq!(frames.len(), 2);
        assert_eq!(stop, None);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, &entry(1, b"payload"));
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame(&bad).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn short_zero_and_huge_inputs_are_errors() {
        assert!(matches!(
            decode_frame(&[]),
            Err(FrameError::Incomplete { .. })
        ));
        assert!(matches!(
            decode_frame(&[0; 64]),
            Err(FrameError::BadLength { len: 0 })
        ));
        let huge = [0xff; 64];
        assert!(matches!(
            decode_frame(&huge),
            Err(FrameError::BadLength { .. })
        ));
        let mut buf = Vec::new();
        encode_frame(&mut buf, &entry(1, b"abc"));
        buf.pop();
        assert_eq!(
            decode_frame(&buf),
            Err(FrameError::Incomplete {
                needed: frame_len(3)
            })
        );
    }
}
