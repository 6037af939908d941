//! The batching accumulator: one queue per shard, and the pure decision of which
//! batches are ready to send. Time is a `Duration` since the producer started, passed
//! in by the caller, so that tests drive it without a clock.
//!
//! A shard's batch is ready when it is full (records or bytes), when its oldest record
//! has waited `linger`, or when the producer flushes; never while the shard is backing
//! off or has `in_flight_max` requests out. Retried records go back to the *front* of
//! their queue, so with one request in flight per shard the order of a key is kept.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The bounds of one batch and of a shard's concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Records per `PutRecords` call (at most 500).
    pub records_max: usize,
    /// Bytes of keys and data per call (at most 5 MiB).
    pub bytes_max: usize,
    /// How long the oldest record of a batch may wait for company.
    pub linger: Duration,
    /// Requests in flight per shard.
    pub in_flight_max: usize,
}

/// One queued item with its size and arrival time.
#[derive(Debug)]
pub struct Entry<T> {
    /// The payload (the producer's pending record).
    pub item: T,
    /// Its size against `bytes_max`.
    pub bytes: usize,
    /// When it arrived (since the producer started).
    pub at: Duration,
}

#[derive(Debug)]
struct Queue<T> {
    entries: VecDeque<Entry<T>>,
    bytes: usize,
    blocked_until: Duration,
    in_flight: usize,
    failures: u32,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            entries: VecDeque::new(),
            bytes: 0,
            blocked_until: Duration::ZERO,
            in_flight: 0,
            failures: 0,
        }
    }
}

impl<T> Queue<T> {
    fn full(&self, limits: &BatchLimits) -> bool {
        self.entries.len() >= limits.records_max || self.bytes >= limits.bytes_max
    }

    /// When this queue's next batch may go, if it has anything to send.
    fn due(&self, limits: &BatchLimits, flushing: bool) -> Option<Duration> {
        let front = self.entries.front()?;
        if self.in_flight >= limits.in_flight_max {
            return None;
        }
        let formed = if flushing || self.full(limits) {
            Duration::ZERO
        } else {
            front.at + limits.linger
        };
        Some(formed.max(self.blocked_until))
    }
}

/// Per-shard queues of items waiting to be sent.
#[derive(Debug)]
pub struct Accumulator<T> {
    limits: BatchLimits,
    queues: BTreeMap<String, Queue<T>>,
    len: usize,
}

impl<T> Accumulator<T> {
    /// An empty accumulator.
    pub fn new(limits: BatchLimits) -> Accumulator<T> {
        Accumulator {
            limits,
            queues: BTreeMap::new(),
            len: 0,
        }
    }

    /// Items queued (not counting those in flight).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Requests in flight, over every shard.
    pub fn in_flight(&self) -> usize {
        self.queues.values().map(|q| q.in_flight).sum()
    }

    /// Queues `item` for `shard` at the back.
    pub fn push(&mut self, shard: &str, item: T, bytes: usize, now: Duration) {
        // Look up before inserting: `entry` would allocate the key for every record.
        let q = if self.queues.contains_key(shard) {
            self.queues.get_mut(shard).expect("checked just above")
        } else {
            self.queues.entry(shard.to_string()).or_default()
        };
        q.bytes += bytes;
        q.entries.push_back(Entry {
            item,
            bytes,
            at: now,
        });
        self.len += 1;
    }

    /// Puts failed entries back at the front of `shard`'s queue, in their order.
    pub fn push_front(&mut self, shard: &str, entries: Vec<Entry<T>>) {
        let q = self.queues.entry(shard.to_string()).or_default();
        self.len += entries.len();
        for e in entries.into_iter().rev() {
            q.bytes += e.bytes;
            q.entries.push_front(e);
        }
    }

    /// Holds `shard` back until `until` (a backoff).
    pub fn block(&mut self, shard: &str, until: Duration) {
        let q = self.queues.entry(shard.to_string()).or_default();
        q.blocked_until = q.blocked_until.max(until);
    }

    /// Takes every batch that may go now; each counts as in flight until [`done`](Self::done).
    pub fn ready(&mut self, now: Duration, flushing: bool) -> Vec<(String, Vec<Entry<T>>)> {
        let limits = self.limits;
        let mut out = Vec::new();
        for (shard, q) in self.queues.iter_mut() {
            while q.due(&limits, flushing).is_some_and(|due| due <= now) {
                let batch = take_batch(q, &limits);
                self.len -= batch.len();
                q.in_flight += 1;
                out.push((shard.clone(), batch));
            }
        }
        out
    }

    /// A request for `shard` finished; returns the shard's consecutive failures so far
    /// (0 after a success), which the caller turns into a backoff.
    pub fn done(&mut self, shard: &str, success: bool) -> u32 {
        let q = self.queues.entry(shard.to_string()).or_default();
        q.in_flight = q.in_flight.saturating_sub(1);
        q.failures = if success {
            0
        } else {
            q.failures.saturating_add(1)
        };
        q.failures
    }

    /// The earliest time a batch may become ready, if anything is queued that can go.
    pub fn next_wakeup(&self, flushing: bool) -> Option<Duration> {
        self.queues
            .values()
            .filter_map(|q| q.due(&self.limits, flushing))
            .min()
    }

    /// Removes every queued entry (to route it again with a new shard map), shard by
    /// shard, each shard's in order. In-flight counts and failure counts stay.
    pub fn drain(&mut self) -> Vec<Entry<T>> {
        let mut out = Vec::with_capacity(self.len);
        for q in self.queues.values_mut() {
            q.bytes = 0;
            q.blocked_until = Duration::ZERO;
            out.extend(q.entries.drain(..));
        }
        self.queues.retain(|_, q| q.in_flight > 0);
        self.len = 0;
        out
    }
}

fn take_batch<T>(q: &mut Queue<T>, limits: &BatchLimits) -> Vec<Entry<T>> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(front) = q.entries.front() {
        let fits = batch.is_empty()
            || (batch.len() < limits.records_max && bytes + front.bytes <= limits.bytes_max);
        if !fits {
            break;
        }
        let Some(e) = q.entries.pop_front() else {
            break;
        };
        bytes += e.bytes;
        q.bytes -= e.bytes;
        batch.push(e);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> BatchLimits {
        BatchLimits {
            records_max: 3,
            bytes_max: 100,
            linger: 10 * MS,
            in_flight_max: 1,
        }
    }

    fn items<T: Copy>(batch: &[Entry<T>]) -> Vec<T> {
        batch.iter().map(|e| e.item).collect()
    }

    #[test]
    fn a_batch_waits_for_linger_unless_full() {
        let mut acc = Accumulator::new(limits());
        acc.push("s1", 1, 10, Duration::ZERO);
        acc.push("s1", 2, 10, 2 * MS);
        assert!(acc.ready(5 * MS, false).is_empty());
        assert_eq!(acc.next_wakeup(false), Some(10 * MS));
        let ready = acc.ready(10 * MS, false);
        assert_eq!(ready.len(), 1);
        assert_eq!(items(&ready[0].1), vec![1, 2]);
        // Full by count: ready at once.
        let mut acc = Accumulator::new(BatchLimits {
            in_flight_max: 4,
            ..limits()
        });
        for i in 0..7 {
            acc.push("s1", i, 1, Duration::ZERO);
        }
        let ready = acc.ready(Duration::ZERO, false);
        assert_eq!(
            ready.iter().map(|(_, b)| items(b)).collect::<Vec<_>>(),
            vec![vec![0, 1, 2], vec![3, 4, 5]]
        );
        assert_eq!(acc.len(), 1);
        assert_eq!(acc.next_wakeup(false), Some(10 * MS));
    }

    #[test]
    fn bytes_bound_a_batch_but_one_big_item_still_goes() {
        let mut acc = Accumulator::new(BatchLimits {
            in_flight_max: 9,
            ..limits()
        });
        acc.push("s", 'a', 60, Duration::ZERO);
        acc.push("s", 'b', 60, Duration::ZERO);
        acc.push("s", 'c', 500, Duration::ZERO);
        let ready = acc.ready(Duration::ZERO, false);
        let batches: Vec<Vec<char>> = ready.iter().map(|(_, b)| items(b)).collect();
        assert_eq!(batches, vec![vec!['a'], vec!['b'], vec!['c']]);
    }

    #[test]
    fn in_flight_limit_and_backoff_hold_a_shard() {
        let mut acc = Accumulator::new(limits());
        acc.push("s", 1, 1, Duration::ZERO);
        let first = acc.ready(20 * MS, true);
        assert_eq!(first.len(), 1);
        acc.push("s", 2, 1, 20 * MS);
        assert!(
            acc.ready(100 * MS, true).is_empty(),
            "one in flight at a time"
        );
        assert_eq!(acc.next_wakeup(true), None);
        // The first request failed: back to the front, held back until 150 ms.
        let (_, batch) = first.into_iter().next().expect("one batch");
        assert_eq!(acc.done("s", false), 1);
        acc.push_front("s", batch);
        acc.block("s", 150 * MS);
        assert!(acc.ready(120 * MS, true).is_empty());
        assert_eq!(acc.next_wakeup(true), Some(150 * MS));
        let again = acc.ready(150 * MS, false);
        assert_eq!(
            items(&again[0].1),
            vec![1, 2],
            "the retried record keeps its place"
        );
        assert_eq!(acc.done("s", true), 0);
    }

    #[test]
    fn flushing_skips_linger_and_drain_empties_in_order() {
        let mut acc = Accumulator::new(BatchLimits {
            in_flight_max: 2,
            ..limits()
        });
        acc.push("b", 3, 1, Duration::ZERO);
        acc.push("a", 1, 1, Duration::ZERO);
        acc.push("a", 2, 1, Duration::ZERO);
        assert_eq!(acc.next_wakeup(true), Some(Duration::ZERO));
        let drained: Vec<i32> = acc.drain().into_iter().map(|e| e.item).collect();
        assert_eq!(drained, vec![1, 2, 3]);
        assert!(acc.is_empty());
        assert_eq!(acc.next_wakeup(true), None);
    }
}
