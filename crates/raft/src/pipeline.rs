//! Group commit on the leader: concurrent writes to a shard are gathered into one Raft
//! entry, so that one replication round and one fsync per replica serve many writers.
//!
//! A bounded queue feeds one batcher task per group (senders wait when it is full:
//! back-pressure). The task takes what is queued, up to the entry limits
//! ([`BATCH_RECORDS_MAX`], [`BATCH_BYTES_MAX`]), encodes one record batch and proposes
//! it with `client_write`; up to `inflight_entries_max` proposals are in flight, and
//! while they are, the next batch grows. Each writer learns the entry's index and the
//! slots of its records in it: its sequence numbers are `SeqNo::new(index, slot)`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use runnel_types::limits::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use runnel_types::{GroupId, LogIndex, NodeId, Record, SeqNo};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::error::Error;
use crate::types::{Raft, TypeConfig};

/// Bounds of a group's write pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Writes queued before writers wait.
    pub queue_writes_max: usize,
    /// Raft entries proposed and not yet committed.
    pub inflight_entries_max: usize,
    /// Encoded record bytes after which an entry takes no more writes (a single write
    /// larger than this still makes one entry). Big enough that the per-entry cost
    /// (one openraft round, one frame, one fsync share) is small per record; small
    /// enough that an AppendEntries of `APPEND_ENTRIES_MAX` entries stays a modest
    /// message and that one entry does not hold up the next for long.
    pub entry_bytes_max: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_writes_max: 4096,
            inflight_entries_max: 8,
            entry_bytes_max: 1024 * 1024,
        }
    }
}

/// Where a write's records landed: entry `index`, slots `first_slot ..
/// first_slot + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteAck {
    pub index: LogIndex,
    pub first_slot: u32,
    pub count: u32,
}

impl WriteAck {
    /// The sequence numbers of the write's records, in order.
    pub fn seq_nos(&self) -> impl Iterator<Item = SeqNo> + '_ {
        // Slots are below BATCH_RECORDS_MAX = 2^16, so they fit a u16.
        (self.first_slot..self.first_slot + self.count).map(|s| SeqNo::new(self.index, s as u16))
    }
}

struct Pending {
    records: Vec<Record>,
    bytes: usize,
    reply: oneshot::Sender<Result<WriteAck, Error>>,
}

/// The sending side of a group's pipeline.
#[derive(Clone)]
pub struct Pipeline {
    group: GroupId,
    tx: mpsc::Sender<Pending>,
}

impl Pipeline {
    /// Starts the batcher task of `group`; it stops when the pipeline is dropped.
    pub fn start(group: GroupId, node: NodeId, raft: Raft, config: PipelineConfig) -> Pipeline {
        let (tx, rx) = mpsc::channel(config.queue_writes_max.max(1));
        let span = tracing::info_span!("pipeline", node_id = %node, group_id = %group);
        tokio::spawn(run(group, raft, rx, config).instrument(span));
        Pipeline { group, tx }
    }

    /// Appends `records` through group commit; returns once they are committed.
    pub async fn write(&self, records: Vec<Record>) -> Result<WriteAck, Error> {
        let group = self.group;
        let bytes: usize = records.iter().map(Record::encoded_len).sum();
        if records.is_empty() || records.len() > BATCH_RECORDS_MAX || bytes > BATCH_BYTES_MAX {
            return Err(Error::InvalidWrite {
                group,
                reason: format!(
                    "{} records of {bytes} bytes; a write holds 1 to {BATCH_RECORDS_MAX} records \
                     and at most {BATCH_BYTES_MAX} bytes",
                    records.len()
                ),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                records,
                bytes,
                reply,
            })
            .await
            .map_err(|_| Error::ShuttingDown { group })?;
        rx.await.map_err(|_| Error::ShuttingDown { group })?
    }
}

async fn run(group: GroupId, raft: Raft, mut rx: mpsc::Receiver<Pending>, config: PipelineConfig) {
    let inflight = Arc::new(Semaphore::new(config.inflight_entries_max.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a proposal slot first: while waiting, more writes queue up and join.
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let (batch, rest) = gather(first, &mut rx, config.entry_bytes_max);
        carry = rest;
        let raft = raft.clone();
        tokio::spawn(
            async move {
                propose(group, &raft, batch).await;
                drop(permit);
            }
            .in_current_span(),
        );
    }
}

/// The first write plus queued ones while they fit one entry (`bytes_max`, and the
/// hard limits of a batch); the first that does not fit is carried to the next entry.
fn gather(
    first: Pending,
    rx: &mut mpsc::Receiver<Pending>,
    bytes_max: usize,
) -> (Vec<Pending>, Option<Pending>) {
    let bytes_max = bytes_max.clamp(1, BATCH_BYTES_MAX);
    let (mut records, mut bytes) = (first.records.len(), first.bytes);
    let mut batch = vec![first];
    while let Ok(p) = rx.try_recv() {
        if records + p.records.len() > BATCH_RECORDS_MAX || bytes + p.bytes > bytes_max {
            return (batch, Some(p));
        }
        records += p.records.len();
        bytes += p.bytes;
        batch.push(p);
    }
    (batch, None)
}

async fn propose(group: GroupId, raft: &Raft, batch: Vec<Pending>) {
    let mut all = Vec::with_capacity(batch.iter().map(|p| p.records.len()).sum());
    let mut slots = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        slots.push((all.len() as u32, p.records.len() as u32));
        all.extend(p.records);
        replies.push(p.reply);
    }
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let command = crate::codec::records_command(timestamp_ms, &all);
    drop(all);
    match crate::lease::client_write(raft, command).await {
        Ok(resp) => {
            let index = LogIndex(resp.data.index);
            for (reply, (first_slot, count)) in replies.into_iter().zip(slots) {
                let _ = reply.send(Ok(WriteAck {
                    index,
                    first_slot,
                    count,
                }));
            }
        }
        Err(e) => {
            let err = write_error(group, &e);
            for reply in replies {
                let _ = reply.send(Err(clone_error(&err)));
            }
        }
    }
}

/// `ForwardToLeader` becomes [`Error::NotLeader`] with the leader's address.
pub(crate) fn write_error(
    group: GroupId,
    e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
) -> Error {
    if let Some(f) = e.forward_to_leader() {
        let leader = match (f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) => Some((NodeId(id), node.addr.clone())),
            _ => None,
        };
        return Error::NotLeader { group, leader };
    }
    Error::Raft {
        group,
        detail: e.to_string(),
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::NotLeader { group, leader } => Error::NotLeader {
            group: *group,
            leader: leader.clone(),
        },
        Error::Raft { group, detail } => Error::Raft {
            group: *group,
            detail: detail.clone(),
        },
        other => Error::Raft {
            group: GroupId(0),
            detail: other.to_string(),
        },
    }
}
