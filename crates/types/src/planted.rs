//! Planted bugs: faults put into the real code on purpose, so that the simulation
//! (`simulation/`) can show that its checkers catch them. Compiled only with the
//! `planted-bugs` feature (off by default, used only by the simulation's own tests);
//! without it [`enabled`] is a `const fn` returning `false`, so every hook folds away
//! and normal builds carry nothing.

/// One planted bug. Each hook in the code names the one it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `raft` log storage: report `IOFlushed` without fsyncing the appended entries (of
    /// shard groups; the meta group stays correct).
    AckBeforeSync = 0,
    /// `raft` reads: serve entries past the commit point.
    ReadPastCommit = 1,
    /// `raft` log storage: `truncate_after` leaves the conflicting suffix in place.
    SkipTruncate = 2,
    /// `log` recovery: forget the persisted purge (trim) point on reopen.
    LoseTrimPoint = 3,
}

#[cfg(feature = "planted-bugs")]
mod switch {
    use std::cell::Cell;

    thread_local! {
        /// Per thread: madsim runs a whole simulated cluster on the thread that calls
        /// `block_on` (disk I/O included), so a switch set there reaches every hook of
        /// that run and no other, and several seeds, with different bugs, can run side
        /// by side in one process.
        static ON: [Cell<bool>; 4] = const { [const { Cell::new(false) }; 4] };
    }

    /// Whether `bug` is switched on (in this thread).
    pub fn enabled(bug: super::Bug) -> bool {
        ON.with(|on| on[bug as usize].get())
    }

    /// Switches `bug` on or off in this thread: the simulated cluster that this thread
    /// runs next has it.
    pub fn set(bug: super::Bug, on: bool) {
        ON.with(|o| o[bug as usize].set(on));
    }
}

#[cfg(feature = "planted-bugs")]
pub use switch::{enabled, set};

/// Whether `bug` is switched on: never, without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
pub const fn enabled(_bug: Bug) -> bool {
    false
}
