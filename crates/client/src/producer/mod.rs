//! [`Producer`]: batches records per shard and sends them with `PutRecords` to each
//! shard's leader, retrying what is safe under a per-record deadline.
//!
//! - [`accumulator`]: the pure batching decision (per-shard queues, linger, limits).
//! - `worker`: the background task that routes, sends, retries and resolves results.

pub mod accumulator;
mod worker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use runnel_types::limits::{PUT_RECORDS_BYTES_MAX, PUT_RECORDS_COUNT_MAX};
use runnel_types::{Record, SeqNo, TypesError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::client::Client;
use crate::error::ClientError;
use worker::{Cmd, Pending};

/// Producer settings. The defaults suit most uses; every bound is finite.
///
/// ```
/// use runnel_client::ProducerConfig;
/// use std::time::Duration;
///
/// let config = ProducerConfig { linger: Duration::from_millis(20), ..ProducerConfig::default() };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// How long a record may wait for others to share its `PutRecords` call.
    pub linger: Duration,
    /// Records per call, 1 to 500.
    pub batch_records_max: usize,
    /// Bytes of partition keys and data per call, up to 5 MiB.
    pub batch_bytes_max: usize,
    /// `PutRecords` calls in flight per shard. With 1 (the default) a retried record
    /// keeps its place, so records of one key are stored in the order they were sent.
    pub in_flight_per_shard_max: usize,
    /// Records buffered (queued or in flight) before `send` waits and `try_send` fails.
    pub buffer_records_max: usize,
    /// Bytes buffered before `send` waits and `try_send` fails.
    pub buffer_bytes_max: usize,
    /// How long after `send` a record may still be retried; then it fails with
    /// [`ClientError::DeadlineExceeded`].
    pub delivery_timeout: Duration,
    /// Whether to resend after an error that leaves the outcome unknown (a transport
    /// fault, an internal error): true gives at-least-once delivery (a record may be
    /// stored twice), false fails such records at once.
    pub retry_unknown_outcome: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_records_max: PUT_RECORDS_COUNT_MAX,
            batch_bytes_max: 1024 * 1024,
            in_flight_per_shard_max: 1,
            buffer_records_max: 100_000,
            buffer_bytes_max: 64 * 1024 * 1024,
            delivery_timeout: Duration::from_secs(30),
            retry_unknown_outcome: true,
        }
    }
}

impl ProducerConfig {
    /// Checks every bound, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |what: String| Err(ClientError::Config(what));
        if !(1..=PUT_RECORDS_COUNT_MAX).contains(&self.batch_records_max) {
            return bad(format!(
                "batch_records_max {} must be 1 to {PUT_RECORDS_COUNT_MAX}",
                self.batch_records_max
            ));
        }
        if !(1..=PUT_RECORDS_BYTES_MAX).contains(&self.batch_bytes_max) {
            return bad(format!(
                "batch_bytes_max {} must be 1 to {PUT_RECORDS_BYTES_MAX}",
                self.batch_bytes_max
            ));
        }
        if self.in_flight_per_shard_max == 0
            || self.buffer_records_max == 0
            || self.buffer_bytes_max == 0
        {
            return bad(
                "in_flight_per_shard_max, buffer_records_max and buffer_bytes_max must be above 0"
                    .into(),
            );
        }
        if self.buffer_bytes_max > Semaphore::MAX_PERMITS
            || self.buffer_records_max > Semaphore::MAX_PERMITS
        {
            return bad("buffer bounds are too large".into());
        }
        Ok(())
    }
}

/// Where a record was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The shard, `shardId-000000000007`.
    pub shard_id: String,
    /// The record's sequence number in that shard.
    pub sequence_number: SeqNo,
}

/// The outcome of one queued record, to await.
///
/// Dropping it does not cancel the record: it is still sent.
#[derive(Debug)]
pub struct PutHandle {
    rx: oneshot::Receiver<Result<PutResult, ClientError>>,
}

impl Future for PutHandle {
    type Output = Result<PutResult, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Batches records per shard and writes them to a stream.
///
/// Cheap to clone; clones share one buffer and one background task. The task keeps
/// running until [`Producer::close`] or until every clone is dropped, and delivers every
/// record it accepted either way.
///
/// ```no_run
/// # async fn demo() -> Result<(), runnel_client::ClientError> {
/// use runnel_client::{Client, ClientConfig, ProducerConfig, Record};
///
/// let client = Client::new(["127.0.0.1:7100"], ClientConfig::default())?;
/// let producer = client.producer("orders", ProducerConfig::default())?;
/// // One record, awaited:
/// let put = producer.send(Record::new("customer-17", "hello")).await?;
/// println!("stored in {} at {}", put.shard_id, put.sequence_number);
/// // Many records in flight at once:
/// let mut handles = Vec::new();
/// for i in 0..1000 {
///     handles.push(producer.enqueue(Record::new(format!("k{i}"), "x")).await?);
/// }
/// for h in handles {
///     h.await?;
/// }
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Shared>,
}

struct Shared {
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    buffer_bytes_max: usize,
}

impl Producer {
    /// A producer for `stream`, with its background task started.
    pub fn new(
        client: Client,
        stream: &str,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        config.validate()?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            cmd_tx,
            records: Arc::new(Semaphore::new(config.buffer_records_max)),
            bytes: Arc::new(Semaphore::new(config.buffer_bytes_max)),
            buffer_bytes_max: config.buffer_bytes_max,
        };
        worker::spawn(client, stream.to_string(), config, cmd_rx);
        Ok(Producer {
            inner: Arc::new(shared),
        })
    }

    /// Sends one record and waits for its result: waits for buffer space first
    /// (back-pressure), then for the record to be stored or to fail.
    ///
    /// The record is queued when the returned future is first polled.
    pub fn send(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<PutResult, ClientError>> + Send + 'static {
        let this = self.clone();
        async move { this.enqueue(record).await?.await }
    }

    /// Queues one record, waiting while the buffer is full; returns a handle on its
    /// result without waiting for it.
    pub async fn enqueue(&self, record: Record) -> Result<PutHandle, ClientError> {
        let size = check(&record)?;
        let s = &self.inner;
        let records = s
            .records
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        let bytes = s
            .bytes
            .clone()
            .acquire_many_owned(self.permits(size))
            .await
            .map_err(|_| ClientError::Closed)?;
        self.submit(record, size, [records, bytes])
    }

    /// Queues one record if the buffer has room, else fails at once with
    /// [`ClientError::BufferFull`].
    pub fn try_send(&self, record: Record) -> Result<PutHandle, ClientError> {
        let size = check(&record)?;
        let s = &self.inner;
        let full = |what: &str| ClientError::BufferFull(what.to_string());
        let records = s
            .records
            .clone()
            .try_acquire_owned()
            .map_err(|_| full("records"))?;
        let bytes = s
            .bytes
            .clone()
            .try_acquire_many_owned(self.permits(size))
            .map_err(|_| full("bytes"))?;
        self.submit(record, size, [records, bytes])
    }

    /// Sends every record queued before this call now (without waiting for linger) and
    /// waits until each has its result.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd_tx
            .send(Cmd::Flush(tx))
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Flushes, then stops the background task. Later sends fail with
    /// [`ClientError::Closed`].
    pub async fn close(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd_tx
            .send(Cmd::Close(tx))
            .map_err(|_| ClientError::Closed)?;
        self.inner.records.close();
        self.inner.bytes.close();
        rx.await.map_err(|_| ClientError::Closed)
    }

    fn permits(&self, size: usize) -> u32 {
        size.min(self.inner.buffer_bytes_max).min(u32::MAX as usize) as u32
    }

    fn submit(
        &self,
        record: Record,
        size: usize,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Result<PutHandle, ClientError> {
        let (tx, rx) = oneshot::channel();
        let pending = Pending::new(record, size, tx, permits);
        self.inner
            .cmd_tx
            .send(Cmd::Put(Box::new(pending)))
            .map_err(|_| ClientError::Closed)?;
        Ok(PutHandle { rx })
    }
}

/// Validates a record; returns its size as `PutRecords` counts it (key and data).
fn check(record: &Record) -> Result<usize, ClientError> {
    record.validate().map_err(|e| match e {
        TypesError::InvalidRecord { field, problem } => ClientError::InvalidArgument {
            field: field.to_string(),
            limit: String::new(),
            message: problem,
        },
        other => ClientError::from(other),
    })?;
    Ok(record.partition_key.len() + record.data.len())
}
