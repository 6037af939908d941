//! The harness: N real nodes on simulated machines, with durable state (simulated
//! disk, node metadata) owned here so that it outlives a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle as SimHandle};
use runnel_log::SimDisk;
use runnel_meta::PlannerConfig;
use runnel_nodemeta::MemStore;
use runnel_raft::RaftTimings;
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::context::NodeContext;
use runnel_server::node::{Node, NodeOptions};
use runnel_server::placement::PlacementConfig;
use runnel_types::{GroupId, NodeId, ShardId};

/// The port every node serves on (Raft transport, Meta and the public API).
pub const NODE_PORT: u16 = 7100;

pub fn node_ip(id: u64) -> IpAddr {
    IpAddr::from([10, 0, 1, id as u8])
}

pub fn node_addr(id: u64) -> String {
    format!("{}:{NODE_PORT}", node_ip(id))
}

/// Client machines live on another subnet, so that partitions between nodes leave
/// clients able to reach both sides (a stale leader keeps being asked).
pub fn client_ip(id: u64) -> IpAddr {
    IpAddr::from([10, 0, 2, id as u8])
}

type Slot = Arc<Mutex<Option<Arc<NodeContext>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One simulated machine running `runneld`.
pub struct SimNode {
    pub id: u64,
    pub handle: SimHandle,
    pub disk: SimDisk,
    pub store: MemStore,
    slot: Slot,
    pub up: bool,
}

/// The nodes, and what went wrong starting them.
pub struct Cluster {
    pub nodes: BTreeMap<u64, SimNode>,
    /// Nodes the nemesis asked the cluster to drain (placement must empty them).
    pub drained: BTreeSet<u64>,
    /// Nodes paused (their tasks frozen, their sockets still open).
    pub paused: BTreeSet<u64>,
    /// The meta voters booted with the cluster (joined nodes are not voters): a fault
    /// may take down fewer than half of them.
    pub voters: usize,
    /// The minimum retention the cluster booted with (joining nodes are given it too).
    pub min_retention: Option<Duration>,
    /// A node that failed to (re)start: always a bug (the durable state it left must
    /// be enough to come back).
    pub start_failures: Arc<Mutex<Vec<String>>>,
}

/// Fast timings, so that a run covers many elections and repairs in little simulated
/// time.
pub fn options() -> NodeOptions {
    let planner = PlannerConfig {
        heartbeat_timeout_ms: 2_000,
        down_grace_ms: 4_000,
        ..PlannerConfig::default()
    };
    NodeOptions {
        placement: PlacementConfig {
            planner,
            plan_interval_ms: 200,
            heartbeat_interval_ms: 300,
            reconcile_interval_ms: 300,
        },
        raft: Some(RaftTimings {
            heartbeat_interval_ms: 50,
            election_timeout_ms_min: 300,
            election_timeout_ms_max: 600,
        }),
    }
}

fn config(id: u64, bootstrap: Bootstrap, min_retention: Option<Duration>) -> Config {
    Config {
        node_id: NodeId(id),
        listen: node_addr(id).parse().expect("a valid address"),
        advertise: node_addr(id),
        admin_listen: "127.0.0.1:0".parse().expect("a valid address"),
        data_dir: format!("/runnel/node-{id}").into(),
        bootstrap,
        labels: BTreeMap::new(),
        log_format: LogFormat::Text,
        default_replication: 3,
        min_retention_ms: min_retention.map(|r| r.as_millis() as u64),
    }
}

impl Cluster {
    /// Boots `n` nodes, all meta voters, each on its own machine; with
    /// `min_retention`, the cluster's minimum retention (`runneld --min-retention`),
    /// which also sets how often the retention loop runs (a quarter of it).
    pub fn boot(n: u64, min_retention: Option<Duration>) -> Cluster {
        let voters: BTreeMap<NodeId, String> = (1..=n).map(|i| (NodeId(i), node_addr(i))).collect();
        let start_failures = Arc::new(Mutex::new(Vec::new()));
        let nodes = (1..=n)
            .map(|id| {
                let cfg = config(id, Bootstrap::Initial(voters.clone()), min_retention);
                (id, build(cfg, &start_failures))
            })
            .collect();
        Cluster {
            nodes,
            drained: BTreeSet::new(),
            paused: BTreeSet::new(),
            voters: n as usize,
            min_retention,
            start_failures,
        }
    }

    /// Boots a new node (the next id) that joins through node `via`, as `runneld
    /// --join` does; it keeps that configuration across restarts, as a deployment
    /// would. Returns its id.
    pub fn join(&mut self, via: u64) -> u64 {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        let cfg = config(id, Bootstrap::Join(node_addr(via)), self.min_retention);
        let node = build(cfg, &self.start_failures);
        self.nodes.insert(id, node);
        id
    }

    /// Freezes a node's tasks (a stop-the-world pause, a stalled disk or VM); its
    /// peers see it silent, then it resumes where it was, with stale views.
    pub fn pause(&mut self, id: u64) {
        if self.nodes.get(&id).is_some_and(|n| n.up) && self.paused.insert(id) {
            Handle::current().pause(self.machine(id));
        }
    }

    pub fn resume(&mut self, id: u64) {
        if self.paused.remove(&id) {
            Handle::current().resume(self.machine(id));
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.keys().map(|i| node_addr(*i)).collect()
    }

    pub fn ctx(&self, id: u64) -> Option<Arc<NodeContext>> {
        lock(&self.nodes.get(&id)?.slot).clone()
    }

    /// Nodes running and not paused.
    pub fn up_nodes(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.up && !self.paused.contains(&n.id))
            .map(|n| n.id)
            .collect()
    }

    /// Nodes killed or paused: unavailable either way.
    pub fn unavailable(&self) -> usize {
        self.nodes.len() - self.up_nodes().len()
    }

    pub fn down_nodes(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| !n.up)
            .map(|n| n.id)
            .collect()
    }

    /// madsim's id of a node's machine (for `NetSim`).
    pub fn machine(&self, id: u64) -> madsim::task::NodeId {
        self.nodes[&id].handle.id()
    }

    /// Kills a node abruptly: its tasks vanish, its disk keeps only what was synced
    /// (with `tear`, a prefix of the unsynced writes, the last cut short), its metadata
    /// store only what was flushed.
    pub fn kill(&mut self, id: u64, tear: Option<u64>) {
        self.resume(id);
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        Handle::current().kill(n.handle.id());
        *lock(&n.slot) = None;
        match tear {
            Some(seed) => n.disk.crash_with_tear(seed),
            None => n.disk.crash(),
        }
        n.store.crash();
        n.up = false;
    }

    /// Restarts a killed node from its durable state.
    pub fn restart(&mut self, id: u64) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if !n.up {
            Handle::current().restart(n.handle.id());
            n.up = true;
        }
    }

    /// The node whose replica of `shard` believes it leads (the first, if two do).
    pub fn shard_leader(&self, shard: ShardId) -> Option<u64> {
        self.group_leader(GroupId::from(shard))
    }

    pub fn meta_leader(&self) -> Option<u64> {
        self.group_leader(GroupId(0))
    }

    fn group_leader(&self, group: GroupId) -> Option<u64> {
        self.nodes.keys().copied().find(|id| {
            self.ctx(*id)
                .and_then(|c| c.registry.group(group).ok())
                .is_some_and(|g| g.is_leader())
        })
    }
}

fn build(cfg: Config, failures: &Arc<Mutex<Vec<String>>>) -> SimNode {
    let id = cfg.node_id.0;
    let (disk, store, slot) = (SimDisk::new(), MemStore::new(), Slot::default());
    let (d, m, s, f) = (disk.clone(), store.clone(), slot.clone(), failures.clone());
    let handle = Handle::current()
        .create_node()
        .name(format!("node-{id}"))
        .ip(node_ip(id))
        .init(move || {
            let (d, m, s, f, cfg) = (d.clone(), m.clone(), s.clone(), f.clone(), cfg.clone());
            async move {
                match Node::start_with(cfg, d.handle(), Arc::new(m), options()).await {
                    Ok(node) => {
                        *lock(&s) = Some(node.ctx.clone());
                        std::future::pending::<()>().await;
                        drop(node);
                    }
                    Err(e) => {
                        let at = madsim::time::Instant::now();
                        lock(&f).push(format!("node {id} failed to start at {at:?}: {e}"));
                    }
                }
            }
        })
        .build();
    SimNode {
        id,
        handle,
        disk,
        store,
        slot,
        up: true,
    }
}
