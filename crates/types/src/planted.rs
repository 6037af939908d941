//! Planted bugs: faults put into the real code on purpose, so that the simulation
//! (`simulation/`) can show that its checkers catch them. Compiled only with the
//! `planted-bugs` feature (off by default, used only by the simulation's own tests);
//! without it [`enabled`] is a `const fn` returning `false`, so every hook folds away
//! and normal builds carry nothing.

/// One planted bug. Each hook in the code names the one it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `raft` log storage: report `IOFlushed` without fsyncing the appended entries.
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
    use std::sync::atomic::{AtomicBool, Ordering};

    static ON: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];

    /// Whether `bug` is switched on.
    pub fn enabled(bug: super::Bug) -> bool {
        ON[bug as usize].load(Ordering::Relaxed)
    }

    /// Switches `bug` on or off (process-wide; the simulation runs one seed at a time
    /// per process when it plants bugs).
    pub fn set(bug: super::Bug, on: bool) {
        ON[bug as usize].store(on, Ordering::Relaxed);
    }
}

#[cfg(feature = "planted-bugs")]
pub use switch::{enabled, set};

/// Whether `bug` is switched on: never, without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
pub const fn enabled(_bug: Bug) -> bool {
    false
}
