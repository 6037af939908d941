//! The placement service glue: this node's applied copy of the meta state, and the way
//! to change it.
//!
//! The meta group is the Raft group [`GroupId::META`], hosted by the same
//! [`Registry`] as the shard groups. Its voters are the `--initial-cluster` nodes;
//! every other node is a learner of it, so every node holds an applied copy of the meta
//! state and answers metadata calls from it.
//!
//! - A meta command travels as the data of a one-record batch (partition key `meta`,
//!   data the JSON of a [`Command`]) written with `Group::write`. Group commit may put
//!   several commands in one entry; each keeps its own slot.
//! - [`applier`]: on every node, follows the meta group's commit point, decodes the
//!   committed commands in order, applies them to the [`MetaState`], keeps each
//!   command's result (a bounded map by log index and slot) and publishes the applied
//!   index.
//! - [`Placement::propose`]: writes on the meta leader (or forwards to it over the
//!   internal `Meta` service, [`service`]), then waits until *this* node has applied
//!   the entry and returns the state machine's own answer, so a read that follows sees
//!   the change.
//! - [`bootstrap`]: creating or joining the meta group, registering, heartbeats.
//! - [`leader`]: the meta leader's loop (mark down, plan, propose the actions).
//!
//! - Trimming: every [`META_SNAPSHOT_EVERY_ENTRIES`] applied entries the meta leader
//!   writes the whole state into the log (`Command::SnapshotState { up_to, state }`,
//!   [`leader`]); once a node has applied that entry it trims its own copy of the meta
//!   log up to `up_to` ([`applier`]). A node whose log starts after its applied state
//!   (restarted after a trim, or caught up by a Raft snapshot, which for our groups is
//!   the retained log) reads on to the first snapshot entry, loads it and replays the
//!   entries after `up_to`. The snapshot lives in the log rather than in openraft's
//!   snapshot so that the raft crate keeps one snapshot format for every group.

pub mod applier;
pub mod bootstrap;
pub mod leader;
pub mod service;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use runnel_meta::{Command, CommandResult, MetaError, MetaState, PlannerConfig};
use runnel_raft::Registry;
use runnel_raft::detwatch::{DetReceiver, DetSender};
use runnel_types::{GroupId, LogIndex, NodeId, Record};
use tracing::debug;

use crate::error::{RETRY_AFTER_MS_NO_LEADER, ServerError};
use crate::iterator::IteratorKey;

/// The partition key of a meta command's record.
pub const META_PARTITION_KEY: &str = "meta";
/// Results of applied commands kept for their proposers (oldest dropped first).
pub const RESULTS_KEPT_MAX: usize = 4096;
/// How long `propose` waits for its command to commit and apply here.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Meta log entries applied between two state snapshots (each lets every node trim its
/// copy of the meta log). Heartbeats are logged, so a 3-node cluster writes about 3
/// entries a second when idle: a snapshot every hour or so, and a log of at most about
/// twice this many entries.
pub const META_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;

/// Timings of the placement service on one node (tests shorten them).
#[derive(Clone, Debug)]
pub struct PlacementConfig {
    pub planner: PlannerConfig,
    /// The meta leader's planning period.
    pub plan_interval_ms: u64,
    /// A node's heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// The shard manager's reconcile period (it also runs on every applied change).
    pub reconcile_interval_ms: u64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            planner: PlannerConfig::default(),
            plan_interval_ms: 500,
            heartbeat_interval_ms: 1000,
            reconcile_interval_ms: 1000,
        }
    }
}

/// The applied meta state and the log index it reflects.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every meta log entry up to here is applied.
    pub index: LogIndex,
    pub state: MetaState,
    /// `up_to` of the last `SnapshotState` applied or loaded: the meta log may be
    /// trimmed up to here.
    pub snapshot_up_to: LogIndex,
}

type Outcome = Result<CommandResult, MetaError>;

/// This node's view of the placement service.
pub struct Placement {
    node_id: NodeId,
    registry: Arc<Registry>,
    applied: DetSender<Applied>,
    /// Keeps the watch open while no one else listens.
    _applied_rx: DetReceiver<Applied>,
    /// Result of each applied command by (entry, slot), for its proposer.
    results: Mutex<BTreeMap<(LogIndex, u32), Outcome>>,
    /// Addresses of the initial voters, for finding the meta leader before the node
    /// table knows it.
    seed_addresses: BTreeMap<NodeId, String>,
    forward: service::Forwarder,
    /// The meta leader writes a `SnapshotState` once this many entries were applied
    /// since the last one (tests lower it with [`Placement::set_snapshot_every`]).
    snapshot_every: AtomicU64,
    /// A trim of the local meta log is running (one at a time).
    trimming: AtomicBool,
    /// `--min-retention`, proposed with the cluster's identity if this node is the one
    /// that initialises the cluster (the first `InitCluster` wins).
    retention_ms_min: Option<u64>,
    pub config: PlacementConfig,
}

impl Placement {
    pub fn new(
        node_id: NodeId,
        registry: Arc<Registry>,
        seed_addresses: BTreeMap<NodeId, String>,
        config: PlacementConfig,
        retention_ms_min: Option<u64>,
    ) -> Placement {
        let (applied, rx) = runnel_raft::detwatch::channel(Applied::default());
        Placement {
            node_id,
            registry,
            applied,
            _applied_rx: rx,
            results: Mutex::new(BTreeMap::new()),
            seed_addresses,
            forward: service::Forwarder::default(),
            snapshot_every: AtomicU64::new(META_SNAPSHOT_EVERY_ENTRIES),
            trimming: AtomicBool::new(false),
            retention_ms_min,
            config,
        }
    }

    /// The minimum retention this node proposes when it initialises the cluster.
    pub fn proposed_retention_ms_min(&self) -> Option<u64> {
        self.retention_ms_min
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Runs `f` on this node's applied copy of the meta state.
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.applied.borrow().state)
    }

    /// The meta log index this node has applied up to.
    pub fn applied_index(&self) -> LogIndex {
        self.applied.borrow().index
    }

    /// Proposes `cmd` to the meta group (through its leader) and returns the state
    /// machine's answer once the command is applied on this node.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ServerError> {
        let data = encode_command(&cmd)?;
        let (index, slot) = match self.propose_local(data.clone()).await {
            Err(ServerError::NotLeader {
                leader: Some((id, addr)),
                ..
            }) if id != self.node_id => self.forward.propose(&addr, data).await?,
            other => other?,
        };
        self.result_of(index, slot).await
    }

    /// Appends an encoded command if this node leads the meta group.
    pub(crate) async fn propose_local(&self, data: Bytes) -> Result<(LogIndex, u32), ServerError> {
        let group = self.meta_group()?;
        if !group.is_leader() {
            return Err(ServerError::NotLeader {
                what: "the meta group".into(),
                leader: self.meta_leader(),
            });
        }
        let record = Record::new(META_PARTITION_KEY, data);
        let ack = group.write(vec![record]).await.map_err(|e| match e {
            runnel_raft::Error::NotLeader { .. } => ServerError::NotLeader {
                what: "the meta group".into(),
                leader: self.meta_leader(),
            },
            e => ServerError::from(e),
        })?;
        Ok((ack.index, ack.first_slot))
    }

    /// Waits until entry `index` is applied here and takes the result of `slot`.
    async fn result_of(&self, index: LogIndex, slot: u32) -> Result<CommandResult, ServerError> {
        let applied = self.wait_until_applied(index, PROPOSE_TIMEOUT).await;
        if !applied {
            return Err(ServerError::Unavailable {
                what: "the placement service".into(),
                reason: format!(
                    "meta entry {index} did not apply on this node within {PROPOSE_TIMEOUT:?}"
                ),
                retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
            });
        }
        let outcome = self
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(index, slot));
        match outcome {
            Some(Ok(result)) => Ok(result),
            Some(Err(e)) => Err(ServerError::from(e)),
            None => Err(ServerError::Internal(format!(
                "the result of meta entry {index} slot {slot} is gone (applied, but not kept)"
            ))),
        }
    }

    /// Waits until this node has applied the meta log up to `index`.
    pub async fn wait_until_applied(&self, index: LogIndex, timeout: Duration) -> bool {
        let mut rx = self.applied.new_receiver();
        let wait = async {
            loop {
                if rx.borrow_seen().index >= index {
                    return true;
                }
                if rx.wait_changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// This node's meta commit index, if it leads the meta group (the answer to a peer's
    /// read barrier); NotLeader otherwise.
    pub(crate) fn leader_commit_index(&self) -> Result<LogIndex, ServerError> {
        let group = self.meta_group()?;
        if !group.is_leader() {
            return Err(ServerError::NotLeader {
                what: "the meta group".into(),
                leader: self.meta_leader(),
            });
        }
        Ok(group.committed())
    }

    /// A read barrier: waits until this node has applied every meta entry the meta
    /// leader had committed when asked. Metadata reads are served from the local applied
    /// state, which may lag the leader by a heartbeat; a node about to answer "no such
    /// stream" (or "still CREATING") calls this first and reads again, so that a stream
    /// created and acknowledged through another node is never denied by one that merely
    /// lags. Positive answers skip it: they are never wrong by omission.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        let index = match self.leader_commit_index() {
            Ok(index) => index,
            Err(_) => {
                let (_, addr) = self
                    .meta_leader()
                    .filter(|(id, _)| *id != self.node_id)
                    .ok_or_else(|| ServerError::Unavailable {
                        what: "the placement service".into(),
                        reason: "no meta leader is known to this node".into(),
                        retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
                    })?;
                self.forward.read_index(&addr).await?
            }
        };
        if self
            .wait_until_applied(index, service::READ_INDEX_TIMEOUT)
            .await
        {
            Ok(())
        } else {
            Err(ServerError::Unavailable {
                what: "the placement service".into(),
                reason: format!(
                    "this node has not applied the meta log up to the leader's commit point {index} within {:?}",
                    service::READ_INDEX_TIMEOUT
                ),
                retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
            })
        }
    }

    /// The meta group's leader as this node knows it, with its address.
    pub fn meta_leader(&self) -> Option<(NodeId, String)> {
        let id = self.meta_group().ok()?.leader()?;
        Some((id, self.address_of(id)?))
    }

    /// Is this node the meta leader?
    pub fn is_meta_leader(&self) -> bool {
        self.meta_group().is_ok_and(|g| g.is_leader())
    }

    /// A node's address: from the node table, else from the initial cluster.
    pub fn address_of(&self, node: NodeId) -> Option<String> {
        self.read(|s| s.nodes.get(&node).map(|n| n.address.clone()))
            .or_else(|| self.seed_addresses.get(&node).cloned())
    }

    /// The cluster's shared key for shard iterator tags (all zeros until the cluster
    /// identity is applied, which happens before any stream can exist).
    pub fn iterator_key(&self) -> IteratorKey {
        IteratorKey(self.read(|s| s.identity.as_ref().map_or([0; 16], |i| i.iterator_key)))
    }

    /// The cluster id chosen at bootstrap (empty until applied here).
    pub fn cluster_id(&self) -> String {
        self.read(|s| {
            s.identity
                .as_ref()
                .map(|i| i.cluster_id.clone())
                .unwrap_or_default()
        })
    }

    /// Waits until `pred` holds on the applied state, or `timeout` passes; says which.
    pub async fn wait_until(&self, pred: impl Fn(&MetaState) -> bool, timeout: Duration) -> bool {
        let mut rx = self.applied.new_receiver();
        let wait = async {
            loop {
                if pred(&rx.borrow_seen().state) {
                    return true;
                }
                if rx.wait_changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// A receiver that wakes on every applied change (for the shard manager).
    pub fn subscribe(&self) -> DetReceiver<Applied> {
        self.applied.new_receiver()
    }

    fn meta_group(&self) -> Result<Arc<runnel_raft::Group>, ServerError> {
        self.registry
            .group(GroupId::META)
            .map_err(|_| ServerError::Unavailable {
                what: "the placement service".into(),
                reason: "this node does not host the meta group yet (starting or joining)".into(),
                retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
            })
    }

    /// Called by the applier: one command applied at (`index`, `slot`).
    fn record_result(&self, index: LogIndex, slot: u32, outcome: Outcome) {
        let mut results = self.results.lock().unwrap_or_else(PoisonError::into_inner);
        results.insert((index, slot), outcome);
        while results.len() > RESULTS_KEPT_MAX {
            results.pop_first();
        }
    }

    /// Called by the applier: applies `cmd` and keeps its result.
    fn apply_one(&self, index: LogIndex, slot: u32, cmd: Command) {
        let mut outcome = None;
        self.applied.modify(|a| {
            outcome = Some(runnel_meta::apply(&mut a.state, cmd));
            false // woken once per read batch, by `advance`
        });
        if let Some(outcome) = outcome {
            if let Err(e) = &outcome {
                debug!(node_id = %self.node_id, index = %index, slot, error = %e, "meta command rejected");
            }
            self.record_result(index, slot, outcome);
        }
    }

    /// How many applied entries between two state snapshots.
    pub fn snapshot_every(&self) -> u64 {
        self.snapshot_every.load(Ordering::Relaxed)
    }

    /// Changes the snapshot period (tests make the meta log trim often).
    pub fn set_snapshot_every(&self, entries: u64) {
        self.snapshot_every.store(entries.max(1), Ordering::Relaxed);
    }

    /// The applied index, the last snapshot's `up_to`, and (if a snapshot is due) a
    /// copy of the state to snapshot, read at once so that they match.
    pub(crate) fn snapshot_due(&self) -> Option<(LogIndex, MetaState)> {
        let applied = self.applied.borrow();
        let since = applied.index.0.saturating_sub(applied.snapshot_up_to.0);
        (since >= self.snapshot_every()).then(|| (applied.index, applied.state.clone()))
    }

    /// Called by the applier: a `SnapshotState` was applied (or loaded).
    fn snapshot_applied(&self, up_to: LogIndex) {
        self.applied.modify(|a| {
            a.snapshot_up_to = a.snapshot_up_to.max(up_to);
            false
        });
    }

    /// Called by the applier while it rebuilds: the state as of `up_to` replaces this
    /// node's (which was older than the start of its log).
    fn load_snapshot(&self, up_to: LogIndex, state: MetaState) {
        self.applied.modify(|a| {
            a.state = state;
            a.index = up_to;
            a.snapshot_up_to = up_to;
            true
        });
    }

    /// Claims the right to trim the local meta log; `false` if a trim runs already.
    fn start_trim(&self) -> bool {
        !self.trimming.swap(true, Ordering::AcqRel)
    }

    fn end_trim(&self) {
        self.trimming.store(false, Ordering::Release);
    }

    /// Called by the applier: everything up to `index` is applied; wakes waiters.
    fn advance(&self, index: LogIndex) {
        self.applied.modify(|a| {
            a.index = index;
            true
        });
    }
}

/// A meta command as the data of its record.
pub fn encode_command(cmd: &Command) -> Result<Bytes, ServerError> {
    serde_json::to_vec(cmd)
        .map(Bytes::from)
        .map_err(|e| ServerError::Internal(format!("cannot encode a meta command: {e}")))
}

/// A meta command from the data of its record.
pub fn decode_command(data: &[u8]) -> Result<Command, serde_json::Error> {
    serde_json::from_slice(data)
}
