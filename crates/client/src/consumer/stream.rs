//! [`StreamReader`]: every shard of a stream, one reader task per shard, merged into one
//! sequence of batches. A child shard's reader starts only once every parent still
//! retained has been read to its end and its batches handed over, so per-key order
//! holds across splits and merges.

use std::collections::BTreeSet;

use tokio::sync::mpsc;

use super::{ConsumerConfig, RecordBatch, ShardReader, StartPosition};
use crate::client::Client;
use crate::error::ClientError;

enum Event {
    Batch(RecordBatch),
    Ended {
        shard_id: String,
        children: Vec<String>,
    },
    Failed {
        shard_id: String,
        error: ClientError,
    },
}

/// Reads every shard of a stream, parents before children.
///
/// Batches of different shards interleave; within a shard, and from a parent to its
/// children, they come in order. Dropping the reader stops its tasks.
pub struct StreamReader {
    client: Client,
    stream: String,
    config: ConsumerConfig,
    start: StartPosition,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    started: BTreeSet<String>,
    finished: BTreeSet<String>,
    active: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StreamReader {
    pub(crate) async fn start(
        client: Client,
        stream: &str,
        start: StartPosition,
        config: ConsumerConfig,
    ) -> Result<StreamReader, ClientError> {
        if matches!(
            start,
            StartPosition::AtSequenceNumber(_) | StartPosition::AfterSequenceNumber(_)
        ) {
            return Err(ClientError::Config(
                "a whole stream starts at TrimHorizon, Latest or AtTimestamp; sequence numbers are per shard".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(config.buffered_batches_max.max(1));
        let mut reader = StreamReader {
            client,
            stream: stream.to_string(),
            config,
            start,
            tx,
            rx,
            started: BTreeSet::new(),
            finished: BTreeSet::new(),
            active: 0,
            tasks: Vec::new(),
        };
        let map = reader.client.refresh_shard_map(stream).await?;
        let first: Vec<String> = match start {
            // Only open shards have records to come; closed ones count as read.
            StartPosition::Latest => {
                reader
                    .finished
                    .extend(map.shards().filter(|s| !s.open).map(|s| s.shard_id.clone()));
                map.shards()
                    .filter(|s| s.open)
                    .map(|s| s.shard_id.clone())
                    .collect()
            }
            _ => map.roots(),
        };
        for shard_id in first {
            reader.spawn(shard_id, start);
        }
        Ok(reader)
    }

    /// The shards being read now.
    pub fn active_shards(&self) -> Vec<String> {
        self.started.difference(&self.finished).cloned().collect()
    }

    /// The next batch from any shard (possibly empty: that shard is caught up), or
    /// `None` once every shard is closed and read to its end.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>, ClientError> {
        loop {
            if self.active == 0 {
                return Ok(None);
            }
            let Some(event) = self.rx.recv().await else {
                return Ok(None);
            };
            match event {
                Event::Batch(b) => return Ok(Some(b)),
                Event::Ended { shard_id, children } => {
                    self.active -= 1;
                    self.finished.insert(shard_id.clone());
                    tracing::debug!(shard = %shard_id, ?children, "shard read to its end");
                    self.start_children(&shard_id, children).await?;
                }
                Event::Failed { shard_id, error } => {
                    self.active -= 1;
                    // Forget it, so that the caller may see it started again later.
                    self.started.remove(&shard_id);
                    return Err(error);
                }
            }
        }
    }

    /// Starts each child whose parents are all read (from its beginning).
    async fn start_children(
        &mut self,
        parent: &str,
        mut children: Vec<String>,
    ) -> Result<(), ClientError> {
        let mut map = self.client.shard_map(&self.stream).await?;
        let known = children.iter().all(|c| map.get(c).is_some());
        if children.is_empty() || !known {
            map = self.client.refresh_shard_map(&self.stream).await?;
        }
        if children.is_empty() {
            children = map.children(parent);
        }
        let start = match self.start {
            StartPosition::AtTimestamp(ms) => StartPosition::AtTimestamp(ms),
            _ => StartPosition::TrimHorizon,
        };
        for child in children {
            if !self.started.contains(&child) && map.parents_done(&child, &self.finished) {
                self.spawn(child, start);
            }
        }
        Ok(())
    }

    fn spawn(&mut self, shard_id: String, start: StartPosition) {
        self.started.insert(shard_id.clone());
        self.active += 1;
        let reader = ShardReader::new(
            self.client.clone(),
            &self.stream,
            &shard_id,
            start,
            self.config.clone(),
        );
        self.tasks
            .push(tokio::spawn(read_shard(reader, self.tx.clone())));
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One shard's reader task: forwards batches, retries transient failures (resuming
/// after the last delivered record), reports the end or a final error.
async fn read_shard(mut reader: ShardReader, tx: mpsc::Sender<Event>) {
    let mut failures = 0u32;
    loop {
        match reader.next().await {
            Ok(Some(batch)) => {
                failures = 0;
                if tx.send(Event::Batch(batch)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let children = reader
                    .children()
                    .map(<[String]>::to_vec)
                    .unwrap_or_default();
                let _ = tx
                    .send(Event::Ended {
                        shard_id: reader.shard_id().to_string(),
                        children,
                    })
                    .await;
                return;
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(shard = %reader.shard_id(), error = %e, "reading failed; resuming after the last record");
                let delay = reader.client_backoff(failures);
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
            Err(error) => {
                let _ = tx
                    .send(Event::Failed {
                        shard_id: reader.shard_id().to_string(),
                        error,
                    })
                    .await;
                return;
            }
        }
    }
}
