//! `bench produce`: `--producers` tasks, each with its own SDK producer, write records
//! of `--record-size` bytes under random keys until `--records` or `--duration`, paced
//! at `--rate` when given. Each producer task awaits its records' acknowledgements
//! itself (a [`Timed`] future per record in one `FuturesUnordered`), and settles them
//! whenever it would otherwise wait (for the next send time, for room under
//! `--in-flight`, for the SDK's buffer), so that the measured latency ends when the ack
//! arrives. It used to spawn a task per record for that: half of this process's CPU
//! went to spawning, scheduling and joining them, taken from the nodes it measures on
//! a small machine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use runnel_client::{Client, ClientError, ProducerConfig, PutHandle, Record};

use super::stats::{Phase, histogram};
use super::{BenchArgs, progress};
use crate::error::{CliError, Doing};
use crate::put::KeyGen;

/// What the producers share: the record budget, the deadline, the progress bar, and
/// for `e2e` the run id stamped into each payload.
struct Shared {
    claimed: AtomicU64,
    limit: Option<u64>,
    deadline: Option<Instant>,
    bar: ProgressBar,
    stamp: Option<u64>,
}

impl Shared {
    /// Takes one record from the budget; false once it is spent or time is up.
    fn claim(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match self.limit {
            Some(l) => self.claimed.fetch_add(1, Ordering::Relaxed) < l,
            None => true,
        }
    }
}

/// One producer's tally.
struct Tally {
    records: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

/// An acknowledgement and its latency.
type Acked = (Result<(), ClientError>, Duration);

/// A record's acknowledgement, timed from `sent` to the poll that sees it.
struct Timed {
    handle: PutHandle,
    sent: Instant,
}

impl Future for Timed {
    type Output = Acked;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Acked> {
        let sent = self.sent;
        Pin::new(&mut self.handle)
            .poll(cx)
            .map(|r| (r.map(drop), sent.elapsed()))
    }
}

/// Runs the producers. With `stamp` (the e2e run id), each payload starts with the
/// header of [`super::e2e::payload`].
pub async fn run(client: &Client, a: &BenchArgs, stamp: Option<u64>) -> Result<Phase, CliError> {
    let limit = a.write_records();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        claimed: AtomicU64::new(0),
        limit,
        deadline: a.duration.map(|d| started + d),
        bar: progress(limit, "producing"),
        stamp,
    });
    let mut tasks = Vec::new();
    for i in 0..a.producers {
        let producer = client
            .producer(&a.stream, producer_config(a))
            .doing(|| "starting a producer".into())?;
        let task = producer_task(producer, a.clone(), i as u64, shared.clone());
        tasks.push(tokio::spawn(task));
    }
    let mut total = Tally {
        records: 0,
        bytes: 0,
        errors: 0,
        first_error: None,
        latency_us: histogram(),
    };
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| CliError::Failed(format!("a producer task failed: {e}")))?;
        total.records += tally.records;
        total.bytes += tally.bytes;
        total.errors += tally.errors;
        total.first_error = total.first_error.or(tally.first_error);
        let _ = total.latency_us.add(&tally.latency_us);
    }
    shared.bar.finish_and_clear();
    Ok(Phase {
        name: "produce",
        records: total.records,
        bytes: total.bytes,
        errors: total.errors,
        first_error: total.first_error,
        elapsed: started.elapsed(),
        latency_of: "send to acknowledgement",
        latency_us: total.latency_us,
    })
}

fn producer_config(a: &BenchArgs) -> ProducerConfig {
    ProducerConfig {
        linger: a.linger,
        buffer_records_max: a.in_flight.max(1),
        ..ProducerConfig::default()
    }
}

async fn producer_task(
    producer: runnel_client::Producer,
    a: BenchArgs,
    index: u64,
    shared: Arc<Shared>,
) -> Tally {
    let mut keys = KeyGen::new(KeyGen::from_clock().next_u64() ^ index);
    let filler = filler(a.record_size, &mut keys);
    let rate = a.rate as f64 / a.producers as f64;
    let started = Instant::now();
    let mut tally = Tally {
        records: 0,
        bytes: 0,
        errors: 0,
        first_error: None,
        latency_us: histogram(),
    };
    let mut acks: FuturesUnordered<Timed> = FuturesUnordered::new();
    let mut sent: u64 = 0;
    while shared.claim() {
        // Wait for this record's send time (paced runs) and for room under --in-flight,
        // settling acknowledgements meanwhile.
        let due = (rate > 0.0).then(|| started + Duration::from_secs_f64(sent as f64 / rate));
        loop {
            let room = acks.len() < a.in_flight;
            let time = due.is_none_or(|d| Instant::now() >= d);
            if room && time {
                break;
            }
            let until = due.unwrap_or_else(Instant::now);
            tokio::select! {
                done = acks.next(), if !acks.is_empty() => {
                    settle(done, &mut tally, &shared.bar, a.record_size);
                }
                _ = tokio::time::sleep_until(until.into()), if room => {}
            }
        }
        let data = match shared.stamp {
            Some(run) => super::e2e::payload(run, &filler),
            None => filler.clone(),
        };
        let record = Record::new(keys.key(), data);
        let t0 = Instant::now();
        // The SDK's buffer may be full: settle acknowledgements while it makes room.
        let enqueue = producer.enqueue(record);
        tokio::pin!(enqueue);
        let queued = loop {
            tokio::select! {
                r = &mut enqueue => break r,
                done = acks.next(), if !acks.is_empty() => {
                    settle(done, &mut tally, &shared.bar, a.record_size);
                }
            }
        };
        match queued {
            Ok(handle) => acks.push(Timed { handle, sent: t0 }),
            Err(e) => note_error(&mut tally, e.to_string()),
        }
        sent += 1;
    }
    while let Some(done) = acks.next().await {
        settle(Some(done), &mut tally, &shared.bar, a.record_size);
    }
    let _ = producer.close().await;
    tally
}

fn settle(done: Option<Acked>, tally: &mut Tally, bar: &ProgressBar, record_size: usize) {
    match done {
        Some((Ok(()), latency)) => {
            tally.records += 1;
            tally.bytes += record_size as u64;
            tally
                .latency_us
                .saturating_record(latency.as_micros().max(1) as u64);
            bar.inc(1);
        }
        Some((Err(e), _)) => note_error(tally, e.to_string()),
        None => {}
    }
}

fn note_error(tally: &mut Tally, e: String) {
    tally.errors += 1;
    if tally.first_error.is_none() {
        tally.first_error = Some(e);
    }
}

/// `size` pseudo-random bytes: data that does not compress, shared by every record.
fn filler(size: usize, keys: &mut KeyGen) -> Bytes {
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&keys.next_u64().to_le_bytes());
    }
    v.truncate(size);
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_has_the_size() {
        let mut k = KeyGen::new(1);
        assert_eq!(filler(1024, &mut k).len(), 1024);
        assert_eq!(filler(3, &mut k).len(), 3);
    }

    #[test]
    fn the_budget_is_shared() {
        let s = Shared {
            claimed: AtomicU64::new(0),
            limit: Some(2),
            deadline: None,
            bar: ProgressBar::hidden(),
            stamp: None,
        };
        assert!(s.claim() && s.claim() && !s.claim());
    }
}
