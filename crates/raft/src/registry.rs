//! The groups a node hosts. Creates a group (its directory, its metadata marker, its
//! openraft instance), opens every group again after a restart, removes a group and
//! reclaims its disk. One [`Router`] (one connection per peer) serves every group,
//! and one [`TransportService`] receives for all of them.
//!
//! Layout: `<data_dir>/groups/<group id, 20 digits>/` holds the group's segment log;
//! `<data_dir>/snapshots/` stages received snapshots (`snapshot.rs`); node metadata
//! holds each group's vote, commit point and state machine values, plus a `hosted`
//! marker that says the group exists here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use runnel_log::{Disk, LogConfig, SegmentLog};
use runnel_nodemeta::{GroupKey, NodeMeta};
use runnel_types::{GroupId, NodeId};
use tracing::info;

use crate::error::Error;
use crate::flush::FsyncObserver;
use crate::group::Group;
use crate::io::blocking;
use crate::log_store::{GroupStorage, LogStore};
use crate::network::TransportConfig;
use crate::network::client::{GroupNetwork, Router};
use crate::network::server::TransportService;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::quiesce::{self, QuiesceConfig};
use crate::snapshot::{self, StagingArea};
use crate::state_machine::ShardStateMachine;
use crate::tail_cache::{COMMITTED_NODE_BYTES_MAX, TailBudget};
use crate::types::Raft;

/// The marker that says a group is hosted here (its value is unused).
const HOSTED_KEY: GroupKey = GroupKey::Custom("hosted");

/// Raft timings shared by every group of a node.
#[derive(Clone, Debug)]
pub struct RaftTimings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_interval_ms: 100,
            election_timeout_ms_min: 500,
            election_timeout_ms_max: 1000,
        }
    }
}

/// Everything a node's registry needs to know.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub node_id: NodeId,
    /// This node's internal gRPC address, `host:port`.
    pub addr: String,
    pub data_dir: PathBuf,
    pub timings: RaftTimings,
    pub log: LogConfig,
    pub transport: TransportConfig,
    pub pipeline: PipelineConfig,
    pub quiesce: QuiesceConfig,
    /// Told how long each log fsync took (the server's fsync histogram).
    pub fsync_observer: Option<FsyncObserver>,
}

impl RegistryConfig {
    pub fn new(
        node_id: NodeId,
        addr: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> RegistryConfig {
        RegistryConfig {
            node_id,
            addr: addr.into(),
            data_dir: data_dir.into(),
            timings: RaftTimings::default(),
            log: LogConfig::default(),
            transport: TransportConfig::default(),
            pipeline: PipelineConfig::default(),
            quiesce: QuiesceConfig::default(),
            fsync_observer: None,
        }
    }
}

/// The hosted groups, shared with the transport service.
pub(crate) struct Hosted {
    node_id: NodeId,
    groups: RwLock<BTreeMap<GroupId, Arc<Group>>>,
    /// The registry was shut down: background tasks end.
    stopped: AtomicBool,
    /// Where received snapshots are staged.
    pub(crate) staging: StagingArea,
}

impl Hosted {
    pub(crate) fn all(&self) -> Vec<Arc<Group>> {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        groups.values().cloned().collect()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn get(&self, group: GroupId) -> Result<Arc<Group>, Error> {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        groups.get(&group).cloned().ok_or(Error::UnknownGroup {
            group,
            node: self.node_id,
        })
    }

    pub(crate) fn raft(&self, group: GroupId) -> Result<Raft, Error> {
        Ok(self.get(group)?.raft.clone())
    }

    /// The group's openraft instance, its ticker turned back on if it was quiesced: a
    /// message that changes the group (entries, a vote request, a snapshot, a leader
    /// transfer) arrived.
    pub(crate) fn raft_woken(&self, group: GroupId) -> Result<Raft, Error> {
        let g = self.get(group)?;
        g.wake();
        Ok(g.raft.clone())
    }
}

/// A node's multi-raft host.
pub struct Registry {
    config: RegistryConfig,
    disk: Arc<dyn Disk>,
    meta: Arc<NodeMeta>,
    hosted: Arc<Hosted>,
    router: Router,
    raft_config: Arc<openraft::Config>,
    /// The quiescer task was started (on the first group opened, so that it starts
    /// inside the runtime).
    quiescer_started: AtomicBool,
    /// What the groups' tail caches may hold together (see `tail_cache.rs`).
    tail_budget: Arc<TailBudget>,
}

impl Registry {
    pub fn new(
        config: RegistryConfig,
        disk: Arc<dyn Disk>,
        meta: Arc<NodeMeta>,
    ) -> Result<Registry, Error> {
        let t = &config.timings;
        let raft_config = openraft::Config {
            cluster_name: "runnel".into(),
            heartbeat_interval: t.heartbeat_interval_ms,
            election_timeout_min: t.election_timeout_ms_min,
            election_timeout_max: t.election_timeout_ms_max,
            // Snapshots are built on demand (`Group::trim`) and cost nothing to keep.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            max_payload_entries: crate::network::APPEND_ENTRIES_MAX,
            // A learner's log may legitimately go back to empty: a cancelled move's
            // replica is deleted on its node, and may be created afresh there (a new
            // move) before the leader has dropped the old learner. Without this the
            // leader's record of the learner cannot move back (openraft asserts in
            // debug builds). Voters never lose acknowledged entries (fsync before the
            // ack); should a disk lose them anyway, re-sending beats a stuck leader,
            // and openraft never withdraws a value a quorum accepted.
            allow_log_reversion: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Raft {
            group: GroupId(0),
            detail: format!("invalid raft config: {e}"),
        })?;
        let router = Router::new(config.node_id, config.transport.clone());
        let staging = StagingArea::new(
            disk.clone(),
            config.data_dir.join("snapshots"),
            config.log.clone(),
        );
        let hosted = Arc::new(Hosted {
            node_id: config.node_id,
            groups: RwLock::new(BTreeMap::new()),
            stopped: AtomicBool::new(false),
            staging,
        });
        Ok(Registry {
            config,
            disk,
            meta,
            hosted,
            router,
            raft_config: Arc::new(raft_config),
            quiescer_started: AtomicBool::new(false),
            tail_budget: TailBudget::new(COMMITTED_NODE_BYTES_MAX),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The gRPC service to add to the node's internal server.
    pub fn service(&self) -> TransportService {
        TransportService::new(self.hosted.clone())
    }

    /// The snapshot staging directories present, by name (`<group>.<n>`): a received
    /// snapshot's while it streams or installs, or one an interrupted install left for
    /// its group's next open.
    pub fn staged_snapshots(&self) -> Result<Vec<String>, Error> {
        self.hosted.staging.list()
    }

    /// The shared router (one connection per peer node).
    pub fn router(&self) -> &Router {
        &self.router
    }

    fn group_dir(&self, group: GroupId) -> PathBuf {
        self.config
            .data_dir
            .join("groups")
            .join(format!("{:020}", group.0))
    }

    /// Hosts a new group here (empty log). A member then calls [`Group::initialize`]
    /// with the first membership, or a leader adds this node as a learner.
    pub async fn create_group(&self, group: GroupId) -> Result<Arc<Group>, Error> {
        if self.hosted.get(group).is_ok() {
            return Err(Error::GroupExists {
                group,
                node: self.config.node_id,
            });
        }
        let meta = self.meta.clone();
        blocking(move || meta.group_put_durable(group, HOSTED_KEY, b"1"))
            .await
            .map_err(|e| Error::Io {
                path: "node metadata".into(),
                source: e,
            })??;
        self.open_group(group).await
    }

    /// Opens every group hosted here (after a restart); returns their ids.
    pub async fn open_existing(&self) -> Result<Vec<GroupId>, Error> {
        let mut opened = Vec::new();
        for group in self.meta.list_groups()? {
            if self.meta.group_get(group, HOSTED_KEY)?.is_none() || self.hosted.get(group).is_ok() {
                continue;
            }
            self.open_group(group).await?;
            opened.push(group);
        }
        Ok(opened)
    }

    async fn open_group(&self, group: GroupId) -> Result<Arc<Group>, Error> {
        let (disk, dir, log_config, meta, staging) = (
            self.disk.clone(),
            self.group_dir(group),
            self.config.log.clone(),
            self.meta.clone(),
            self.hosted.staging.clone(),
        );
        let observer = self.config.fsync_observer.clone();
        let budget = self.tail_budget.clone();
        let storage = blocking(move || -> Result<GroupStorage, Error> {
            let log = SegmentLog::open(disk, dir, log_config)
                .map_err(|source| Error::Log { group, source })?;
            snapshot::finish_interrupted(group, &log, &meta, &staging)?;
            Ok(GroupStorage::open(group, Arc::new(log), meta)?
                .with_fsync_observer(observer)
                .with_tail_budget(budget))
        })
        .await
        .map_err(|e| Error::Io {
            path: "group directory".into(),
            source: e,
        })??;
        let storage = Arc::new(storage);
        let sm = ShardStateMachine::open(storage.clone())?;
        let network = GroupNetwork::new(self.router.clone(), group);
        let node = self.config.node_id;
        let raft = Raft::new(
            node.0,
            self.raft_config.clone(),
            network,
            LogStore::new(storage.clone()),
            sm.clone(),
        )
        .await
        .map_err(|e| Error::Raft {
            group,
            detail: e.to_string(),
        })?;
        let pipeline = Pipeline::start(group, node, raft.clone(), self.config.pipeline.clone());
        let g = Arc::new(Group {
            id: group,
            node_id: node,
            raft,
            storage,
            sm,
            pipeline,
            quiesced: AtomicBool::new(false),
        });
        if self.config.quiesce.enabled {
            if quiesce::starts_quiesced(&g) {
                g.quiesce();
            }
            if !self.quiescer_started.swap(true, Ordering::SeqCst) {
                quiesce::spawn(
                    Arc::downgrade(&self.hosted),
                    self.router.clone(),
                    self.config.quiesce.clone(),
                    self.config.timings.clone(),
                    node,
                );
            }
        }
        self.hosted
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group, g.clone());
        info!(node_id = %node, group_id = %group, "group opened");
        Ok(g)
    }

    pub fn group(&self, group: GroupId) -> Result<Arc<Group>, Error> {
        self.hosted.get(group)
    }

    pub fn group_ids(&self) -> Vec<GroupId> {
        self.hosted
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Stops the group, forgets its metadata (durably) and deletes its files.
    pub async fn remove_group(&self, group: GroupId) -> Result<(), Error> {
        let g = self
            .hosted
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&group);
        let Some(g) = g else {
            return Err(Error::UnknownGroup {
                group,
                node: self.config.node_id,
            });
        };
        g.shutdown().await?;
        drop(g);
        let (meta, disk, dir) = (self.meta.clone(), self.disk.clone(), self.group_dir(group));
        let staging = self.hosted.staging.clone();
        blocking(move || -> Result<(), Error> {
            // Metadata first: after a crash, metadata never names a group whose files
            // are gone.
            meta.remove_group(group)?;
            staging.clean(group)?;
            let io = |source| Error::Io {
                path: dir.display().to_string(),
                source,
            };
            if disk.exists(&dir) {
                disk.remove_dir_all(&dir).map_err(io)?;
            }
            if let Some(parent) = dir.parent() {
                disk.sync_dir(parent).map_err(io)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Io {
            path: "group directory".into(),
            source: e,
        })??;
        info!(node_id = %self.config.node_id, group_id = %group, "group removed");
        Ok(())
    }

    /// Stops every group (files stay).
    pub async fn shutdown(&self) {
        self.hosted.stopped.store(true, Ordering::SeqCst);
        let groups = std::mem::take(
            &mut *self
                .hosted
                .groups
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for g in groups.into_values() {
            let _ = crate::runtime::timeout(Duration::from_secs(5), g.shutdown()).await;
        }
    }
}
