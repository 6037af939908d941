//! The Runnel Rust SDK: produce to and consume from a Runnel cluster over its public
//! gRPC API (`runnel.v1`), with the routing, batching, retries and failover a
//! production client needs.
//!
//! What is where:
//! - [`client`]: [`Client`], the entry point: one tonic channel per node address, a
//!   shard-map cache per stream, calls to any node (metadata) or to a shard's leader
//!   (data) with leader-hint redirects, map refreshes and backoff.
//! - [`router`]: pure: a stream's [`ShardMap`], routing a record to the open shard whose
//!   hash range holds its key, and shard lineage (parents before children).
//! - [`producer`]: [`Producer`]: per-shard batching ([`producer::accumulator`], pure),
//!   a bounded buffer with back-pressure, retries of what is safe under a deadline, and
//!   a result per record.
//! - [`consumer`]: [`Consumer`]: [`ShardReader`] (iterator polling or push subscription,
//!   resuming after the last record) and [`StreamReader`] (every shard, following closed
//!   shards into their children).
//! - [`group`]: [`ConsumerGroup`]: leases from `JoinGroup` heartbeats drive one reader per
//!   leased shard; checkpoints are stored in the cluster.
//! - [`admin`]: [`Admin`]: every stream and cluster call, with typed results.
//! - [`error`]: [`ClientError`], decoded from the `runnel.v1.ErrorDetail` of a failed call.
//! - [`backoff`]: exponential backoff with seedable jitter (pure).
//!
//! *API boundary*: depends on `runnel-proto` and `runnel-types` only, never on the
//! server. Under `--cfg madsim` the same code runs on the simulated network and clock:
//! no threads, no unbiased `select!`, jitter from a seedable RNG.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_client::ClientError> {
//! use runnel_client::{Client, ClientConfig, ConsumerConfig, ProducerConfig, Record, StartPosition};
//!
//! let client = Client::new(["127.0.0.1:7100"], ClientConfig::default())?;
//! let producer = client.producer("orders", ProducerConfig::default())?;
//! let put = producer.send(Record::new("customer-17", "an order")).await?;
//! println!("stored in {} at {}", put.shard_id, put.sequence_number);
//!
//! let mut reader = client.consumer("orders", ConsumerConfig::default()).read_stream(StartPosition::TrimHorizon).await?;
//! if let Some(batch) = reader.next().await? {
//!     println!("{} records from {}", batch.records.len(), batch.shard_id);
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod backoff;
pub mod client;
pub mod consumer;
pub mod error;
pub mod group;
pub mod producer;
pub mod router;
mod time;

pub use admin::{
    Admin, ClusterStatus, CreateStream, NodeInfo, NodeStatus, ReplicaMove, ShardCheckpoint,
    StreamDescription, StreamStatus,
};
pub use client::{Client, ClientConfig};
pub use consumer::{
    ConsumedRecord, Consumer, ConsumerConfig, ReadMode, RecordBatch, ShardReader, StartPosition,
    StreamReader,
};
pub use error::ClientError;
pub use group::{ConsumerGroup, GroupConfig, GroupEvent};
pub use producer::{Producer, ProducerConfig, PutHandle, PutResult};
pub use router::{ShardInfo, ShardMap};
pub use runnel_types::{HashKey, Record, SeqNo};
