//! [`MemStore`]: the in-memory store, with a disk's crash semantics, for tests and for
//! the deterministic simulation. No threads, no clocks, no randomness: the harness
//! chooses what a crash keeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::batch::{BatchOp, WriteBatch};
use crate::error::MetaStoreError;
use crate::store::{KeyValue, MetaStore};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`MetaStore`]. Clones share one state, so a simulation harness can
/// keep a clone while the node that used it is killed, then hand it to the restarted
/// node after [`crash`](MemStore::crash).
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// What `get` and `scan_prefix` see: `durable` plus every batch of `unflushed`.
    applied: Map,
    /// What a crash keeps for sure.
    durable: Map,
    /// Batches applied since the last flush, oldest first.
    unflushed: Vec<WriteBatch>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// A crash that loses every batch applied since the last flush, whole.
    pub fn crash(&self) {
        self.crash_keeping(0);
    }

    /// A crash that keeps the oldest `kept` unflushed batches (as a disk may have
    /// written some of them before the power went) and loses the rest, whole batches
    /// only. `kept` past [`unflushed_batches`](MemStore::unflushed_batches) keeps them
    /// all. A simulation draws `kept` from its seeded random source.
    pub fn crash_keeping(&self, kept: usize) {
        let mut state = self.lock();
        let state = &mut *state;
        let kept = kept.min(state.unflushed.len());
        for batch in state.unflushed.drain(..).take(kept) {
            apply_ops(&mut state.durable, batch.ops());
        }
        state.applied = state.durable.clone();
    }

    /// Batches applied since the last flush: what a crash may lose.
    pub fn unflushed_batches(&self) -> usize {
        self.lock().unflushed.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below completes or panics before touching the maps (only an
        // allocation failure can panic), so a poisoned state is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn apply_ops(map: &mut Map, ops: &[BatchOp]) {
    for op in ops {
        match op {
            BatchOp::Put { key, value } => {
                map.insert(key.clone(), value.clone());
            }
            BatchOp::Delete { key } => {
                map.remove(key);
            }
            BatchOp::DeletePrefix { prefix } => {
                map.retain(|key, _| !key.starts_with(prefix));
            }
        }
    }
}

impl MetaStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaStoreError> {
        Ok(self.lock().applied.get(key).cloned())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), MetaStoreError> {
        batch.check_limits()?;
        let mut state = self.lock();
        apply_ops(&mut state.applied, batch.ops());
        state.unflushed.push(batch);
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, MetaStoreError> {
        let state = self.lock();
        let entries = state
            .applied
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(entries)
    }

    fn flush(&self) -> Result<(), MetaStoreError> {
        // Replays the unflushed batches rather than cloning `applied`: the cost follows
        // what was written since the last flush, not the size of the store.
        let mut state = self.lock();
        let state = &mut *state;
        for batch in state.unflushed.drain(..) {
            apply_ops(&mut state.durable, batch.ops());
        }
        Ok(())
    }
}
