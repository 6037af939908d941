//! The purge point file, `purged`: the id of the last purged entry, persisted so that a
//! reopened log hides (and then deletes) what was purged even where segments were only
//! partly purged.
//!
//! Layout (36 bytes, little-endian): magic `b"RNNLPRG\0"`, version u32 (1), reserved u32,
//! index u64, term u64, CRC32C u32 of bytes 0..32. Replaced atomically: write
//! `purged.tmp`, fdatasync, rename over `purged`, fsync the directory. A rename never
//! leaves a torn file, so any mismatch here is corruption.

use std::path::Path;

use runnel_types::{LogIndex, Term};

use crate::disk::Disk;
use crate::entry::EntryId;
use crate::error::LogError;
use crate::segment::FORMAT_VERSION;

pub(crate) const PURGE_FILE: &str = "purged";
pub(crate) const PURGE_TMP_FILE: &str = "purged.tmp";
const MAGIC: [u8; 8] = *b"RNNLPRG\0";
const FILE_BYTES: usize = 36;

fn encode(id: EntryId) -> [u8; FILE_BYTES] {
    let mut b = [0u8; FILE_BYTES];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&id.index.0.to_le_bytes());
    b[24..32].copy_from_slice(&id.term.0.to_le_bytes());
    let crc = crc32c::crc32c(&b[..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(path: &Path, b: &[u8]) -> Result<EntryId, LogError> {
    if b.len() != FILE_BYTES {
        let reason = format!("purge file is {} bytes, expected {FILE_BYTES}", b.len());
        return Err(LogError::corruption(path, 0, reason));
    }
    if b[0..8] != MAGIC {
        return Err(LogError::BadMagic {
            path: path.to_path_buf(),
            found: b[0..8].to_vec(),
        });
    }
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let stored = u32::from_le_bytes(b[32..36].try_into().expect("4 bytes"));
    if stored != crc32c::crc32c(&b[..32]) {
        return Err(LogError::corruption(path, 32, "purge file CRC mismatch"));
    }
    Ok(EntryId {
        index: LogIndex(u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"))),
        term: Term(u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"))),
    })
}

/// Reads the purge point, `None` if none was ever persisted.
pub(crate) fn read(disk: &dyn Disk, dir: &Path) -> Result<Option<EntryId>, LogError> {
    let path = dir.join(PURGE_FILE);
    let planted = runnel_types::planted::enabled(runnel_types::planted::Bug::LoseTrimPoint);
    if !disk.exists(&path) || planted {
        return Ok(None);
    }
    let file = disk
        .open_file(&path, false)
        .map_err(|e| LogError::io(&path, "open", e))?;
    let len = file.len().map_err(|e| LogError::io(&path, "stat", e))?;
    // Read at most one byte more than a valid file, to report a wrong size.
    let mut buf = vec![0u8; (len as usize).min(FILE_BYTES + 1)];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| LogError::io(&path, "read", e))?;
    decode(&path, &buf).map(Some)
}

/// Persists the purge point atomically and durably.
pub(crate) fn write(disk: &dyn Disk, dir: &Path, id: EntryId) -> Result<(), LogError> {
    let tmp = dir.join(PURGE_TMP_FILE);
    let path = dir.join(PURGE_FILE);
    let file = disk
        .open_file(&tmp, true)
        .map_err(|e| LogError::io(&tmp, "create", e))?;
    file.set_len(0)
        .map_err(|e| LogError::io(&tmp, "truncate", e))?;
    file.write_at(&encode(id), 0)
        .map_err(|e| LogError::io(&tmp, "write", e))?;
    file.sync_data()
        .map_err(|e| LogError::io(&tmp, "fdatasync", e))?;
    disk.rename(&tmp, &path)
        .map_err(|e| LogError::io(&path, "rename", e))?;
    disk.sync_dir(dir)
        .map_err(|e| LogError::io(dir, "fsync dir", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_disk::SimDisk;

    #[test]
    fn round_trip_and_survives_crash() {
        let disk = SimDisk::new();
        let dir = Path::new("/log");
        disk.create_dir_all(dir).expect("mkdir");
        assert_eq!(read(&disk, dir).expect("read"), None);
        let id = EntryId {
            index: LogIndex(10),
            term: Term(2),
        };
        write(&disk, dir, id).expect("write");
        disk.crash();
        assert_eq!(read(&disk, dir).expect("read"), Some(id));
    }

    #[test]
    fn damage_is_reported() {
        let id = EntryId {
            index: LogIndex(1),
            term: Term(1),
        };
        let p = Path::new("purged");
        let good = encode(id);
        assert!(matches!(
            decode(p, &good[..35]),
            Err(LogError::Corruption { .. })
        ));
        let mut bad = good;
        bad[20] ^= 4;
        assert!(matches!(decode(p, &bad), Err(LogError::Corruption { .. })));
        bad = good;
        bad[0] = 0;
        assert!(matches!(decode(p, &bad), Err(LogError::BadMagic { .. })));
        bad = good;
        bad[8] = 2;
        assert!(matches!(
            decode(p, &bad),
            Err(LogError::UnsupportedVersion { .. })
        ));
    }
}
