//! A `Send` timeout over whatever `tokio` is in scope. madsim's own `timeout` future is
//! not `Send`, so the SDK races the future against a sleep, polling the future first
//! (`biased`) so that the outcome never depends on a random poll order.

use std::future::Future;
use std::time::Duration;

/// The timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// `fut`, or [`Elapsed`] once `duration` has passed.
pub(crate) async fn timeout<F: Future>(duration: Duration, fut: F) -> Result<F::Output, Elapsed> {
    tokio::select! {
        biased;
        v = fut => Ok(v),
        _ = tokio::time::sleep(duration) => Err(Elapsed),
    }
}
