//! [`SledStore`]: the real store, one sled 0.34 database in the node's metadata dir.
//! Not compiled under madsim (sled starts threads; see the crate docs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::batch::{BatchOp, WriteBatch};
use crate::error::MetaStoreError;
use crate::store::{KeyValue, MetaStore};

/// How long [`SledStore::open`] waits for a lock held by this process's own
/// just-dropped database (sled's flusher lets go within its flush interval, 500 ms).
pub const LOCK_RETRY: Duration = Duration::from_secs(2);
const LOCK_RETRY_STEP: Duration = Duration::from_millis(20);

/// A [`MetaStore`] on sled. A batch becomes one `sled::Batch`, which sled applies and
/// recovers atomically; `flush` is `Db::flush`, which fsyncs sled's log.
///
/// Why `sled::Batch` and not a sled transaction: `delete_prefix` needs the keys under
/// the prefix, and a transaction cannot scan. The batch is therefore resolved against
/// the current keys first, under `write_lock`, so that no other `apply` of this store
/// can slip a key under the prefix between the scan and the write.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    write_lock: Mutex<()>,
}

impl SledStore {
    /// Opens (or creates) the database in `path`. Fails with
    /// [`MetaStoreError::DirLocked`] if another process has it open.
    ///
    /// sled releases its directory lock from its background flusher thread, a moment
    /// after the last handle of the database in this process is dropped; a reopen in
    /// the same process (a node restarted in place, a test) can find the lock still
    /// held. So a locked dir is retried for [`LOCK_RETRY`] before it is reported.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, MetaStoreError> {
        let path = path.as_ref().to_path_buf();
        let started = Instant::now();
        let db = loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => break db,
                Err(e) => match open_error(&path, e) {
                    MetaStoreError::DirLocked { .. } if started.elapsed() < LOCK_RETRY => {
                        std::thread::sleep(LOCK_RETRY_STEP);
                    }
                    err => return Err(err),
                },
            }
        };
        Ok(SledStore {
            db,
            path,
            write_lock: Mutex::new(()),
        })
    }

    /// The metadata dir.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The final state of every key the batch touches: `Some(value)` to write, `None`
    /// to remove. Later operations win, as [`WriteBatch`] promises.
    fn resolve(
        &self,
        batch: &WriteBatch,
    ) -> Result<BTreeMap<Vec<u8>, Option<Vec<u8>>>, MetaStoreError> {
        let mut writes = BTreeMap::new();
        for op in batch.ops() {
            match op {
                BatchOp::Put { key, value } => {
                    writes.insert(key.clone(), Some(value.clone()));
                }
                BatchOp::Delete { key } => {
                    writes.insert(key.clone(), None);
                }
                BatchOp::DeletePrefix { prefix } => {
                    for (key, write) in writes.iter_mut() {
                        if key.starts_with(prefix) {
                            *write = None;
                        }
                    }
                    for item in self.db.scan_prefix(prefix).keys() {
                        let key = item.map_err(|e| self.error("reading", e))?;
                        writes.insert(key.to_vec(), None);
                    }
                }
            }
        }
        Ok(writes)
    }

    fn error(&self, op: &'static str, e: sled::Error) -> MetaStoreError {
        engine_error(op, &self.path, e)
    }
}

impl MetaStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaStoreError> {
        let value = self.db.get(key).map_err(|e| self.error("reading", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), MetaStoreError> {
        batch.check_limits()?;
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut sled_batch = sled::Batch::default();
        for (key, write) in self.resolve(&batch)? {
            match write {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.db
            .apply_batch(sled_batch)
            .map_err(|e| self.error("writing", e))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, MetaStoreError> {
        self.db
            .scan_prefix(prefix)
            .map(|item| {
                let (key, value) = item.map_err(|e| self.error("reading", e))?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn flush(&self) -> Result<(), MetaStoreError> {
        self.db.flush().map_err(|e| self.error("flushing", e))?;
        Ok(())
    }
}

/// sled reports a held lock as an `Io` error of kind `Other` whose message says
/// "could not acquire lock" (sled 0.34, `Config::try_lock`).
fn open_error(path: &Path, e: sled::Error) -> MetaStoreError {
    match e {
        sled::Error::Io(source) if source.to_string().contains("could not acquire lock") => {
            MetaStoreError::DirLocked {
                path: path.to_path_buf(),
                source,
            }
        }
        other => engine_error("opening", path, other),
    }
}

fn engine_error(op: &'static str, path: &Path, e: sled::Error) -> MetaStoreError {
    let path = path.to_path_buf();
    match e {
        sled::Error::Io(source) => MetaStoreError::Io { op, path, source },
        sled::Error::Corruption { at, .. } => MetaStoreError::Corrupt {
            path,
            detail: format!("sled found corrupt data at {at:?}"),
        },
        other => MetaStoreError::Backend {
            op,
            path,
            detail: other.to_string(),
        },
    }
}
