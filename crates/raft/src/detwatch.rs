//! A watch channel whose wake-up order is deterministic, for openraft's
//! `AsyncRuntime::Watch` and for the commit watch readers park on.
//!
//! Why not `tokio::sync::watch`: it spreads waiting receivers over 8 `Notify` slots
//! picked by tokio's thread-local RNG, which is seeded from a process-wide counter and
//! not from madsim. Two runs of one seed in one process then wake receivers in
//! different orders, and `MADSIM_TEST_CHECK_DETERMINISM` fails. Here every receiver
//! waits on one `tokio::sync::Notify`, whose waiter list is first-in, first-out: the
//! order of wake-ups follows only the order of `changed()` calls.
//!
//! The value sits behind an `RwLock`; a version counter says whether a receiver has
//! seen the latest value.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use openraft::rt::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use openraft::{OptionalSend, OptionalSync};
use tokio::sync::Notify;

/// The channel family, for `AsyncRuntime::Watch`.
pub struct DetWatch;

struct Shared<T> {
    value: RwLock<T>,
    /// Bumped on every change; a receiver remembers the last one it saw.
    version: AtomicU64,
    notify: Notify,
    senders: AtomicUsize,
    receivers: AtomicUsize,
}

impl<T> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, T> {
        // A panic while holding the lock cannot leave a half-written value: writers
        // replace or modify it in place through code that does not panic midway.
        self.value.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half. Dropping the last one closes the channel.
pub struct DetSender<T>(Arc<Shared<T>>);

/// The receiving half.
pub struct DetReceiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

/// A new channel holding `init`.
pub fn channel<T>(init: T) -> (DetSender<T>, DetReceiver<T>) {
    let shared = Arc::new(Shared {
        value: RwLock::new(init),
        version: AtomicU64::new(0),
        notify: Notify::new(),
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
    });
    (DetSender(shared.clone()), DetReceiver { shared, seen: 0 })
}

impl<T> Clone for DetSender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::SeqCst);
        DetSender(self.0.clone())
    }
}

impl<T> Drop for DetSender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Closed: wake every receiver so that it sees the error.
            self.0.notify.notify_waiters();
        }
    }
}

impl<T> Clone for DetReceiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        DetReceiver {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Drop for DetReceiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> DetSender<T> {
    /// Replaces the value and wakes receivers, even if none is left (unlike
    /// [`WatchSender::send`], which refuses then): a commit watch may gain receivers
    /// later.
    pub fn send_replace(&self, value: T) {
        *self.0.value.write().unwrap_or_else(PoisonError::into_inner) = value;
        self.0.version.fetch_add(1, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Applies `modify`; wakes receivers if it says it changed the value.
    pub fn modify(&self, modify: impl FnOnce(&mut T) -> bool) -> bool {
        let changed = {
            let mut value = self.0.value.write().unwrap_or_else(PoisonError::into_inner);
            let changed = modify(&mut value);
            if changed {
                self.0.version.fetch_add(1, Ordering::SeqCst);
            }
            changed
        };
        if changed {
            self.0.notify.notify_waiters();
        }
        changed
    }

    pub fn borrow(&self) -> RwLockReadGuard<'_, T> {
        self.0.read()
    }

    pub fn new_receiver(&self) -> DetReceiver<T> {
        self.0.receivers.fetch_add(1, Ordering::SeqCst);
        let seen = self.0.version.load(Ordering::SeqCst);
        DetReceiver {
            shared: self.0.clone(),
            seen,
        }
    }
}

impl<T> DetReceiver<T> {
    /// Waits until the value changes after the last one this receiver saw; fails once
    /// every sender is gone.
    pub async fn wait_changed(&mut self) -> Result<(), RecvError> {
        loop {
            let notified = self.shared.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Register before checking, so that a change between the check and the
            // await still wakes us.
            notified.as_mut().enable();
            let version = self.shared.version.load(Ordering::SeqCst);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.senders.load(Ordering::SeqCst) == 0 {
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    pub fn borrow(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    pub fn borrow_seen(&mut self) -> RwLockReadGuard<'_, T> {
        let guard = self.shared.read();
        self.seen = self.shared.version.load(Ordering::SeqCst);
        guard
    }
}

impl Watch for DetWatch {
    type Sender<T: OptionalSend + OptionalSync> = DetSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = DetReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (DetSender<T>, DetReceiver<T>) {
        channel(init)
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<DetWatch, T> for DetSender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.0.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(value));
        }
        self.send_replace(value);
        Ok(())
    }

    fn send_if_modified<F: FnOnce(&mut T) -> bool>(&self, modify: F) -> bool {
        self.modify(modify)
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.borrow()
    }

    fn subscribe(&self) -> DetReceiver<T> {
        self.new_receiver()
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<DetWatch, T> for DetReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        self.wait_changed().await
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.borrow()
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        self.borrow_seen()
    }
}
