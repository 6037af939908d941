//! [`ConsumerGroup`]: instances of one application share a stream's shards through
//! leases held in the cluster (as the Kinesis Client Library does, without an external
//! table). A background task heartbeats with `JoinGroup`; the leases each answer names
//! drive one reader per leased shard; a lease that disappears stops its reader. Readers
//! start after the group's stored checkpoint, so a restarted member resumes where the
//! group left off (at-least-once: records after the last checkpoint come again).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use runnel_proto::v1 as pb;
use runnel_types::SeqNo;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Client, answer};
use crate::consumer::{ConsumerConfig, RecordBatch, ShardReader, StartPosition};
use crate::error::ClientError;

/// Consumer-group settings.
///
/// ```
/// use runnel_client::GroupConfig;
///
/// let config = GroupConfig::new("billing", "billing-host-1");
/// assert_eq!(config.group, "billing");
/// ```
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// The group's name: members with the same name share the shards.
    pub group: String,
    /// This member's id: unique per instance; stable across restarts keeps leases sticky.
    pub member_id: String,
    /// A lease lapses after this long without a heartbeat.
    pub session_timeout: Duration,
    /// How each leased shard is read.
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    /// A member `member_id` of `group`, other settings at their defaults.
    pub fn new(group: &str, member_id: &str) -> GroupConfig {
        GroupConfig {
            group: group.to_string(),
            member_id: member_id.to_string(),
            session_timeout: Duration::from_secs(10),
            consumer: ConsumerConfig::default(),
        }
    }
}

/// What a member sees. (Variant fields are described in each variant's doc.)
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// This member now holds the shard's lease and reads it from `resume_after` (the
    /// group's checkpoint; `None` reads from the oldest record).
    LeaseAcquired {
        shard_id: String,
        resume_after: Option<SeqNo>,
    },
    /// Records of a leased shard. Process them, then [`ConsumerGroup::checkpoint`].
    Records(RecordBatch),
    /// A closed shard was read to its end. After processing its records, call
    /// [`ConsumerGroup::checkpoint_shard_end`] so that the group moves on to its children.
    ShardEnded {
        shard_id: String,
        children: Vec<String>,
    },
    /// The lease went to another member (or lapsed): stop processing the shard.
    /// Batches of it still undelivered are dropped.
    LeaseLost { shard_id: String },
    /// Reading the shard failed for good; it starts again from the checkpoint at the
    /// next heartbeat if the lease is still held.
    ReaderFailed {
        shard_id: String,
        error: ClientError,
    },
}

struct Held {
    lease_counter: u64,
    /// The last record delivered to the caller, for `checkpoint_shard_end`.
    last_delivered: Option<SeqNo>,
    ended: bool,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    held: BTreeMap<String, Held>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records carry the lease they were read under, so that stale ones can be dropped.
struct Tagged {
    lease_counter: u64,
    event: GroupEvent,
}

/// A member of a consumer group.
///
/// ```no_run
/// # async fn demo() -> Result<(), runnel_client::ClientError> {
/// use runnel_client::{Client, ClientConfig, ConsumerGroup, GroupConfig, GroupEvent};
///
/// let client = Client::new(["127.0.0.1:7100"], ClientConfig::default())?;
/// let mut group = ConsumerGroup::join(client, "orders", GroupConfig::new("billing", "host-1"));
/// while let Some(event) = group.next().await {
///     match event {
///         GroupEvent::Records(batch) => {
///             // ... process batch.records ...
///             if let Some(seq) = batch.last_sequence_number() {
///                 group.checkpoint(&batch.shard_id, seq).await?;
///             }
///         }
///         GroupEvent::ShardEnded { shard_id, .. } => group.checkpoint_shard_end(&shard_id).await?,
///         other => println!("{other:?}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct ConsumerGroup {
    client: Client,
    stream: String,
    config: GroupConfig,
    state: Shared,
    control_rx: mpsc::UnboundedReceiver<GroupEvent>,
    data_rx: mpsc::Receiver<Tagged>,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl ConsumerGroup {
    /// Joins `config.group` on `stream` and starts heartbeating in the background.
    pub fn join(client: Client, stream: &str, config: GroupConfig) -> ConsumerGroup {
        let state = Shared::default();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(config.consumer.buffered_batches_max.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let hb = Heartbeat {
            client: client.clone(),
            stream: stream.to_string(),
            config: config.clone(),
            state: state.clone(),
            control_tx,
            data_tx,
        };
        let span =
            tracing::info_span!("group", stream, group = %config.group, member = %config.member_id);
        let heartbeat = tokio::spawn(hb.run(stop_rx).instrument(span));
        ConsumerGroup {
            client,
            stream: stream.to_string(),
            config,
            state,
            control_rx,
            data_rx,
            stop: Some(stop_tx),
            heartbeat,
        }
    }

    /// The next event; `None` after [`ConsumerGroup::leave`].
    pub async fn next(&mut self) -> Option<GroupEvent> {
        loop {
            let tagged = tokio::select! {
                biased;
                Some(e) = self.control_rx.recv() => return Some(e),
                t = self.data_rx.recv() => t?,
            };
            if let Some(e) = self.accept(tagged) {
                return Some(e);
            }
        }
    }

    /// Passes a data event if its lease is still held, noting what checkpoints need.
    fn accept(&self, t: Tagged) -> Option<GroupEvent> {
        let mut st = lock(&self.state);
        let shard = match &t.event {
            GroupEvent::Records(b) => &b.shard_id,
            GroupEvent::ShardEnded { shard_id, .. } | GroupEvent::ReaderFailed { shard_id, .. } => {
                shard_id
            }
            _ => return Some(t.event),
        };
        let held = st
            .held
            .get_mut(shard)
            .filter(|h| h.lease_counter == t.lease_counter)?;
        match &t.event {
            GroupEvent::Records(b) => {
                held.last_delivered = b.last_sequence_number().or(held.last_delivered)
            }
            GroupEvent::ShardEnded { .. } => held.ended = true,
            _ => {}
        }
        if matches!(t.event, GroupEvent::ReaderFailed { .. }) {
            st.held.remove(&shard.clone());
        }
        Some(t.event)
    }

    /// The shards this member holds leases on now.
    pub fn leased_shards(&self) -> Vec<String> {
        lock(&self.state).held.keys().cloned().collect()
    }

    /// Stores `sequence_number` as the group's progress on `shard_id`: after a restart
    /// or a rebalance, reading resumes just after it. Fails with
    /// [`ClientError::LeaseLost`] (and stops the shard's reader) if the lease moved on.
    pub async fn checkpoint(
        &self,
        shard_id: &str,
        sequence_number: SeqNo,
    ) -> Result<(), ClientError> {
        self.store_checkpoint(shard_id, Some(sequence_number), false)
            .await
    }

    /// Marks a closed shard as read to its end (after its last record is processed),
    /// so that the group starts reading its children.
    pub async fn checkpoint_shard_end(&self, shard_id: &str) -> Result<(), ClientError> {
        self.store_checkpoint(shard_id, None, true).await
    }

    async fn store_checkpoint(
        &self,
        shard_id: &str,
        seq: Option<SeqNo>,
        shard_end: bool,
    ) -> Result<(), ClientError> {
        let (lease_counter, last) = {
            let st = lock(&self.state);
            let held = st
                .held
                .get(shard_id)
                .ok_or_else(|| ClientError::LeaseLost {
                    message: format!(
                        "member {} holds no lease on {shard_id}",
                        self.config.member_id
                    ),
                })?;
            (held.lease_counter, held.last_delivered)
        };
        let req = pb::CheckpointRequest {
            stream_name: self.stream.clone(),
            group_name: self.config.group.clone(),
            member_id: self.config.member_id.clone(),
            shard_id: shard_id.to_string(),
            lease_counter,
            sequence_number: seq.or(last).map(|s| s.to_string()).unwrap_or_default(),
            shard_end,
        };
        let result = self
            .client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.groups(&a)?.checkpoint(req).await) }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e @ ClientError::LeaseLost { .. }) => {
                if let Some(h) = lock(&self.state).held.remove(shard_id) {
                    h.task.abort();
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Leaves the group: stops every reader and gives the leases back at once, so that
    /// other members take the shards without waiting for the session to lapse.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        if let Some(stop) = self.stop.take() {
            let (tx, rx) = oneshot::channel();
            if stop.send(tx).is_ok() {
                let _ = rx.await;
            }
        }
        let req = pb::LeaveGroupRequest {
            stream_name: self.stream.clone(),
            group_name: self.config.group.clone(),
            member_id: self.config.member_id.clone(),
        };
        self.client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.groups(&a)?.leave_group(req).await) }
            })
            .await?;
        Ok(())
    }
}

impl Drop for ConsumerGroup {
    fn drop(&mut self) {
        self.heartbeat.abort();
        for h in lock(&self.state).held.values() {
            h.task.abort();
        }
    }
}

/// The background task: heartbeats and makes the readers match the leases.
struct Heartbeat {
    client: Client,
    stream: String,
    config: GroupConfig,
    state: Shared,
    control_tx: mpsc::UnboundedSender<GroupEvent>,
    data_tx: mpsc::Sender<Tagged>,
}

impl Heartbeat {
    async fn run(self, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut last_ok = Instant::now();
        let mut address = self.client.any_endpoint();
        let mut interval = self.config.session_timeout / 3;
        loop {
            match self.join(&address).await {
                Ok(resp) => {
                    last_ok = Instant::now();
                    if resp.heartbeat_interval_ms > 0 {
                        interval = Duration::from_millis(resp.heartbeat_interval_ms)
                            .min(self.config.session_timeout / 2);
                    }
                    self.reconcile(resp.leases);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %address, "heartbeat failed");
                    address = match e {
                        ClientError::NotLeader {
                            leader: Some(l), ..
                        } => l,
                        _ => self.client.any_endpoint(),
                    };
                    if last_ok.elapsed() >= self.config.session_timeout {
                        // Our leases have lapsed by now: another member may hold them.
                        self.reconcile(Vec::new());
                    }
                }
            }
            tokio::select! {
                biased;
                done = &mut stop => {
                    self.reconcile(Vec::new());
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn join(&self, address: &str) -> Result<pb::JoinGroupResponse, ClientError> {
        let req = pb::JoinGroupRequest {
            stream_name: self.stream.clone(),
            group_name: self.config.group.clone(),
            member_id: self.config.member_id.clone(),
            session_timeout_ms: self.config.session_timeout.as_millis() as u64,
        };
        let call = async { answer(address, self.client.groups(address)?.join_group(req).await) };
        self.client.timed(address, call).await
    }

    /// Stops readers whose lease is gone, starts readers for new ready leases.
    fn reconcile(&self, leases: Vec<pb::ShardLease>) {
        let wanted: BTreeMap<String, pb::ShardLease> = leases
            .into_iter()
            .filter(|l| l.ready)
            .map(|l| (l.shard_id.clone(), l))
            .collect();
        let mut st = lock(&self.state);
        let gone: Vec<String> = st
            .held
            .iter()
            .filter(|(id, h)| {
                wanted
                    .get(*id)
                    .is_none_or(|l| l.lease_counter != h.lease_counter)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(h) = st.held.remove(&id) {
                h.task.abort();
                if !h.ended {
                    tracing::info!(shard = %id, "lease lost; reader stopped");
                    let _ = self.control_tx.send(GroupEvent::LeaseLost { shard_id: id });
                }
            }
        }
        for (id, lease) in wanted {
            if st.held.contains_key(&id) {
                continue;
            }
            let resume_after = lease.checkpoint_sequence_number.parse::<SeqNo>().ok();
            let start = resume_after.map_or(
                StartPosition::TrimHorizon,
                StartPosition::AfterSequenceNumber,
            );
            let reader = ShardReader::new(
                self.client.clone(),
                &self.stream,
                &id,
                start,
                self.config.consumer.clone(),
            );
            let task = tokio::spawn(read_leased(
                reader,
                lease.lease_counter,
                self.data_tx.clone(),
            ));
            tracing::info!(shard = %id, lease_counter = lease.lease_counter, ?resume_after, "lease acquired");
            let _ = self.control_tx.send(GroupEvent::LeaseAcquired {
                shard_id: id.clone(),
                resume_after,
            });
            st.held.insert(
                id,
                Held {
                    lease_counter: lease.lease_counter,
                    last_delivered: resume_after,
                    ended: false,
                    task,
                },
            );
        }
    }
}

/// One leased shard's reader task.
async fn read_leased(mut reader: ShardReader, lease_counter: u64, tx: mpsc::Sender<Tagged>) {
    let mut failures = 0u32;
    loop {
        let event = match reader.next().await {
            Ok(Some(batch)) => {
                failures = 0;
                GroupEvent::Records(batch)
            }
            Ok(None) => {
                let children = reader
                    .children()
                    .map(<[String]>::to_vec)
                    .unwrap_or_default();
                let _ = tx
                    .send(Tagged {
                        lease_counter,
                        event: GroupEvent::ShardEnded {
                            shard_id: reader.shard_id().to_string(),
                            children,
                        },
                    })
                    .await;
                return;
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(shard = %reader.shard_id(), error = %e, "reading failed; resuming after the last record");
                tokio::time::sleep(reader.client_backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
            Err(error) => {
                let _ = tx
                    .send(Tagged {
                        lease_counter,
                        event: GroupEvent::ReaderFailed {
                            shard_id: reader.shard_id().to_string(),
                            error,
                        },
                    })
                    .await;
                return;
            }
        };
        if tx
            .send(Tagged {
                lease_counter,
                event,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
