//! The crate's one error type. Every variant carries the file (and offset) involved and,
//! where an operator has to act, says what to do.

use std::io;
use std::path::PathBuf;

use runnel_types::LogIndex;

/// What went wrong in the segment log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The disk refused an operation.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk that cannot be a torn tail: refusing beats silently losing
    /// acknowledged entries. Nothing was changed on disk.
    #[error(
        "corrupt segment log file {path} at offset {offset}: {reason}. Nothing was modified; \
         move this replica's directory aside and let the replica be rebuilt from its peers \
         (or restore the file from a backup)"
    )]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A file that is not ours (or was overwritten): its first bytes are not our magic.
    #[error(
        "{path} is not a Runnel segment log file (bad magic {found:02x?}); remove stray files \
         from the log directory"
    )]
    BadMagic { path: PathBuf, found: Vec<u8> },

    /// A file written by a newer (or unknown) version of Runnel.
    #[error(
        "{path} has format version {found}, this build reads version {supported}; run a Runnel \
         version that supports it"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// An append whose first index does not follow the log's last one.
    #[error("non-contiguous append: expected index {expected}, got {got}")]
    NonContiguous { expected: LogIndex, got: LogIndex },

    /// An entry whose payload exceeds the format's bound.
    #[error("entry {index} has a payload of {len} bytes; the limit is {max}")]
    EntryTooLarge {
        index: LogIndex,
        len: usize,
        max: usize,
    },

    /// An earlier write or sync failed: what is on disk is unknown (the page cache may have
    /// dropped the failed pages), so the log refuses to write until it is reopened, which
    /// recovers from what is really on disk.
    #[error("the log at {path} failed an earlier write ({cause}); reopen it to recover")]
    Poisoned { path: PathBuf, cause: String },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            op,
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        LogError::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
