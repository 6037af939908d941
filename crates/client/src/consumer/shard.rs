//! [`ShardReader`]: one shard, polled (`GetShardIterator` + `GetRecords`) or pushed
//! (`Subscribe`). It remembers the last record it delivered and, after any error or an
//! expired iterator, starts again just after it (`AFTER_SEQUENCE_NUMBER`), so that no
//! record is skipped and none is delivered twice by the reader itself.

use std::time::Duration;

use runnel_proto::v1 as pb;
use runnel_types::SeqNo;

use super::{ConsumedRecord, ConsumerConfig, ReadMode, RecordBatch, StartPosition};
use crate::client::{Client, answer};
use crate::error::ClientError;

/// Reads one shard in order.
///
/// ```no_run
/// # async fn demo() -> Result<(), runnel_client::ClientError> {
/// use runnel_client::{Client, ClientConfig, ConsumerConfig, StartPosition};
///
/// let client = Client::new(["127.0.0.1:7100"], ClientConfig::default())?;
/// let consumer = client.consumer("orders", ConsumerConfig::default());
/// let mut reader = consumer.read_shard("shardId-000000000001", StartPosition::TrimHorizon);
/// while let Some(batch) = reader.next().await? {
///     println!("{} records, {} ms behind", batch.records.len(), batch.millis_behind_latest);
/// }
/// println!("shard closed; read next: {:?}", reader.children());
/// # Ok(()) }
/// ```
pub struct ShardReader {
    client: Client,
    stream: String,
    shard_id: String,
    config: ConsumerConfig,
    start: StartPosition,
    last: Option<SeqNo>,
    iterator: Option<String>,
    subscription: Option<tonic::Streaming<pb::SubscribeEvent>>,
    idle: bool,
    children: Option<Vec<String>>,
    failures: u32,
}

impl ShardReader {
    pub(crate) fn new(
        client: Client,
        stream: &str,
        shard_id: &str,
        start: StartPosition,
        config: ConsumerConfig,
    ) -> ShardReader {
        ShardReader {
            client,
            stream: stream.to_string(),
            shard_id: shard_id.to_string(),
            config,
            start,
            last: None,
            iterator: None,
            subscription: None,
            idle: false,
            children: None,
            failures: 0,
        }
    }

    /// The shard this reader reads.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The sequence number of the last record delivered, if any.
    pub fn last_sequence_number(&self) -> Option<SeqNo> {
        self.last
    }

    /// Once the reader has ended: the shard's children, to read next.
    pub fn children(&self) -> Option<&[String]> {
        self.children.as_deref()
    }

    /// A backoff delay before retry `attempt`, from the client's policy.
    pub(crate) fn client_backoff(&self, attempt: u32) -> Duration {
        self.client.backoff_delay(attempt, None)
    }

    /// The next batch (possibly empty when caught up), or `None` once a closed shard
    /// has been read to its end. Transient errors are retried within the client's
    /// retry deadline; after an error, calling `next` again resumes after the last
    /// delivered record.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>, ClientError> {
        if self.children.is_some() {
            return Ok(None);
        }
        match self.config.mode {
            ReadMode::Poll => self.next_polled().await,
            ReadMode::Subscribe => self.next_pushed().await,
        }
    }

    /// Where to (re)start: after the last delivered record, else the given start.
    fn position(&self) -> StartPosition {
        self.last
            .map_or(self.start, StartPosition::AfterSequenceNumber)
    }

    async fn next_polled(&mut self) -> Result<Option<RecordBatch>, ClientError> {
        loop {
            if self.iterator.is_none() {
                self.iterator = Some(self.get_iterator().await?);
            }
            if self.idle {
                tokio::time::sleep(self.config.idle_poll_interval).await;
                self.idle = false;
            }
            let req = pb::GetRecordsRequest {
                shard_iterator: self.iterator.clone().unwrap_or_default(),
                limit: self.config.get_records_limit,
            };
            let result = self
                .client
                .call_shard(&self.stream, &self.shard_id, |c, a| {
                    let req = req.clone();
                    async move { answer(&a, c.records(&a)?.get_records(req).await) }
                })
                .await;
            match result {
                Ok(resp) => return self.on_records(resp).map(Some).or_else(end_is_none),
                Err(ClientError::IteratorExpired { .. }) => {
                    tracing::debug!(shard = %self.shard_id, last = ?self.last, "iterator expired; getting a new one");
                    self.iterator = None;
                }
                Err(e) => {
                    // The next call starts from the last delivered record.
                    self.iterator = None;
                    return Err(e);
                }
            }
        }
    }

    fn on_records(&mut self, resp: pb::GetRecordsResponse) -> Result<RecordBatch, Ended> {
        let records = match convert(resp.records) {
            Ok(r) => r,
            Err(e) => {
                self.iterator = None;
                return Err(Ended::Error(e));
            }
        };
        if let Some(r) = records.last() {
            self.last = Some(r.sequence_number);
        }
        self.iterator = resp.next_shard_iterator;
        self.idle = records.is_empty() || resp.millis_behind_latest == 0;
        if self.iterator.is_none() {
            self.children = Some(resp.child_shard_ids);
            if records.is_empty() {
                return Err(Ended::End);
            }
        }
        Ok(RecordBatch {
            shard_id: self.shard_id.clone(),
            records,
            millis_behind_latest: resp.millis_behind_latest,
        })
    }

    async fn get_iterator(&mut self) -> Result<String, ClientError> {
        let (kind, seq, timestamp_ms) = self.position().to_proto();
        let req = pb::GetShardIteratorRequest {
            stream_name: self.stream.clone(),
            shard_id: self.shard_id.clone(),
            shard_iterator_type: kind as i32,
            starting_sequence_number: seq,
            timestamp_ms,
        };
        let resp = self
            .client
            .call_shard(&self.stream, &self.shard_id, |c, a| {
                let req = req.clone();
                async move { answer(&a, c.records(&a)?.get_shard_iterator(req).await) }
            })
            .await?;
        Ok(resp.shard_iterator)
    }

    async fn next_pushed(&mut self) -> Result<Option<RecordBatch>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.client.config().retry_deadline;
        loop {
            if self.subscription.is_none() {
                self.subscription = Some(self.subscribe().await?);
            }
            let Some(sub) = self.subscription.as_mut() else {
                continue;
            };
            let err = match sub.message().await {
                Ok(Some(event)) => {
                    self.failures = 0;
                    return self.on_event(event).map(Some).or_else(end_is_none);
                }
                Ok(None) => ClientError::Unavailable {
                    retry_after: Duration::ZERO,
                    message: format!(
                        "subscription to {} ended before the shard did",
                        self.shard_id
                    ),
                },
                Err(status) => ClientError::from_status(&status, "subscription"),
            };
            self.subscription = None;
            self.on_push_error(&err).await;
            self.failures += 1;
            if !self
                .client
                .wait_for_retry(&err, self.failures, deadline)
                .await
            {
                return Err(err);
            }
        }
    }

    async fn on_push_error(&mut self, err: &ClientError) {
        tracing::debug!(shard = %self.shard_id, error = %err, last = ?self.last, "subscription broke; resubscribing");
        match err {
            ClientError::NotLeader {
                leader: Some(l), ..
            } => self.client.note_leader(&self.stream, &self.shard_id, l),
            e if e.needs_map_refresh()
                || matches!(
                    e,
                    ClientError::Transport { .. } | ClientError::Unavailable { .. }
                ) =>
            {
                let _ = self.client.refresh_shard_map(&self.stream).await;
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: pb::SubscribeEvent) -> Result<RecordBatch, Ended> {
        let records = convert(event.records).map_err(Ended::Error)?;
        if let Some(r) = records.last() {
            self.last = Some(r.sequence_number);
        }
        if let Ok(s) = event.continuation_sequence_number.parse::<SeqNo>() {
            self.last = Some(self.last.map_or(s, |l| l.max(s)));
        }
        if !event.child_shard_ids.is_empty() {
            self.children = Some(event.child_shard_ids);
            self.subscription = None;
            if records.is_empty() {
                return Err(Ended::End);
            }
        }
        Ok(RecordBatch {
            shard_id: self.shard_id.clone(),
            records,
            millis_behind_latest: event.millis_behind_latest,
        })
    }

    async fn subscribe(&mut self) -> Result<tonic::Streaming<pb::SubscribeEvent>, ClientError> {
        let (kind, seq, timestamp_ms) = self.position().to_proto();
        let req = pb::SubscribeRequest {
            stream_name: self.stream.clone(),
            shard_id: self.shard_id.clone(),
            starting_position: kind as i32,
            starting_sequence_number: seq,
            timestamp_ms,
        };
        self.client
            .call_shard(&self.stream, &self.shard_id, |c, a| {
                let req = req.clone();
                async move { answer(&a, c.records(&a)?.subscribe(req).await) }
            })
            .await
    }
}

/// Why a batch is not returned: the shard ended, or the answer was malformed.
enum Ended {
    End,
    Error(ClientError),
}

fn end_is_none(e: Ended) -> Result<Option<RecordBatch>, ClientError> {
    match e {
        Ended::End => Ok(None),
        Ended::Error(e) => Err(e),
    }
}

fn convert(records: Vec<pb::ConsumedRecord>) -> Result<Vec<ConsumedRecord>, ClientError> {
    records
        .into_iter()
        .map(ConsumedRecord::from_proto)
        .collect()
}
