//! openraft's [`AsyncRuntime`] over whatever `tokio` is in scope: real tokio in normal
//! builds, madsim's simulated one under `--cfg madsim` (the workspace renames
//! `madsim-tokio` to `tokio`).
//!
//! Why our own and not `openraft_rt_tokio::TokioRuntime`:
//! - election timeouts are random; in simulation the randomness must come from madsim's
//!   seeded RNG, or a seed would not replay;
//! - tokio's watch channel wakes receivers in an order chosen by tokio's process-wide
//!   RNG, which madsim does not seed: we use [`DetWatch`](crate::detwatch::DetWatch);
//! - madsim's `timeout` future is not `Send` and it has no `timeout_at`: [`Timeout`] is
//!   a plain select of the future against a sleep;
//! - the default `spawn_blocking` starts an OS thread, which madsim refuses.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend};
use openraft_rt_tokio::{TokioMpsc, TokioMutex, TokioOneshot};
use rand::SeedableRng;

/// The runtime every Runnel Raft group runs on.
#[derive(Debug, Default)]
pub struct RunnelRt;

impl AsyncRuntime for RunnelRt {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    // Under madsim the clock calls behind `std::time::Instant` are simulated.
    type Instant = std::time::Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::StdRng;
    type Mpsc = TokioMpsc;
    type Watch = crate::detwatch::DetWatch;
    type Oneshot = TokioOneshot;
    type Mutex<T: OptionalSend + 'static> = TokioMutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout::new(future, tokio::time::sleep(duration))
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout::new(future, tokio::time::sleep_until(deadline.into()))
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand::rngs::StdRng::seed_from_u64(random_seed())
    }

    fn new(_threads: usize) -> Self {
        RunnelRt
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        #[cfg(madsim)]
        {
            madsim::runtime::Runtime::new().block_on(future)
        }
        #[cfg(not(madsim))]
        {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread tokio runtime builds unless the OS is out of resources")
                .block_on(future)
        }
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        crate::io::blocking(f)
    }
}

/// A seed for election randomness: madsim's seeded RNG in simulation, so that a seed
/// replays; the OS's otherwise.
fn random_seed() -> u64 {
    #[cfg(madsim)]
    {
        madsim::rand::random()
    }
    #[cfg(not(madsim))]
    {
        rand::random()
    }
}

/// The error of a [`Timeout`] that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// A future raced against a sleep. The future is polled first, so that a result that is
/// ready at the deadline wins (and the outcome does not depend on poll order).
pub struct Timeout<T> {
    future: Pin<Box<T>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Timeout<T> {
    fn new(future: T, sleep: tokio::time::Sleep) -> Self {
        Timeout {
            future: Box::pin(future),
            sleep: Box::pin(sleep),
        }
    }
}

impl<T: Future> Future for Timeout<T> {
    type Output = Result<T::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `future` raced against `duration`: a `Send` timeout in both modes.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout::new(future, tokio::time::sleep(duration))
}
