//! Group commit on the disk: a group's appends return once written, and their fsyncs
//! run behind them, one `fdatasync` for every append that arrived while the previous
//! one ran.
//!
//! Why: openraft calls `append` one at a time per group and waits for it to return
//! before it submits the next entries. With the fsync inside `append`, a group's
//! appends were strictly serial, write + fsync + write + fsync, and each fsync covered
//! one openraft batch. openraft only needs `IOFlushed` to fire once the entries are
//! durable (`RaftLogStorage::append`: "return immediately after saving the input log
//! entries in memory"), so the next write overlaps the running fsync, and when that
//! fsync returns, one more fsync covers everything written meanwhile.
//!
//! Order: callbacks fire in the order their appends returned (rounds are serialized
//! and each takes the whole queue), so openraft never sees a later flush before an
//! earlier one. A callback is queued only after its write returned, so the fsync of
//! its round covers it. [`FlushQueue::drain`] runs the outstanding rounds before a
//! truncation or a purge changes the files under them.
//!
//! The queue is bounded by openraft itself: it has at most `max_append_entries`-sized
//! submissions outstanding per group (one callback each).

use std::mem;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::storage::IOFlushed;
use tracing::Instrument;

use crate::io::blocking;
use crate::log_store::GroupStorage;
use crate::types::TypeConfig;

type Callback = IOFlushed<TypeConfig>;

/// Told how long each log fsync took: the server feeds its `fsync_duration` histogram
/// from it, because every acknowledged write waits for a quorum of these and a slow
/// disk shows here first. Runs on the blocking thread right after the fsync, so it must
/// be cheap (a histogram observation).
#[derive(Clone)]
pub struct FsyncObserver(Arc<dyn Fn(Duration) + Send + Sync>);

impl FsyncObserver {
    pub fn new(f: impl Fn(Duration) + Send + Sync + 'static) -> FsyncObserver {
        FsyncObserver(Arc::new(f))
    }

    pub(crate) fn observe(&self, took: Duration) {
        (self.0)(took)
    }
}

impl std::fmt::Debug for FsyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsyncObserver")
    }
}

#[derive(Default)]
struct Pending {
    callbacks: Vec<Callback>,
    /// A round task is running (or about to): a new callback need not start one.
    running: bool,
}

/// The fsyncs still owed to openraft for one group's appends.
#[derive(Default)]
pub(crate) struct FlushQueue {
    pending: Mutex<Pending>,
    /// Held for the whole of a round (take, fsync, fire), so rounds never overlap.
    round: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for FlushQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlushQueue")
    }
}

impl FlushQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `callback` for entries already written; fires it after the next fsync.
    pub(crate) fn push(storage: &Arc<GroupStorage>, callback: Callback) {
        let start = {
            let mut p = storage.flush.lock();
            p.callbacks.push(callback);
            !mem::replace(&mut p.running, true)
        };
        if start {
            let storage = storage.clone();
            let span = tracing::debug_span!("flush", group_id = %storage.group);
            tokio::spawn(
                async move { while storage.flush.round(&storage, true).await {} }.instrument(span),
            );
        }
    }

    /// Runs rounds until every callback queued before the call has fired.
    pub(crate) async fn drain(&self, storage: &Arc<GroupStorage>) {
        while self.round(storage, false).await {}
    }

    /// One round: take every queued callback, fsync once, fire them in order. Returns
    /// false when there was nothing to do (and, for the round task, marks it stopped
    /// under the same lock that `push` takes, so that no callback is left behind).
    async fn round(&self, storage: &Arc<GroupStorage>, is_task: bool) -> bool {
        let _round = self.round.lock().await;
        let callbacks = {
            let mut p = self.lock();
            if p.callbacks.is_empty() {
                if is_task {
                    p.running = false;
                }
                return false;
            }
            mem::take(&mut p.callbacks)
        };
        let s = storage.clone();
        let result = match blocking(move || s.sync()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        tracing::trace!(appends = callbacks.len(), ok = result.is_ok(), "flushed");
        for cb in callbacks {
            cb.io_completed(result.clone().map_err(std::io::Error::other));
        }
        true
    }
}
