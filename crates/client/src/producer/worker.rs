//! The producer's background task: routes queued records to shards, sends ready
//! batches (one task per `PutRecords` call), and turns each answer into results,
//! retries, redirects and shard-map refreshes.
//!
//! Retries follow one rule: a record is sent again only if its own result (or its whole
//! request's) was a retryable error; a record that was stored is never sent twice.
//! Errors that leave the outcome unknown are retried only with `retry_unknown_outcome`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use runnel_proto::v1 as pb;
use runnel_types::{HashKey, Record};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::accumulator::{Accumulator, BatchLimits, Entry};
use super::{ProducerConfig, PutResult};
use crate::backoff::Jitter;
use crate::client::{Client, answer};
use crate::error::ClientError;
use crate::router::ShardMap;

/// Redirects to a hinted leader before a shard starts backing off.
const FREE_REDIRECTS: u32 = 3;

/// What the [`Producer`](super::Producer) asks of its task.
pub(super) enum Cmd {
    Put(Box<Pending>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// One accepted record until its result is known.
pub(super) struct Pending {
    id: u64,
    record: Record,
    hash_key: HashKey,
    tx: oneshot::Sender<Result<PutResult, ClientError>>,
    /// Since the producer started.
    deadline: Duration,
    attempts: u32,
    last_error: Option<ClientError>,
    /// Buffer space, given back when the record resolves (dropped).
    _permits: [OwnedSemaphorePermit; 2],
}

impl Pending {
    pub(super) fn new(
        record: Record,
        _size: usize,
        tx: oneshot::Sender<Result<PutResult, ClientError>>,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Pending {
        let hash_key = record.hash_key();
        Pending {
            id: 0,
            record,
            hash_key,
            tx,
            deadline: Duration::ZERO,
            attempts: 0,
            last_error: None,
            _permits: permits,
        }
    }

    fn size(&self) -> usize {
        self.record.partition_key.len() + self.record.data.len()
    }
}

/// What finished in the background.
enum Done {
    Batch {
        shard: String,
        entries: Vec<Entry<Pending>>,
        outcome: Result<pb::PutRecordsResponse, ClientError>,
    },
    Map(Result<Arc<ShardMap>, ClientError>),
}

pub(super) fn spawn(
    client: Client,
    stream: String,
    config: ProducerConfig,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let limits = BatchLimits {
        records_max: config.batch_records_max,
        bytes_max: config.batch_bytes_max,
        linger: config.linger,
        in_flight_max: config.in_flight_per_shard_max,
    };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let worker = Worker {
        jitter: client.fork_jitter(),
        client,
        stream,
        config,
        start: Instant::now(),
        acc: Accumulator::new(limits),
        map: None,
        unrouted: VecDeque::new(),
        map_fetching: false,
        map_retry_at: None,
        map_failures: 0,
        next_id: 0,
        outstanding: BTreeSet::new(),
        flushes: Vec::new(),
        closing: None,
        done_tx,
    };
    let span = tracing::debug_span!("producer", stream = %worker.stream);
    tokio::spawn(worker.run(cmd_rx, done_rx).instrument(span));
}

struct Worker {
    client: Client,
    stream: String,
    config: ProducerConfig,
    start: Instant,
    jitter: Jitter,
    acc: Accumulator<Pending>,
    map: Option<Arc<ShardMap>>,
    /// Records with no shard yet (no map, or a hole in it).
    unrouted: VecDeque<Pending>,
    map_fetching: bool,
    map_retry_at: Option<Duration>,
    map_failures: u32,
    next_id: u64,
    /// Ids of records accepted and not yet resolved.
    outstanding: BTreeSet<u64>,
    /// Flush waiters: done once every id up to the mark has resolved.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    closing: Option<Vec<oneshot::Sender<()>>>,
    done_tx: mpsc::UnboundedSender<Done>,
}

impl Worker {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
    ) {
        let mut commands_open = true;
        loop {
            self.dispatch();
            self.resolve_flushes();
            if (!commands_open || self.closing.is_some()) && self.outstanding.is_empty() {
                break;
            }
            let wake = self.next_wakeup().map(|d| self.start + d);
            let sleep_until = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                Some(done) = done_rx.recv() => self.on_done(done),
                cmd = cmd_rx.recv(), if commands_open && self.closing.is_none() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => commands_open = false,
                },
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
        }
        for tx in self.closing.take().unwrap_or_default() {
            let _ = tx.send(());
        }
        tracing::debug!("producer stopped");
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn flushing(&self) -> bool {
        !self.flushes.is_empty() || self.closing.is_some()
    }

    fn next_wakeup(&self) -> Option<Duration> {
        let map = if self.unrouted.is_empty() || self.map_fetching {
            None
        } else {
            self.map_retry_at
        };
        [self.acc.next_wakeup(self.flushing()), map]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Put(mut p) => {
                p.id = self.next_id;
                self.next_id += 1;
                p.deadline = self.now() + self.config.delivery_timeout;
                self.outstanding.insert(p.id);
                self.route(*p);
            }
            Cmd::Flush(tx) => self.flushes.push((self.next_id, tx)),
            Cmd::Close(tx) => self.closing.get_or_insert_with(Vec::new).push(tx),
        }
    }

    /// Queues a record for its shard, or holds it until a map can route it.
    fn route(&mut self, p: Pending) {
        let now = self.now();
        // Borrows the map's shard id (no allocation per record).
        let shard = self.map.as_ref().and_then(|m| m.route_key(p.hash_key));
        match shard {
            Some(s) => {
                let size = p.size();
                self.acc.push(&s.shard_id, p, size, now);
            }
            None => {
                self.unrouted.push_back(p);
                if self.map.is_some() && self.map_retry_at.is_none() {
                    // A hole in the map: a split is under way; look again shortly.
                    self.map_retry_at = Some(self.now() + self.client.backoff_delay(0, None));
                }
            }
        }
    }

    fn dispatch(&mut self) {
        let now = self.now();
        let map_due = self.map.is_none() || self.map_retry_at.is_some_and(|t| t <= now);
        if !self.unrouted.is_empty() && map_due {
            self.fetch_map();
        }
        for (shard, entries) in self.acc.ready(now, self.flushing()) {
            self.send_batch(shard, entries);
        }
    }

    fn fetch_map(&mut self) {
        if self.map_fetching {
            return;
        }
        self.map_fetching = true;
        self.map_retry_at = None;
        let (client, stream, tx) = (
            self.client.clone(),
            self.stream.clone(),
            self.done_tx.clone(),
        );
        tokio::spawn(async move {
            let _ = tx.send(Done::Map(client.refresh_shard_map(&stream).await));
        });
    }

    fn send_batch(&mut self, shard: String, entries: Vec<Entry<Pending>>) {
        let req = pb::PutRecordsRequest {
            stream_name: self.stream.clone(),
            records: entries
                .iter()
                .map(|e| pb::PutRecordsRequestEntry {
                    partition_key: e.item.record.partition_key.clone(),
                    data: e.item.record.data.clone(),
                    explicit_hash_key: e.item.record.explicit_hash_key.map(|k| k.to_string()),
                })
                .collect(),
        };
        let (client, stream, tx) = (
            self.client.clone(),
            self.stream.clone(),
            self.done_tx.clone(),
        );
        tokio::spawn(async move {
            let address = client.leader_address(&stream, &shard).await;
            let call = async { answer(&address, client.records(&address)?.put_records(req).await) };
            let outcome = client.timed(&address, call).await;
            let _ = tx.send(Done::Batch {
                shard,
                entries,
                outcome,
            });
        });
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Map(result) => self.on_map(result),
            Done::Batch {
                shard,
                entries,
                outcome,
            } => match outcome {
                Ok(resp) => self.on_answer(&shard, entries, resp),
                Err(e) => self.on_request_error(&shard, entries, e),
            },
        }
    }

    fn on_map(&mut self, result: Result<Arc<ShardMap>, ClientError>) {
        self.map_fetching = false;
        match result {
            Ok(map) => {
                self.map_failures = 0;
                self.map = Some(map);
                // Route everything queued again: shards may have closed or appeared.
                let queued: Vec<Pending> = self.acc.drain().into_iter().map(|e| e.item).collect();
                let unrouted: Vec<Pending> = self.unrouted.drain(..).collect();
                for p in unrouted.into_iter().chain(queued) {
                    self.route(p);
                }
            }
            Err(e) if e.is_retryable() => {
                let delay = self
                    .client
                    .backoff_delay(self.map_failures, e.retry_after());
                self.map_failures += 1;
                let retry_at = self.now() + delay;
                self.map_retry_at = Some(retry_at);
                let unrouted: Vec<Pending> = self.unrouted.drain(..).collect();
                for mut p in unrouted {
                    p.last_error = Some(e.clone());
                    if retry_at > p.deadline {
                        self.fail_deadline(p);
                    } else {
                        self.unrouted.push_back(p);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the shard map; failing the records that wait for it");
                for p in self.unrouted.drain(..).collect::<Vec<_>>() {
                    self.resolve(p, Err(e.clone()));
                }
            }
        }
    }

    fn on_answer(
        &mut self,
        shard: &str,
        entries: Vec<Entry<Pending>>,
        resp: pb::PutRecordsResponse,
    ) {
        if resp.records.len() != entries.len() {
            let e = ClientError::Protocol(format!(
                "PutRecords answered {} results for {} records",
                resp.records.len(),
                entries.len()
            ));
            self.acc.done(shard, false);
            for entry in entries {
                self.resolve(entry.item, Err(e.clone()));
            }
            return;
        }
        let mut retry = Vec::new();
        let mut worst: Option<ClientError> = None;
        for (entry, result) in entries.into_iter().zip(resp.records) {
            match record_outcome(shard, result) {
                Ok(put) => self.resolve(entry.item, Ok(put)),
                Err(e) if e.is_retryable() => {
                    worst = Some(worse(worst, &e));
                    retry.push((entry, e));
                }
                Err(e) => self.resolve(entry.item, Err(e)),
            }
        }
        let failures = self.acc.done(shard, retry.is_empty());
        if let Some(e) = worst {
            self.retry(shard, retry, &e, failures);
        }
    }

    fn on_request_error(&mut self, shard: &str, entries: Vec<Entry<Pending>>, e: ClientError) {
        let failures = self.acc.done(shard, false);
        let safe = e.is_retryable() && (!e.outcome_unknown() || self.config.retry_unknown_outcome);
        if !safe {
            tracing::debug!(shard, error = %e, records = entries.len(), "PutRecords failed; not retrying");
            for entry in entries {
                self.resolve(entry.item, Err(e.clone()));
            }
            return;
        }
        let retry = entries
            .into_iter()
            .map(|entry| (entry, e.clone()))
            .collect();
        self.retry(shard, retry, &e, failures);
    }

    /// Puts failed records back at the front of their shard's queue, with a redirect,
    /// a map refresh or a backoff as `e` asks; records past their deadline fail.
    fn retry(
        &mut self,
        shard: &str,
        failed: Vec<(Entry<Pending>, ClientError)>,
        e: &ClientError,
        failures: u32,
    ) {
        let now = self.now();
        let delay = match e {
            ClientError::NotLeader {
                leader: Some(leader),
                ..
            } => {
                self.client.note_leader(&self.stream, shard, leader);
                if failures <= FREE_REDIRECTS {
                    Duration::ZERO
                } else {
                    self.client
                        .config()
                        .backoff
                        .delay(failures - FREE_REDIRECTS, &mut self.jitter)
                }
            }
            _ => self.client.config().backoff.delay_at_least(
                failures.saturating_sub(1),
                e.retry_after(),
                &mut self.jitter,
            ),
        };
        if e.needs_map_refresh()
            || matches!(
                e,
                ClientError::Transport { .. } | ClientError::Unavailable { .. }
            )
        {
            // A fresh map routes the records again (and tells where leaders are now).
            self.map_retry_at = Some(now);
            self.fetch_map();
        }
        let mut back = Vec::new();
        for (mut entry, err) in failed {
            entry.item.attempts += 1;
            entry.item.last_error = Some(err);
            if now + delay > entry.item.deadline {
                self.fail_deadline(entry.item);
            } else {
                back.push(entry);
            }
        }
        tracing::debug!(shard, error = %e, records = back.len(), ?delay, "retrying records");
        self.acc.push_front(shard, back);
        self.acc.block(shard, now + delay);
    }

    fn fail_deadline(&mut self, p: Pending) {
        let last = p.last_error.clone().unwrap_or(ClientError::Closed);
        let attempts = p.attempts;
        self.resolve(
            p,
            Err(ClientError::DeadlineExceeded {
                attempts,
                last: Box::new(last),
            }),
        );
    }

    fn resolve(&mut self, p: Pending, result: Result<PutResult, ClientError>) {
        self.outstanding.remove(&p.id);
        let _ = p.tx.send(result);
    }

    /// Answers every flush whose records (ids below its mark) have all resolved.
    fn resolve_flushes(&mut self) {
        let oldest = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(mark, _)| oldest >= *mark);
        self.flushes = keep;
        for (_, tx) in done {
            let _ = tx.send(());
        }
    }
}

/// One entry of a `PutRecords` answer: the record's place, or its error.
fn record_outcome(shard: &str, r: pb::PutRecordsResultEntry) -> Result<PutResult, ClientError> {
    if r.error_code != pb::ErrorCode::Unspecified as i32 {
        let code = pb::ErrorCode::try_from(r.error_code).map_err(|_| {
            ClientError::Protocol(format!(
                "unknown error code {}: {}",
                r.error_code, r.error_message
            ))
        })?;
        return Err(ClientError::from_code(code, r.error_message));
    }
    let sequence_number = r.sequence_number.parse().map_err(|_| {
        ClientError::Protocol(format!(
            "bad sequence number {:?} in a PutRecords result",
            r.sequence_number
        ))
    })?;
    let shard_id = if r.shard_id.is_empty() {
        shard.to_string()
    } else {
        r.shard_id
    };
    Ok(PutResult {
        shard_id,
        sequence_number,
    })
}

/// Of two per-record errors, the one that decides what the shard does next: a stale
/// map first (everything must be routed again), then a leader change, then a backoff.
fn worse(a: Option<ClientError>, b: &ClientError) -> ClientError {
    let rank = |e: &ClientError| match e {
        e if e.needs_map_refresh() => 3,
        ClientError::NotLeader { .. } => 2,
        ClientError::Throttled { .. } | ClientError::Unavailable { .. } => 1,
        _ => 0,
    };
    match a {
        Some(a) if rank(&a) >= rank(b) => a,
        _ => b.clone(),
    }
}
