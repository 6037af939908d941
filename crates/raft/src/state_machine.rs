//! openraft's `RaftStateMachine` for a shard. Its state is small: the last applied log
//! id (the commit point readers may read up to), the last membership, and the latest
//! snapshot's meta. The records stay in the log; applying an entry only moves the
//! commit point, publishes it on the commit watch, and answers the proposer with the
//! entry's index.
//!
//! Applied log id and membership are written to node metadata without a flush, at most
//! every `META_WRITE_INTERVAL` (`log_store.rs`) and at once when the membership
//! changed: after a crash they may be older, and openraft re-applies the committed
//! entries above them, which costs nothing here. A snapshot writes them with its own
//! meta, so that the applied state on disk is never below the log's purge point
//! (openraft cannot re-apply purged entries).

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use runnel_nodemeta::GroupKey;
use runnel_types::LogIndex;

use crate::codec;
use crate::detwatch::{DetReceiver, DetSender};
use crate::error::Error;
use crate::io::blocking;
use crate::log_store::{GroupStorage, META_WRITE_INTERVAL, to_log_index};
use crate::snapshot::{self, ShardSnapshot};
use crate::types::{RaftLogId, RaftSnapshotMeta, RaftStoredMembership, Reply, TypeConfig};

/// The commit point in segment-log indices (0: nothing applied).
fn applied_index(st: &SmState) -> LogIndex {
    st.last_applied
        .map_or(LogIndex(0), |l| to_log_index(l.index))
}

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, ShardSnapshot>;

#[derive(Clone, Debug, Default)]
struct SmState {
    last_applied: Option<RaftLogId>,
    membership: RaftStoredMembership,
    snapshot: Option<RaftSnapshotMeta>,
}

/// A group's state machine. Clones share state.
#[derive(Clone)]
pub struct ShardStateMachine {
    storage: Arc<GroupStorage>,
    state: Arc<Mutex<SmState>>,
    commit: DetSender<LogIndex>,
}

impl ShardStateMachine {
    /// Loads the applied state and the snapshot meta from node metadata.
    pub fn open(storage: Arc<GroupStorage>) -> Result<ShardStateMachine, Error> {
        let (meta, group) = (&storage.meta, storage.group);
        let last_applied = match meta.group_get(group, GroupKey::Applied)? {
            Some(b) => codec::decode_log_id(&b)?,
            None => None,
        };
        let membership = match meta.group_get(group, GroupKey::Membership)? {
            Some(b) => codec::decode_stored_membership(&b)?,
            None => RaftStoredMembership::default(),
        };
        let snapshot = match meta.group_get(group, GroupKey::Snapshot)? {
            Some(b) => Some(codec::decode_snapshot_meta(&b)?),
            None => None,
        };
        // A snapshot installed but not yet reflected in `applied` (crash in between).
        let mut state = SmState {
            last_applied,
            membership,
            snapshot,
        };
        if let Some(s) = &state.snapshot
            && s.last_log_id > state.last_applied
        {
            state.last_applied = s.last_log_id;
            state.membership = s.last_membership.clone();
        }
        let (commit, _) = crate::detwatch::channel(applied_index(&state));
        Ok(ShardStateMachine {
            storage,
            state: Arc::new(Mutex::new(state)),
            commit,
        })
    }

    /// A receiver of the commit point (the last applied index).
    pub fn commit_watch(&self) -> DetReceiver<LogIndex> {
        self.commit.new_receiver()
    }

    /// The last applied (committed) index.
    pub fn committed(&self) -> LogIndex {
        *self.commit.borrow()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn persist_applied(&self, st: &SmState) -> Result<(), Error> {
        let applied = codec::encode_log_id(st.last_applied.as_ref());
        let membership = codec::encode_stored_membership(&st.membership);
        self.storage.meta.group_put_all(
            self.storage.group,
            &[
                (GroupKey::Applied, &applied),
                (GroupKey::Membership, &membership),
            ],
        )?;
        Ok(())
    }

    fn publish(&self, st: &SmState) {
        let index = applied_index(st);
        self.commit.modify(|cur| {
            let changed = *cur != index;
            *cur = index;
            changed
        });
    }

    fn current_snapshot(&self, meta: RaftSnapshotMeta) -> Snapshot {
        let last = meta
            .last_log_id
            .map_or(LogIndex(0), |l| to_log_index(l.index));
        Snapshot {
            meta,
            snapshot: ShardSnapshot::from_log(self.storage.log.clone(), last),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ShardStateMachine {
    type SnapshotData = ShardSnapshot;

    /// Cheap: a snapshot is the applied point plus a handle on the log.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let meta = {
            let st = self.lock();
            RaftSnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
            }
        };
        let bytes = codec::encode_snapshot_meta(&meta);
        // The applied state goes with it (it may lag, see the module docs): a purge
        // up to the snapshot follows, and the applied state must not stay below it.
        let applied = codec::encode_log_id(meta.last_log_id.as_ref());
        let membership = codec::encode_stored_membership(&meta.last_membership);
        let storage = self.storage.clone();
        self.storage.applied_written.mark();
        blocking(move || {
            storage.meta.group_put_all(
                storage.group,
                &[
                    (GroupKey::Snapshot, &bytes),
                    (GroupKey::Applied, &applied),
                    (GroupKey::Membership, &membership),
                ],
            )
        })
        .await?
        .map_err(|e| Error::from(e).into_io())?;
        self.lock().snapshot = Some(meta.clone());
        Ok(self.current_snapshot(meta))
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotData = ShardSnapshot;
    type SnapshotBuilder = ShardStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<RaftLogId>, RaftStoredMembership), io::Error> {
        let st = self.lock();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut membership_changed = false;
        while let Some((entry, responder)) = entries.try_next().await? {
            {
                let mut st = self.lock();
                st.last_applied = Some(entry.log_id);
                if let EntryPayload::Membership(m) = entry.payload {
                    st.membership = RaftStoredMembership::new(Some(entry.log_id), m);
                    membership_changed = true;
                }
            }
            if let Some(r) = responder {
                r.send(Reply {
                    index: to_log_index(entry.log_id.index).0,
                });
            }
        }
        let st = self.lock().clone();
        let written = &self.storage.applied_written;
        if membership_changed {
            written.mark();
            self.persist_applied(&st).map_err(Error::into_io)?;
        } else if written.due(META_WRITE_INTERVAL) {
            self.persist_applied(&st).map_err(Error::into_io)?;
        }
        self.publish(&st);
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> ShardStateMachine {
        self.clone()
    }

    /// The log is replaced and the snapshot recorded in node metadata by
    /// `snapshot::install` (restartable: see the `snapshot` module); then the
    /// in-memory state follows.
    async fn install_snapshot(
        &mut self,
        meta: &RaftSnapshotMeta,
        snapshot: ShardSnapshot,
    ) -> Result<(), io::Error> {
        let storage = self.storage.clone();
        let snapshot_meta = meta.clone();
        // The log's tail changes under the cache: forget it before and after.
        storage.forget_tail();
        let s = storage.clone();
        blocking(move || snapshot::install(s.group, &s.log, &s.meta, &snapshot, &snapshot_meta))
            .await?
            .map_err(Error::into_io)?;
        storage.forget_tail();
        // Arrival times only grow: the next entries continue from the installed log's
        // newest, not from the replaced log's.
        let s = storage.clone();
        blocking(move || s.reload_last_timestamp())
            .await?
            .map_err(Error::into_io)?;
        let st = {
            let mut st = self.lock();
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            st.snapshot = Some(meta.clone());
            st.clone()
        };
        self.publish(&st);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let meta = self.lock().snapshot.clone();
        Ok(meta.map(|m| self.current_snapshot(m)))
    }
}
