//! The clients the suites run: producers that write distinct records through the SDK
//! [`Producer`] and note each in the [`Ledger`], and consumer-group members that note
//! each delivery in the [`DeliveryLog`] and checkpoint after every batch.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use runnel_client::{
    Client, ClientError, ConsumerGroup, CreateStream, GroupConfig, GroupEvent, ProducerConfig,
    PutHandle, Record, StreamDescription, StreamStatus,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::deliveries::{DeliveryLog, Stored};
use crate::ledger::Ledger;

/// Records a producer keeps queued or in flight before it awaits the oldest result.
pub const PRODUCE_WINDOW: usize = 2_000;
/// Failures listed in an outcome at most.
const FAILURES_KEPT_MAX: usize = 10;

/// Creates `name` and waits until every node the client knows says it is ACTIVE.
/// Metadata calls are served from each node's applied copy of the meta state, so a node
/// that has not yet applied the creation answers NOT_FOUND for a moment: a producer
/// that asked it would fail its records.
pub async fn create_stream(
    client: &Client,
    name: &str,
    options: CreateStream,
    deadline: Duration,
) -> anyhow::Result<StreamDescription> {
    client
        .admin()
        .create_stream(name, options)
        .await
        .with_context(|| format!("creating {name}"))?;
    let until = tokio::time::Instant::now() + deadline;
    let mut active = None;
    for endpoint in client.endpoints() {
        let one = Client::new([endpoint.clone()], client.config().clone())?;
        loop {
            let last = match one.admin().describe_stream(name).await {
                Ok(d) if d.status == StreamStatus::Active => {
                    active = Some(d);
                    break;
                }
                Ok(d) => format!("{:?}", d.status),
                Err(e @ ClientError::NotFound { .. }) => e.to_string(),
                Err(e) => return Err(e).with_context(|| format!("describing {name}")),
            };
            if tokio::time::Instant::now() >= until {
                anyhow::bail!("{name} is not active at {endpoint} within {deadline:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    active.context("the client has no endpoint")
}

/// Record `i` of producer `p`: 64 keys per producer, data unique in the run (so that
/// the ledger can tell records apart) and about `size` bytes long.
pub fn record_for(p: usize, i: usize, size: usize) -> (String, Bytes) {
    let key = format!("p{p}-k{}", i % 64);
    let mut data = format!("producer {p} record {i:09};").into_bytes();
    let fill = size.saturating_sub(data.len());
    data.extend((0..fill).map(|k| b'a' + ((i + k) % 26) as u8));
    (key, Bytes::from(data))
}

/// What one producer achieved.
#[derive(Debug, Default)]
pub struct ProduceOutcome {
    pub acked: usize,
    pub failed: usize,
    /// The first few errors, for the test's message.
    pub errors: Vec<String>,
}

/// Producer `p` writes records `0..count` of about `size` bytes to `stream`, noting
/// every record in `ledger` before it is sent and every acknowledgement after.
pub async fn produce(
    client: Client,
    stream: String,
    p: usize,
    count: usize,
    size: usize,
    ledger: Ledger,
) -> anyhow::Result<ProduceOutcome> {
    let producer = client.producer(&stream, ProducerConfig::default())?;
    let mut out = ProduceOutcome::default();
    let mut window: VecDeque<(String, Bytes, PutHandle)> = VecDeque::new();
    for i in 0..count {
        let (key, data) = record_for(p, i, size);
        ledger.sent(&key, &data);
        let handle = producer
            .enqueue(Record::new(key.clone(), data.clone()))
            .await?;
        window.push_back((key, data, handle));
        if window.len() >= PRODUCE_WINDOW
            && let Some((k, d, h)) = window.pop_front()
        {
            settle(&ledger, &mut out, &k, &d, h.await);
        }
    }
    while let Some((k, d, h)) = window.pop_front() {
        settle(&ledger, &mut out, &k, &d, h.await);
    }
    producer.close().await?;
    Ok(out)
}

fn settle(
    ledger: &Ledger,
    out: &mut ProduceOutcome,
    key: &str,
    data: &Bytes,
    result: Result<runnel_client::PutResult, ClientError>,
) {
    match result {
        Ok(put) => {
            ledger.acked(key, data, &put);
            out.acked += 1;
        }
        Err(e) => {
            out.failed += 1;
            if out.errors.len() < FAILURES_KEPT_MAX {
                out.errors.push(e.to_string());
            }
        }
    }
}

/// A running consumer-group member.
pub struct Member {
    pub member_id: String,
    log: DeliveryLog,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Joins `group` on `stream` as `member_id` and processes records: each batch is
/// noted in `log`, then checkpointed.
pub fn spawn_member(
    client: Client,
    stream: &str,
    group: &str,
    member_id: &str,
    session_timeout: Duration,
    log: DeliveryLog,
) -> Member {
    let mut config = GroupConfig::new(group, member_id);
    config.session_timeout = session_timeout;
    let g = ConsumerGroup::join(client, stream, config);
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run_member(g, member_id.to_string(), log.clone(), stop_rx));
    Member {
        member_id: member_id.to_string(),
        log,
        stop: Some(stop_tx),
        task,
    }
}

impl Member {
    /// Kills the member as a crash would: its task is aborted, it never leaves the
    /// group, and its leases lapse only after the session timeout.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.log.member_gone(&self.member_id);
    }

    /// Leaves the group cleanly (leases given back at once).
    pub async fn leave(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?;
        self.log.member_gone(&self.member_id);
        Ok(())
    }
}

async fn run_member(
    mut g: ConsumerGroup,
    me: String,
    log: DeliveryLog,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            e = g.next() => e,
        };
        let Some(event) = event else { break };
        match event {
            GroupEvent::LeaseAcquired {
                shard_id,
                resume_after,
            } => log.lease_acquired(&me, &shard_id, resume_after),
            GroupEvent::Records(batch) => {
                log.delivered(&me, &batch);
                if let Some(seq) = batch.last_sequence_number() {
                    log.checkpointing(&me, &batch.shard_id, seq);
                    let result = g.checkpoint(&batch.shard_id, seq).await;
                    log.checkpointed(&me, &batch.shard_id, seq, Stored::of(&result));
                    if let Err(e) = result {
                        eprintln!("{me}: checkpoint {} at {seq}: {e}", batch.shard_id);
                        if matches!(e, ClientError::LeaseLost { .. }) {
                            log.session_ended(&me, &batch.shard_id);
                        }
                    }
                }
            }
            GroupEvent::ShardEnded { shard_id, .. } => {
                if let Err(e) = g.checkpoint_shard_end(&shard_id).await {
                    eprintln!("{me}: checkpoint the end of {shard_id}: {e}");
                }
            }
            GroupEvent::LeaseLost { shard_id } => log.session_ended(&me, &shard_id),
            GroupEvent::ReaderFailed { shard_id, error } => {
                eprintln!("{me}: reader of {shard_id} failed: {error}");
                log.session_ended(&me, &shard_id);
            }
        }
    }
    if let Err(e) = g.leave().await {
        eprintln!("{me}: leaving the group: {e}");
    }
}
