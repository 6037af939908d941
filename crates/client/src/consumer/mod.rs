//! [`Consumer`]: reading records back, from one shard ([`ShardReader`]) or from a whole
//! stream ([`StreamReader`], which follows closed shards into their children, parents
//! first, so that the records of a key come in order across a split or merge).
//!
//! - `shard`: one shard, by `GetShardIterator` + `GetRecords` polling or by `Subscribe`
//!   push; resumes after the last delivered record on errors and expired iterators.
//! - `stream`: every shard of a stream, one reader task per shard.

mod shard;
mod stream;

use std::time::Duration;

use bytes::Bytes;
use runnel_proto::v1 as pb;
use runnel_types::{HashKey, SeqNo};

use crate::client::Client;
use crate::error::ClientError;

pub use shard::ShardReader;
pub use stream::StreamReader;

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still retained.
    TrimHorizon,
    /// Only records stored from now on.
    Latest,
    /// At this record (per shard only).
    AtSequenceNumber(SeqNo),
    /// Just after this record (per shard only).
    AfterSequenceNumber(SeqNo),
    /// The first record that arrived at or after this time, in milliseconds since the
    /// Unix epoch (not in the future).
    AtTimestamp(u64),
}

impl StartPosition {
    /// The wire form: iterator type, starting sequence number, timestamp.
    pub(crate) fn to_proto(self) -> (pb::ShardIteratorType, String, u64) {
        use pb::ShardIteratorType as T;
        match self {
            StartPosition::TrimHorizon => (T::TrimHorizon, String::new(), 0),
            StartPosition::Latest => (T::Latest, String::new(), 0),
            StartPosition::AtSequenceNumber(s) => (T::AtSequenceNumber, s.to_string(), 0),
            StartPosition::AfterSequenceNumber(s) => (T::AfterSequenceNumber, s.to_string(), 0),
            StartPosition::AtTimestamp(ms) => (T::AtTimestamp, String::new(), ms),
        }
    }
}

/// How a reader gets records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// `GetShardIterator`, then `GetRecords` in a loop (pausing when caught up).
    #[default]
    Poll,
    /// A `Subscribe` stream: the server pushes records as they commit.
    Subscribe,
}

/// Reader settings.
///
/// ```
/// use runnel_client::{ConsumerConfig, ReadMode};
///
/// let config = ConsumerConfig { mode: ReadMode::Subscribe, ..ConsumerConfig::default() };
/// assert_eq!(config.get_records_limit, 10_000);
/// ```
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Polling or push.
    pub mode: ReadMode,
    /// Records per `GetRecords` call, 1 to 10,000.
    pub get_records_limit: u32,
    /// Pause between `GetRecords` calls once caught up.
    pub idle_poll_interval: Duration,
    /// Batches a [`StreamReader`] buffers ahead of its caller, over all shards.
    pub buffered_batches_max: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            mode: ReadMode::Poll,
            get_records_limit: runnel_types::limits::GET_RECORDS_COUNT_MAX as u32,
            idle_poll_interval: Duration::from_millis(200),
            buffered_batches_max: 16,
        }
    }
}

/// A record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Its sequence number in its shard.
    pub sequence_number: SeqNo,
    /// When the leader accepted it, milliseconds since the Unix epoch.
    pub arrival_time_ms: u64,
    /// Its partition key.
    pub partition_key: String,
    /// Its data.
    pub data: Bytes,
    /// The explicit hash key it was sent with, if any.
    pub explicit_hash_key: Option<HashKey>,
}

impl ConsumedRecord {
    pub(crate) fn from_proto(r: pb::ConsumedRecord) -> Result<ConsumedRecord, ClientError> {
        let sequence_number = r.sequence_number.parse().map_err(|_| {
            ClientError::Protocol(format!(
                "bad sequence number {:?} in a record",
                r.sequence_number
            ))
        })?;
        let explicit_hash_key = match r.explicit_hash_key {
            Some(k) => Some(
                k.parse()
                    .map_err(|_| ClientError::Protocol(format!("bad explicit hash key {k:?}")))?,
            ),
            None => None,
        };
        Ok(ConsumedRecord {
            sequence_number,
            arrival_time_ms: r.arrival_time_ms,
            partition_key: r.partition_key,
            data: r.data,
            explicit_hash_key,
        })
    }
}

/// Records read from one shard in one call.
///
/// An empty batch means the reader is caught up with the shard for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    /// The shard the records come from.
    pub shard_id: String,
    /// The records, in sequence-number order.
    pub records: Vec<ConsumedRecord>,
    /// How far behind the tip of the shard the reader is.
    pub millis_behind_latest: u64,
}

impl RecordBatch {
    /// The sequence number of the last record, to checkpoint after processing it.
    pub fn last_sequence_number(&self) -> Option<SeqNo> {
        self.records.last().map(|r| r.sequence_number)
    }
}

/// Reads a stream: one shard or all of them.
///
/// ```no_run
/// # async fn demo() -> Result<(), runnel_client::ClientError> {
/// use runnel_client::{Client, ClientConfig, ConsumerConfig, StartPosition};
///
/// let client = Client::new(["127.0.0.1:7100"], ClientConfig::default())?;
/// let mut reader = client.consumer("orders", ConsumerConfig::default()).read_stream(StartPosition::TrimHorizon).await?;
/// while let Some(batch) = reader.next().await? {
///     for r in &batch.records {
///         println!("{} {} {:?}", batch.shard_id, r.sequence_number, r.data);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Consumer {
    client: Client,
    stream: String,
    config: ConsumerConfig,
}

impl Consumer {
    /// A consumer of `stream`.
    pub fn new(client: Client, stream: &str, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            stream: stream.to_string(),
            config,
        }
    }

    /// A reader of one shard from `start`. It ends (returns `None`) once a closed
    /// shard is read to its end; [`ShardReader::children`] then names the shards to
    /// read next.
    pub fn read_shard(&self, shard_id: &str, start: StartPosition) -> ShardReader {
        ShardReader::new(
            self.client.clone(),
            &self.stream,
            shard_id,
            start,
            self.config.clone(),
        )
    }

    /// A reader of every shard of the stream, parents before children. `start` is
    /// `TrimHorizon`, `Latest` (open shards only) or `AtTimestamp`; children of the
    /// shards it starts with are read from their beginning.
    pub async fn read_stream(&self, start: StartPosition) -> Result<StreamReader, ClientError> {
        StreamReader::start(
            self.client.clone(),
            &self.stream,
            start,
            self.config.clone(),
        )
        .await
    }
}
