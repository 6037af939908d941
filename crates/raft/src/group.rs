//! One hosted group: its openraft instance, storage and write pipeline, and the API the
//! rest of the server uses: write, read committed entries, watch the commit point,
//! change membership, trim.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use openraft::{ChangeMembers, EntryPayload, ServerState};
use runnel_types::{GroupId, LogIndex, NodeId, Record};

use crate::codec;
use crate::detwatch::DetReceiver;
use crate::error::Error;
use crate::io::blocking;
use crate::log_store::{GroupStorage, to_log_index, to_raft_index};
use crate::pipeline::{Pipeline, WriteAck, write_error};
use crate::state_machine::ShardStateMachine;
use crate::types::{Command, PeerNode, Raft};

/// How long `trim` waits for openraft to build the snapshot and purge.
const TRIM_WAIT: Duration = Duration::from_secs(30);

/// How long `transfer_leader` waits for the new leader to take over: the target must
/// catch up with the log, then win an election (a few election timeouts at most).
const TRANSFER_WAIT: Duration = Duration::from_secs(10);

/// A committed record batch, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBatch {
    pub index: LogIndex,
    /// Arrival time assigned by the leader (never decreasing along the log).
    pub timestamp_ms: u64,
    pub records: u32,
    /// Encoded records: `runnel_types::record::decode_batch`.
    pub batch: Bytes,
}

/// What a read returns: the record batches found, and where the next read starts
/// (past Raft's own blank and membership entries too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatches {
    pub batches: Vec<CommittedBatch>,
    pub next: LogIndex,
}

/// The commit point of a group, to park on until new entries commit.
pub struct CommitWatch {
    rx: DetReceiver<LogIndex>,
}

impl CommitWatch {
    /// The latest commit point (0: nothing committed).
    pub fn get(&self) -> LogIndex {
        *self.rx.borrow()
    }

    /// Waits until the commit point is at least `index`; returns it. Fails when the
    /// group shuts down.
    pub async fn wait_for(&mut self, index: LogIndex) -> Result<LogIndex, Error> {
        loop {
            let now = *self.rx.borrow_seen();
            if now >= index {
                return Ok(now);
            }
            self.rx
                .wait_changed()
                .await
                .map_err(|_| Error::ShuttingDown { group: GroupId(0) })?;
        }
    }
}

/// A member's role in a group's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Voter,
    Learner,
}

/// A replica's role, as [`Group::replica_view`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaRole {
    Leader,
    Follower,
    Learner,
    Candidate,
    Shutdown,
}

/// One look at a replica (see [`Group::replica_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    pub role: ReplicaRole,
    pub term: u64,
    /// On a leader: entries the furthest other member is behind the leader's log.
    pub lag_max: Option<u64>,
}

/// A group hosted on this node.
pub struct Group {
    pub(crate) id: GroupId,
    pub(crate) node_id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) storage: Arc<GroupStorage>,
    pub(crate) sm: ShardStateMachine,
    pub(crate) pipeline: Pipeline,
    /// Its openraft ticker is off (idle; see `quiesce.rs`).
    pub(crate) quiesced: AtomicBool,
}

fn members_map(members: &BTreeMap<NodeId, String>) -> BTreeMap<u64, PeerNode> {
    members
        .iter()
        .map(|(id, addr)| (id.0, PeerNode::new(addr.clone())))
        .collect()
}

impl Group {
    pub fn id(&self) -> GroupId {
        self.id
    }

    /// The openraft instance, for metrics and tests.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Whether this replica is quiesced: idle, with no ticks, heartbeats or election
    /// timer of its own (see `quiesce.rs`).
    pub fn is_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::SeqCst)
    }

    /// Stops the ticker (no heartbeats, no election timer) until [`Group::wake`].
    pub(crate) fn quiesce(&self) {
        if !self.quiesced.swap(true, Ordering::SeqCst) {
            self.raft.runtime_config().tick(false);
        }
    }

    /// Turns the ticker back on: something happened in the group, or its leader's
    /// node went silent.
    pub(crate) fn wake(&self) {
        if self.quiesced.swap(false, Ordering::SeqCst) {
            self.raft.runtime_config().tick(true);
        }
    }

    fn raft_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Raft {
            group: self.id,
            detail: e.to_string(),
        }
    }

    /// Makes a brand-new group's first membership: call on one member only.
    pub async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<(), Error> {
        self.raft
            .initialize(members_map(members))
            .await
            .map_err(|e| self.raft_err(e))
    }

    /// Appends `records` (group commit on the leader); returns once committed, with
    /// where they landed. On a follower: [`Error::NotLeader`] with the leader.
    pub async fn write(&self, records: Vec<Record>) -> Result<WriteAck, Error> {
        self.wake();
        self.pipeline.write(records).await
    }

    /// Appends one command as its own entry, bypassing group commit.
    pub async fn propose(&self, command: Command) -> Result<LogIndex, Error> {
        self.wake();
        let resp = crate::lease::client_write(&self.raft, command)
            .await
            .map_err(|e| write_error(self.id, &e))?;
        Ok(LogIndex(resp.data.index))
    }

    /// The commit point: every entry up to it is committed and may be read.
    pub fn committed(&self) -> LogIndex {
        self.sm.committed()
    }

    pub fn watch_commit(&self) -> CommitWatch {
        CommitWatch {
            rx: self.sm.commit_watch(),
        }
    }

    /// The record batches committed from `from` on, up to about `max_bytes`.
    pub async fn read_committed(
        &self,
        from: LogIndex,
        max_bytes: usize,
    ) -> Result<ReadBatches, Error> {
        let mut committed = self.committed();
        if runnel_types::planted::enabled(runnel_types::planted::Bug::ReadPastCommit) {
            // PLANTED BUG (simulation only): read up to the log's tip, committed or not.
            committed = self
                .storage
                .log()
                .last_entry()
                .map_or(committed, |e| e.index);
        }
        let from = from.max(LogIndex(1));
        if from > committed {
            return Ok(ReadBatches {
                batches: Vec::new(),
                next: from,
            });
        }
        let (group, storage) = (self.id, self.storage.clone());
        blocking(move || read_batches(group, &storage, from, committed, max_bytes))
            .await
            .map_err(|e| Error::Io {
                path: "segment log".into(),
                source: e,
            })?
    }

    /// The current leader, as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader.map(NodeId)
    }

    /// What this replica is right now, for the node's gauges: its role, its term and,
    /// on a leader, how far the furthest follower or learner is behind.
    pub fn replica_view(&self) -> ReplicaView {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => ReplicaRole::Leader,
            ServerState::Follower => ReplicaRole::Follower,
            ServerState::Learner => ReplicaRole::Learner,
            ServerState::Candidate => ReplicaRole::Candidate,
            ServerState::Shutdown => ReplicaRole::Shutdown,
        };
        let last = m.last_log_index.unwrap_or(0);
        let lag_max = m.replication.as_ref().map(|targets| {
            targets
                .iter()
                .filter(|(id, _)| **id != self.node_id.0)
                .map(|(_, matched)| last.saturating_sub(matched.as_ref().map_or(0, |l| l.index)))
                .max()
                .unwrap_or(0)
        });
        ReplicaView {
            role,
            term: m.current_term,
            lag_max,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The leader and its address as this node knows them (for `NotLeader`).
    fn leader_hint(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some((NodeId(id), node.addr.clone()))
    }

    /// Hands this group's leadership to `to` and waits (at most [`TRANSFER_WAIT`])
    /// until this node sees `to` as the leader. Call on the leader; elsewhere it is
    /// [`Error::NotLeader`]. `to` must be a voter of the group.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(Error::NotLeader {
                group: self.id,
                leader: self.leader_hint(),
            });
        }
        if to == self.node_id {
            return Ok(());
        }
        self.wake();
        let is_voter = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == to.0)
        };
        if !is_voter {
            return Err(Error::Raft {
                group: self.id,
                detail: format!("cannot transfer leadership to node {to}: not a voter"),
            });
        }
        self.raft
            .trigger()
            .transfer_leader(to.0)
            .await
            .map_err(|e| self.raft_err(e))?;
        self.raft
            .wait(Some(TRANSFER_WAIT))
            .metrics(|m| m.current_leader == Some(to.0), "leadership transferred")
            .await
            .map_err(|e| self.raft_err(format!("transfer leadership to node {to}: {e}")))?;
        Ok(())
    }

    /// Adds `node` as a learner and waits until it has caught up with the log.
    ///
    /// A node that is a learner already is removed first and added again. Its replica
    /// may have been deleted and created afresh since it was added (a cancelled move,
    /// then a new move to the same node): the leader's record of what the learner
    /// holds would then be stale, and openraft would report it caught up at once. A
    /// fresh add starts that record from nothing; entries the learner does hold are
    /// found again by the usual probing, not sent twice.
    pub async fn add_learner(&self, node: NodeId, addr: &str) -> Result<(), Error> {
        self.wake();
        if self.role_of(node) == Some(Role::Learner) {
            self.remove_learner(node).await?;
        }
        self.raft
            .add_learner(node.0, PeerNode::new(addr), true)
            .await
            .map_err(|e| write_error(self.id, &e))?;
        Ok(())
    }

    /// Drops `node` from the group's learners, leaving the voters as they are (a move
    /// that was cancelled before its learner was promoted). Call on the leader. Done
    /// already when `node` is not a member; refused when it is a voter, which leaves
    /// through [`Group::change_voters`].
    pub async fn remove_learner(&self, node: NodeId) -> Result<(), Error> {
        match self.role_of(node) {
            None => return Ok(()),
            Some(Role::Voter) => {
                return Err(Error::Raft {
                    group: self.id,
                    detail: format!("node {node} is a voter, not a learner: change the voters"),
                });
            }
            Some(Role::Learner) => {}
        }
        self.wake();
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node.0])), false)
            .await
            .map_err(|e| write_error(self.id, &e))?;
        Ok(())
    }

    /// What `node` is in the membership this replica knows (the latest appended).
    fn role_of(&self, node: NodeId) -> Option<Role> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        if membership.voter_ids().any(|v| v == node.0) {
            Some(Role::Voter)
        } else if membership.learner_ids().any(|l| l == node.0) {
            Some(Role::Learner)
        } else {
            None
        }
    }

    /// Makes `voters` the voter set (learners among them are promoted; voters left out
    /// are removed from the group entirely).
    pub async fn change_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), Error> {
        self.wake();
        let ids: BTreeSet<u64> = voters.iter().map(|n| n.0).collect();
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(ids), false)
            .await
            .map_err(|e| write_error(self.id, &e))?;
        Ok(())
    }

    /// Retention on this replica: deletes the entries up to `up_to` (at most the commit
    /// point). openraft first snapshots (cheap: the log is the snapshot), then purges;
    /// a replica that later needs these entries gets the rest of the log as a snapshot.
    pub async fn trim(&self, up_to: LogIndex) -> Result<(), Error> {
        let up_to = up_to.min(self.committed());
        if up_to.0 == 0 {
            return Ok(());
        }
        let raft_index = to_raft_index(up_to);
        self.storage.set_trim_floor(up_to);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| self.raft_err(e))?;
        self.raft
            .wait(Some(TRIM_WAIT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= raft_index),
                "snapshot for trim",
            )
            .await
            .map_err(|e| self.raft_err(e))?;
        self.raft
            .trigger()
            .purge_log(raft_index)
            .await
            .map_err(|e| self.raft_err(e))?;
        self.raft
            .wait(Some(TRIM_WAIT))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= raft_index),
                "purge for trim",
            )
            .await
            .map_err(|e| self.raft_err(e))?;
        Ok(())
    }

    /// The first entry still on disk (after trimming).
    pub fn first_index(&self) -> Option<LogIndex> {
        self.storage.log().first_index()
    }

    /// Whether this replica has ever held a log entry (present or purged). Read from
    /// storage, not from openraft's metrics, which may not yet reflect a log that was
    /// just reopened: deciding "never initialized" from stale metrics made a restarted
    /// node try to initialize its group a second time.
    pub fn has_log(&self) -> bool {
        let log = self.storage.log();
        log.last_entry().is_some() || log.purged().is_some()
    }

    /// Stops the group's openraft instance (its files stay).
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.raft.shutdown().await.map_err(|e| self.raft_err(e))
    }
}

fn read_batches(
    group: GroupId,
    storage: &GroupStorage,
    from: LogIndex,
    committed: LogIndex,
    max_bytes: usize,
) -> Result<ReadBatches, Error> {
    let log = storage.log();
    if let Some(first) = log.first_index()
        && from < first
    {
        return Err(Error::Trimmed {
            group,
            requested: from,
            first,
        });
    }
    let entries = log
        .read(from, committed.next(), max_bytes)
        .map_err(|source| Error::Log { group, source })?;
    let next = entries.last().map_or(from, |e| e.index.next());
    let mut batches = Vec::with_capacity(entries.len());
    for e in entries {
        if let EntryPayload::Normal(Command::Records { records, batch, .. }) =
            codec::decode_payload(&e.payload)?
        {
            batches.push(CommittedBatch {
                index: e.index,
                timestamp_ms: e.timestamp_ms,
                records,
                batch,
            });
        }
    }
    Ok(ReadBatches { batches, next })
}

/// The segment-log index of a Raft log index; re-exported for callers that hold Raft
/// metrics.
pub fn log_index_of_raft(raft_index: u64) -> LogIndex {
    to_log_index(raft_index)
}
