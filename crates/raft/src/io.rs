//! Where synchronous disk I/O runs.
//!
//! The segment log and the node metadata store are synchronous (`write`, `fdatasync`).
//! Calling them on an async worker would stall every other group's task on that worker
//! for the length of an fsync. The choice:
//!
//! - **Real builds**: [`blocking`] hands the closure to tokio's blocking pool
//!   (`spawn_blocking`) and awaits it. It works on both the current-thread and the
//!   multi-thread runtime (unlike `block_in_place`), and the pool is bounded (tokio's
//!   default, 512 threads). Order is preserved per group without a dedicated thread:
//!   openraft drives each group's storage through `&mut self`, one call at a time, and
//!   every call awaits its I/O before returning, so two operations of one group never
//!   run at the same time. Different groups fsync in parallel.
//! - **Simulation** (`cfg(madsim)`): madsim refuses OS threads, and its simulated disk
//!   is memory, so the closure runs inline.

use std::io;

/// Runs `f`, which may block on disk I/O, without blocking the async runtime.
pub async fn blocking<F, T>(f: F) -> Result<T, io::Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    #[cfg(madsim)]
    {
        Ok(f())
    }
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| io::Error::other(format!("blocking I/O task failed: {e}")))
    }
}
