//! `SimDisk`: an in-memory, deterministic `Disk` for tests and the madsim simulation.
//!
//! Model (conservative where real file systems differ):
//! - Each file (inode) keeps its current bytes, its synced bytes, and the list of
//!   writes and length changes made since its last `sync_data`.
//! - Directory entries (file creation, removal, rename) become durable only when the
//!   parent directory is synced with `sync_dir`. Directories themselves, and
//!   `remove_dir_all`, are durable at once (a simplification: the log creates its
//!   directory once and never relies on a directory's own durability).
//! - `crash()` keeps only what was durable: the directory entries as of the last
//!   `sync_dir`, each file's synced bytes. Handles opened before the crash fail from then
//!   on, so a killed node cannot write into its successor's disk.
//! - `crash_with_tear(seed)` additionally keeps, per file, the unsynced operations up to a
//!   random one, in the order they were issued, and a random prefix of that last one (a
//!   torn write; sometimes zero-filled, as when a file's length reached the disk but its
//!   data did not). Keeping a prefix of the *sequence* rather than only of the last write
//!   is what an appending file shows after a crash on the common file systems; a hole in
//!   the middle of unsynced appends is a different fault (corruption), tested apart.
//!
//! No threads, no system randomness, ordered maps only: the same calls give the same
//! state, so that it runs inside madsim. It does not depend on madsim.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Disk, DiskFile};

/// The simulated disk. Cloning shares it, so a harness can keep it across a node's death.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    fail_writes: bool,
    fail_syncs: bool,
    syncs: u64,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// The disk as an `Arc<dyn Disk>` sharing this state.
    pub fn handle(&self) -> Arc<dyn Disk> {
        Arc::new(self.clone())
    }

    /// A power loss: only synced data and synced directory entries survive.
    pub fn crash(&self) {
        let mut st = self.lock();
        st.crash_with(|inode| inode.synced.clone());
    }

    /// A power loss that also keeps a random, in-order prefix of each file's unsynced
    /// writes, the last one torn. Deterministic in `seed`.
    pub fn crash_with_tear(&self, seed: u64) {
        let mut rng = SplitMix(seed);
        let mut st = self.lock();
        st.crash_with(|inode| inode.torn_image(&mut rng));
    }

    /// Makes every write, sync and directory change fail with an I/O error (a dead disk).
    pub fn set_fail_writes(&self, fail: bool) {
        self.lock().fail_writes = fail;
    }

    /// Makes `sync_data` and `sync_dir` fail with an I/O error (EIO on fsync).
    pub fn set_fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// How many `sync_data` calls succeeded: lets tests check group commit.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// The current bytes of a file, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.names.get(path)?;
        st.inodes.get(ino).map(|i| i.data.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn crash_with(&mut self, mut image: impl FnMut(&Inode) -> Vec<u8>) {
        self.generation += 1;
        self.names = self.durable_names.clone();
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        for inode in self.inodes.values_mut() {
            let bytes = image(inode);
            inode.data = bytes.clone();
            inode.synced = bytes;
            inode.pending.clear();
        }
    }

    fn check_write(&self) -> io::Result<()> {
        if self.fail_writes {
            return Err(io::Error::other("simulated disk: write failure injected"));
        }
        Ok(())
    }

    fn check_sync(&self) -> io::Result<()> {
        self.check_write()?;
        if self.fail_syncs {
            return Err(io::Error::other("simulated disk: sync failure injected"));
        }
        Ok(())
    }

    fn require_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !self.dirs.contains(parent) => Err(not_found(parent)),
            _ => Ok(()),
        }
    }
}

impl Inode {
    fn torn_image(&self, rng: &mut SplitMix) -> Vec<u8> {
        let mut bytes = self.synced.clone();
        let kept = rng.below(self.pending.len() as u64 + 1) as usize;
        for op in &self.pending[..kept] {
            apply(&mut bytes, op, usize::MAX, false);
        }
        if let Some(op) = self.pending.get(kept) {
            let total = match op {
                Pending::Write { bytes, .. } => bytes.len() as u64,
                Pending::SetLen(_) => 0,
            };
            let cut = rng.below(total + 1) as usize;
            let zeroed = rng.below(4) == 0;
            apply(&mut bytes, op, cut, zeroed);
        }
        bytes
    }
}

/// Applies `op` to `bytes`, writing at most `limit` bytes of a write, as zeros if asked.
fn apply(bytes: &mut Vec<u8>, op: &Pending, limit: usize, zeroed: bool) {
    match op {
        Pending::Write {
            offset,
            bytes: data,
        } => {
            let data = &data[..data.len().min(limit)];
            write_into(bytes, *offset, data);
            if zeroed {
                let start = *offset as usize;
                bytes[start..start + data.len()].fill(0);
            }
        }
        Pending::SetLen(len) if limit > 0 => bytes.resize(*len as usize, 0),
        Pending::SetLen(_) => {}
    }
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simulated disk: {} not found", path.display()),
    )
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_write()?;
        for dir in path.ancestors() {
            if !dir.as_os_str().is_empty() {
                st.dirs.insert(dir.to_path_buf());
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        let files = st.names.keys().filter(|p| p.parent() == Some(path));
        let subdirs = st.dirs.iter().filter(|p| p.parent() == Some(path));
        Ok(files
            .chain(subdirs)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut st = self.lock();
        let inode = match st.names.get(path) {
            Some(ino) => *ino,
            None if create => {
                st.check_write()?;
                st.require_dir(path)?;
                st.next_inode += 1;
                let ino = st.next_inode;
                st.inodes.insert(ino, Inode::default());
                st.names.insert(path.to_path_buf(), ino);
                ino
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            inode,
            generation: st.generation,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_write()?;
        st.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_write()?;
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        st.dirs.retain(|d| !d.starts_with(path));
        st.names.retain(|p, _| !p.starts_with(path));
        st.durable_names.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_write()?;
        st.require_dir(to)?;
        let ino = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_sync()?;
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(path);
        st.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        st.durable_names.extend(current);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        st.names.contains_key(path) || st.dirs.contains(path)
    }
}

/// An open simulated file: an inode number, valid until the next crash.
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
    generation: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.disk.lock();
        if st.generation != self.generation {
            return Err(io::Error::other(
                "simulated disk: handle opened before a crash",
            ));
        }
        f(&mut st, self.inode)
    }
}

fn inode_mut(st: &mut State, ino: u64) -> io::Result<&mut Inode> {
    st.inodes
        .get_mut(&ino)
        .ok_or_else(|| io::Error::other("simulated disk: inode vanished"))
}

impl DiskFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|st, ino| Ok(inode_mut(st, ino)?.data.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st, ino| {
            let data = &inode_mut(st, ino)?.data;
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|st, ino| {
            st.check_write()?;
            let inode = inode_mut(st, ino)?;
            write_into(&mut inode.data, offset, buf);
            inode.pending.push(Pending::Write {
                offset,
                bytes: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st, ino| {
            st.check_write()?;
            let inode = inode_mut(st, ino)?;
            inode.data.resize(len as usize, 0);
            inode.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|st, ino| {
            st.check_sync()?;
            let inode = inode_mut(st, ino)?;
            inode.synced = inode.data.clone();
            inode.pending.clear();
            st.syncs += 1;
            Ok(())
        })
    }
}

/// SplitMix64: a tiny deterministic generator, enough to choose tear points.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SimDisk, PathBuf) {
        let disk = SimDisk::new();
        let dir = PathBuf::from("/d");
        disk.create_dir_all(&dir).expect("mkdir");
        (disk, dir)
    }

    #[test]
    fn crash_keeps_only_synced_bytes_and_synced_names() {
        let (disk, dir) = setup();
        let a = dir.join("a");
        let f = disk.open_file(&a, true).expect("create");
        f.write_at(b"synced", 0).expect("write");
        f.sync_data().expect("sync");
        disk.crash();
        assert!(!disk.exists(&a), "name was never dir-synced");

        let f = disk.open_file(&a, true).expect("create");
        disk.sync_dir(&dir).expect("sync dir");
        f.write_at(b"synced", 0).expect("write");
        f.sync_data().expect("sync");
        f.write_at(b"-lost", 6).expect("write");
        disk.crash();
        assert_eq!(disk.file_bytes(&a).expect("exists"), b"synced");
        assert!(f.write_at(b"x", 0).is_err(), "stale handle must fail");
    }

    #[test]
    fn removal_and_rename_need_dir_sync() {
        let (disk, dir) = setup();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let f = disk.open_file(&a, true).expect("create");
        f.write_at(b"1", 0).expect("write");
        f.sync_data().expect("sync");
        disk.sync_dir(&dir).expect("sync dir");
        disk.rename(&a, &b).expect("rename");
        disk.crash();
        assert!(disk.exists(&a) && !disk.exists(&b));
        disk.rename(&a, &b).expect("rename");
        disk.sync_dir(&dir).expect("sync dir");
        disk.remove_file(&b).expect("rm");
        disk.crash();
        assert_eq!(disk.file_bytes(&b).expect("back"), b"1");
    }

    #[test]
    fn tear_keeps_an_in_order_prefix() {
        for seed in 0..200 {
            let (disk, dir) = setup();
            let a = dir.join("a");
            let f = disk.open_file(&a, true).expect("create");
            disk.sync_dir(&dir).expect("sync dir");
            f.write_at(b"AAAA", 0).expect("write");
            f.sync_data().expect("sync");
            f.write_at(b"BBBB", 4).expect("write");
            f.write_at(b"CCCC", 8).expect("write");
            disk.crash_with_tear(seed);
            let got = disk.file_bytes(&a).expect("exists");
            let full = b"AAAABBBBCCCC";
            assert!(
                got.len() <= full.len() && got.starts_with(b"AAAA"),
                "{got:?}"
            );
            let first_bad = got.iter().zip(full).position(|(g, w)| g != w);
            if let Some(i) = first_bad {
                assert!(
                    got[i..].iter().all(|b| *b == 0),
                    "only a zeroed tail: {got:?}"
                );
            }
        }
    }

    #[test]
    fn fault_injection_fails_writes_and_syncs() {
        let (disk, dir) = setup();
        let f = disk.open_file(&dir.join("a"), true).expect("create");
        disk.set_fail_syncs(true);
        f.write_at(b"x", 0).expect("writes still work");
        assert!(f.sync_data().is_err());
        disk.set_fail_syncs(false);
        disk.set_fail_writes(true);
        assert!(f.write_at(b"x", 0).is_err());
        assert!(disk.open_file(&dir.join("b"), true).is_err());
        disk.set_fail_writes(false);
        f.sync_data().expect("sync");
        assert_eq!(disk.sync_count(), 1);
    }
}
