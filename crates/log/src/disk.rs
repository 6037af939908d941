//! The `Disk` trait, the only way this crate touches storage, and `RealDisk`, its
//! implementation over `std::fs`. The simulated implementation is in `sim_disk.rs`.
//!
//! The trait is deliberately small and synchronous: positional reads and writes,
//! `fdatasync`, and the directory operations whose durability matters (create, remove,
//! rename, directory fsync). That is all the segment log needs, and all a simulated disk
//! has to model faithfully.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A file system, real or simulated.
pub trait Disk: Send + Sync + Debug + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names (not paths) of the files in `path`.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens for reading and writing; creates the file when `create` is set.
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
}

/// An open file. Positional I/O only, so that one handle serves concurrent readers.
#[allow(clippy::len_without_is_empty)] // a length that can fail; emptiness is not asked
pub trait DiskFile: Send + Sync + Debug {
    fn len(&self) -> io::Result<u64>;
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset` (not durable until `sync_data`).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: makes the data written so far, and the file's length, durable.
    fn sync_data(&self) -> io::Result<()>;

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file ends before offset {}", offset + buf.len() as u64),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The real file system, through `std::fs` (`pread`/`pwrite`, `fdatasync`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

impl RealDisk {
    /// The real disk as the `Arc<dyn Disk>` that `SegmentLog::open` takes.
    pub fn shared() -> Arc<dyn Disk> {
        Arc::new(RealDisk)
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

#[derive(Debug)]
struct RealFile(File);

impl DiskFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_disk_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = RealDisk::shared();
        let sub = dir.path().join("a/b");
        disk.create_dir_all(&sub).expect("mkdir");
        let path = sub.join("f");
        assert!(!disk.exists(&path));
        let f = disk.open_file(&path, true).expect("open");
        f.write_at(b"hello world", 0).expect("write");
        f.sync_data().expect("sync");
        assert_eq!(f.len().expect("len"), 11);
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 6).expect("read");
        assert_eq!(&buf, b"world");
        let mut big = [0u8; 20];
        assert!(f.read_exact_at(&mut big, 0).is_err());
        f.set_len(5).expect("set_len");
        assert_eq!(f.len().expect("len"), 5);
        disk.rename(&path, &sub.join("g")).expect("rename");
        disk.sync_dir(&sub).expect("sync_dir");
        assert_eq!(disk.list_dir(&sub).expect("ls"), vec!["g".to_string()]);
        disk.remove_file(&sub.join("g")).expect("rm");
        assert!(disk.list_dir(&sub).expect("ls").is_empty());
        disk.remove_dir_all(&dir.path().join("a")).expect("rm -r");
        assert!(!disk.exists(&sub));
    }
}
