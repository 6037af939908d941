//! The nemesis: faults, one at a time, each held for a while and then healed. Each
//! seed enables its own subset of fault kinds (swarm testing: a seed that never
//! partitions kills more often, and finds what a uniform mix dilutes).
//!
//! Bounds: at most a minority of the nodes is down or cut off at once, so that the
//! cluster can make progress once healed; kills in sequence still reach every node.

use std::cell::RefCell;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{Rng, thread_rng};
use runnel_types::{GroupId, LogIndex, ShardId};

use crate::cluster::Cluster;
use crate::oracle::{SharedOracle, lock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Kill a random node (unsynced writes lost), restart it later.
    Kill,
    /// The same, with the last unsynced write torn.
    KillTorn,
    /// Kill a minority of the nodes at once.
    KillMinority,
    /// Kill the leader of a random shard.
    KillShardLeader,
    /// Kill the meta group's leader.
    KillMetaLeader,
    /// Cut one node off from the other nodes (clients still reach it).
    IsolateOne,
    /// Cut the nodes into a majority and a minority.
    SplitMinority,
    /// Clog one direction of one link between two nodes.
    OneWayLink,
    /// Cut a node off from everyone, clients included.
    ClogNode,
    /// Drop a few percent of all messages.
    Loss,
    /// Slow every message down.
    Delay,
    /// Trim a shard's prefix on its replicas, as retention does.
    Trim,
    /// Freeze a node's tasks (a long GC-like pause, a stalled disk or VM), then resume
    /// it with its stale view of leadership and time.
    Pause,
    /// A node's disk fails every write and sync (EIO); when healed, the node is
    /// restarted on the repaired disk (what a supervisor does after a fail-stop).
    FailWrites,
    /// Boot a new node that joins through a live member (`--join`), under load;
    /// placement rebalances replicas and leaders onto it. Not undone.
    AddNode,
    /// Drain a node through the SDK's `Admin::drain_node`, under load; placement moves
    /// its replicas off. Not undone; only while more than three nodes stay undrained.
    DrainNode,
    /// Cut a shard's leader off from the other nodes while clients still reach it: it
    /// appends entries that never commit, which the next leader's log must overwrite
    /// (the truncation path).
    IsolateShardLeader,
}

pub const ALL: [Fault; 12] = [
    Fault::Kill,
    Fault::KillTorn,
    Fault::KillMinority,
    Fault::KillShardLeader,
    Fault::KillMetaLeader,
    Fault::IsolateOne,
    Fault::SplitMinority,
    Fault::OneWayLink,
    Fault::ClogNode,
    Fault::Loss,
    Fault::Delay,
    Fault::Trim,
];

/// The kinds added last (churn, pauses, disk errors, an isolated shard leader). In the
/// swarm since they passed a sweep of 150 seeds (SIMULATION.md);
/// `RUNNEL_SIM_NEW_FAULTS=0` leaves them out (the mixes of the older swarm).
pub const NEW: [Fault; 5] = [
    Fault::Pause,
    Fault::FailWrites,
    Fault::AddNode,
    Fault::DrainNode,
    Fault::IsolateShardLeader,
];

/// Nodes a seed may add at most (the IP plan and the run's length stay small).
const ADDED_MAX: usize = 2;

thread_local! {
    /// The fault kinds forced by a planted-bug test for the seeds this thread runs (or
    /// `None`: each seed draws its mix). Per thread, as madsim runs a seed on one.
    static FORCED: RefCell<Option<Vec<Fault>>> = const { RefCell::new(None) };
}

/// Forces the mix of the seeds this thread runs next (`None`: back to drawing it).
pub fn force_mix(faults: Option<Vec<Fault>>) {
    FORCED.with(|f| *f.borrow_mut() = faults);
}

/// This seed's mix: each kind on with probability one half, at least one.
pub fn random_mix() -> Vec<Fault> {
    if let Some(forced) = FORCED.with(|f| f.borrow().clone()) {
        return forced;
    }
    if let Ok(names) = std::env::var("RUNNEL_SIM_FAULTS") {
        let named: Vec<Fault> = ALL
            .iter()
            .chain(NEW.iter())
            .copied()
            .filter(|f| names.split(',').any(|n| n == format!("{f:?}")))
            .collect();
        if !named.is_empty() {
            return named;
        }
    }
    let mut rng = thread_rng();
    let mut mix: Vec<Fault> = ALL.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
    // `RUNNEL_SIM_NEW_FAULTS=0`: the older swarm, each seed drawing as it did before.
    if std::env::var("RUNNEL_SIM_NEW_FAULTS").map_or(true, |v| v != "0") {
        mix.extend(NEW.iter().copied().filter(|_| rng.gen_bool(0.5)));
    }
    if mix.is_empty() {
        mix.push(ALL[rng.gen_range(0..ALL.len())]);
    }
    mix
}

/// What is currently broken, to heal.
#[derive(Default)]
struct Damage {
    killed: Vec<u64>,
    paused: Vec<u64>,
    failing_disks: Vec<u64>,
    links: Vec<(u64, u64)>,
    clogged: Vec<u64>,
    net_config: bool,
}

/// Where the nemesis sends admin calls (drains): a client machine and the endpoints.
pub struct AdminSeat {
    pub machine: madsim::runtime::NodeHandle,
    pub endpoints: Vec<String>,
}

pub struct Nemesis {
    pub mix: Vec<Fault>,
    /// Needed by `DrainNode`; without it drains are skipped.
    pub admin: Option<AdminSeat>,
    added: usize,
    /// Every fault injected, with the simulated time, for the report.
    pub history: Vec<String>,
    damage: Damage,
}

impl Nemesis {
    pub fn new(mix: Vec<Fault>) -> Nemesis {
        Nemesis {
            mix,
            admin: None,
            added: 0,
            history: Vec::new(),
            damage: Damage::default(),
        }
    }

    /// Injects faults until `for_how_long` has passed: quiet, fault, hold, heal.
    pub async fn run(
        &mut self,
        cluster: &mut Cluster,
        oracle: &SharedOracle,
        shards: &[ShardId],
        for_how_long: Duration,
    ) {
        let end = madsim::time::Instant::now() + for_how_long;
        while madsim::time::Instant::now() < end {
            let quiet = thread_rng().gen_range(500..4_000);
            madsim::time::sleep(Duration::from_millis(quiet)).await;
            let fault = self.mix[thread_rng().gen_range(0..self.mix.len())];
            self.inject(fault, cluster, oracle, shards).await;
            let hold = thread_rng().gen_range(300..6_000);
            madsim::time::sleep(Duration::from_millis(hold)).await;
            self.heal(cluster);
        }
    }

    async fn inject(
        &mut self,
        fault: Fault,
        cluster: &mut Cluster,
        oracle: &SharedOracle,
        shards: &[ShardId],
    ) {
        let what = match fault {
            Fault::Kill | Fault::KillTorn => {
                let victim = pick(&cluster.up_nodes());
                let tear = (fault == Fault::KillTorn).then(|| thread_rng().r#gen());
                self.kill(cluster, victim, tear)
            }
            Fault::KillMinority => {
                let victims = minority(cluster);
                victims
                    .iter()
                    .map(|v| self.kill(cluster, Some(*v), None))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            Fault::KillShardLeader => {
                let shard = shards[thread_rng().gen_range(0..shards.len())];
                let victim = cluster.shard_leader(shard);
                format!("{shard} leader: {}", self.kill(cluster, victim, None))
            }
            Fault::KillMetaLeader => {
                let victim = cluster.meta_leader();
                format!("meta leader: {}", self.kill(cluster, victim, None))
            }
            Fault::IsolateOne => {
                let Some(x) = pick(&cluster.up_nodes()) else {
                    return;
                };
                let others: Vec<u64> = cluster.nodes.keys().copied().filter(|n| *n != x).collect();
                self.cut(cluster, &[x], &others);
                format!("isolate node {x} from the other nodes")
            }
            Fault::IsolateShardLeader => {
                let shard = shards[thread_rng().gen_range(0..shards.len())];
                let Some(x) = cluster.shard_leader(shard) else {
                    return;
                };
                let others: Vec<u64> = cluster.nodes.keys().copied().filter(|n| *n != x).collect();
                self.cut(cluster, &[x], &others);
                format!("isolate {shard} leader, node {x}, from the other nodes")
            }
            Fault::SplitMinority => {
                let side = minority(cluster);
                let rest: Vec<u64> = cluster
                    .nodes
                    .keys()
                    .copied()
                    .filter(|n| !side.contains(n))
                    .collect();
                self.cut(cluster, &side, &rest);
                format!("split {side:?} | {rest:?}")
            }
            Fault::OneWayLink => {
                let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
                let a = ids[thread_rng().gen_range(0..ids.len())];
                let b = ids[(ids.iter().position(|i| *i == a).unwrap_or(0) + 1) % ids.len()];
                NetSim::current().clog_link(cluster.machine(a), cluster.machine(b));
                self.damage.links.push((a, b));
                format!("clog link {a} -> {b}")
            }
            Fault::ClogNode => {
                let Some(x) = pick(&cluster.up_nodes()) else {
                    return;
                };
                NetSim::current().clog_node(cluster.machine(x));
                self.damage.clogged.push(x);
                format!("clog node {x} (clients too)")
            }
            Fault::Loss => {
                let rate = thread_rng().gen_range(0.005..0.05);
                NetSim::current().update_config(|c| c.packet_loss_rate = rate);
                self.damage.net_config = true;
                format!("drop {:.1}% of messages", rate * 100.0)
            }
            Fault::Delay => {
                let max = thread_rng().gen_range(20..400);
                NetSim::current().update_config(|c| {
                    c.send_latency = Duration::from_millis(1)..Duration::from_millis(max)
                });
                self.damage.net_config = true;
                format!("delay messages up to {max} ms")
            }
            Fault::Trim => trim(cluster, oracle, shards).await,
            Fault::Pause => {
                let victim = pick(&cluster.up_nodes());
                self.pause(cluster, victim)
            }
            Fault::FailWrites => {
                let victim = pick(&cluster.up_nodes());
                self.fail_writes(cluster, victim)
            }
            Fault::AddNode => self.add_node(cluster),
            Fault::DrainNode => self.drain_node(cluster).await,
        };
        let at = madsim::time::Instant::now();
        self.history.push(format!("{at:?} {fault:?}: {what}"));
    }

    fn kill(&mut self, cluster: &mut Cluster, victim: Option<u64>, tear: Option<u64>) -> String {
        let Some(v) = victim else {
            return "no such node up".into();
        };
        if !cluster.nodes.get(&v).is_some_and(|n| n.up)
            || cluster.unavailable() >= minority_size(cluster)
        {
            return format!("node {v} spared (a minority is already down)");
        }
        cluster.kill(v, tear);
        self.damage.killed.push(v);
        match tear {
            Some(_) => format!("killed node {v} (torn write)"),
            None => format!("killed node {v}"),
        }
    }

    fn pause(&mut self, cluster: &mut Cluster, victim: Option<u64>) -> String {
        let Some(v) = victim else {
            return "no such node up".into();
        };
        if cluster.unavailable() >= minority_size(cluster) {
            return format!("node {v} spared (a minority is already down)");
        }
        cluster.pause(v);
        self.damage.paused.push(v);
        format!("paused node {v}")
    }

    fn fail_writes(&mut self, cluster: &mut Cluster, victim: Option<u64>) -> String {
        let Some(v) = victim else {
            return "no such node up".into();
        };
        if cluster.unavailable() >= minority_size(cluster) {
            return format!("node {v} spared (a minority is already down)");
        }
        cluster.nodes[&v].disk.set_fail_writes(true);
        self.damage.failing_disks.push(v);
        format!("disk of node {v} fails writes")
    }

    fn add_node(&mut self, cluster: &mut Cluster) -> String {
        if self.added >= ADDED_MAX {
            return format!("no node added ({ADDED_MAX} already)");
        }
        let Some(via) = pick(&cluster.up_nodes()) else {
            return "no node up to join through".into();
        };
        self.added += 1;
        let id = cluster.join(via);
        format!("node {id} joins through node {via}")
    }

    /// Drains a random undrained node while more than three would stay undrained (the
    /// replication factor).
    async fn drain_node(&mut self, cluster: &mut Cluster) -> String {
        let Some(seat) = &self.admin else {
            return "no admin seat".into();
        };
        let undrained: Vec<u64> = cluster
            .nodes
            .keys()
            .copied()
            .filter(|n| !cluster.drained.contains(n))
            .collect();
        if undrained.len() <= 3 {
            return "no node drained (three would not stay)".into();
        }
        let Some(victim) = pick(&undrained) else {
            return "no node to drain".into();
        };
        let c = crate::workload::client(&seat.endpoints);
        let call = seat.machine.spawn(async move {
            madsim::time::timeout(
                Duration::from_secs(10),
                c.admin().drain_node(runnel_types::NodeId(victim)),
            )
            .await
        });
        match call.await {
            Ok(Ok(Ok(_))) => {
                cluster.drained.insert(victim);
                format!("drain node {victim}")
            }
            Ok(Ok(Err(e))) => format!("drain node {victim} refused: {e}"),
            _ => format!("drain node {victim}: no answer within 10 s"),
        }
    }

    fn cut(&mut self, cluster: &Cluster, a: &[u64], b: &[u64]) {
        let net = NetSim::current();
        for x in a {
            for y in b {
                net.clog_link(cluster.machine(*x), cluster.machine(*y));
                net.clog_link(cluster.machine(*y), cluster.machine(*x));
                self.damage.links.push((*x, *y));
                self.damage.links.push((*y, *x));
            }
        }
    }

    /// Undoes every fault in place: restarts killed nodes, reopens links, resets the
    /// network's loss and latency.
    pub fn heal(&mut self, cluster: &mut Cluster) {
        let net = NetSim::current();
        for (a, b) in self.damage.links.drain(..) {
            net.unclog_link(cluster.machine(a), cluster.machine(b));
        }
        for x in self.damage.clogged.drain(..) {
            net.unclog_node(cluster.machine(x));
        }
        if std::mem::take(&mut self.damage.net_config) {
            net.update_config(|c| *c = madsim::net::Config::default());
        }
        for v in self.damage.paused.drain(..) {
            cluster.resume(v);
        }
        for v in self.damage.failing_disks.drain(..) {
            cluster.nodes[&v].disk.set_fail_writes(false);
            if cluster.nodes[&v].up {
                cluster.kill(v, None);
                cluster.restart(v);
            }
        }
        for v in self.damage.killed.drain(..) {
            cluster.restart(v);
        }
    }
}

fn pick(ids: &[u64]) -> Option<u64> {
    (!ids.is_empty()).then(|| ids[thread_rng().gen_range(0..ids.len())])
}

/// The largest number of nodes that may fail while a majority stays (of the nodes,
/// and of the meta voters booted with the cluster).
fn minority_size(cluster: &Cluster) -> usize {
    (cluster.nodes.len().min(cluster.voters) - 1) / 2
}

/// A random minority of the nodes (at least one).
fn minority(cluster: &Cluster) -> Vec<u64> {
    let mut ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let size = thread_rng().gen_range(1..=minority_size(cluster).max(1));
    let mut out = Vec::new();
    while out.len() < size {
        let i = thread_rng().gen_range(0..ids.len());
        out.push(ids.remove(i));
    }
    out.sort_unstable();
    out
}

/// Trims a random shard's prefix on every live replica, as the retention task does,
/// to somewhere in the first half of what is committed; records the trim points.
async fn trim(cluster: &Cluster, oracle: &SharedOracle, shards: &[ShardId]) -> String {
    let shard = shards[thread_rng().gen_range(0..shards.len())];
    let Some(leader) = cluster.shard_leader(shard).and_then(|l| cluster.ctx(l)) else {
        return format!("{shard}: no leader to trim");
    };
    let Ok(group) = leader.registry.group(GroupId::from(shard)) else {
        return format!("{shard}: no group");
    };
    let committed = group.committed().0;
    if committed < 4 {
        return format!("{shard}: too little to trim");
    }
    let to = LogIndex(thread_rng().gen_range(1..=committed / 2));
    let name = shard.kinesis_name();
    {
        let mut o = lock(oracle);
        let t = o.trim_requested.entry(name.clone()).or_insert(to);
        *t = (*t).max(to);
    }
    let mut done = Vec::new();
    for id in cluster.up_nodes() {
        let Some(g) = cluster
            .ctx(id)
            .and_then(|c| c.registry.group(GroupId::from(shard)).ok())
        else {
            continue;
        };
        let floor = to.min(g.committed());
        let task = cluster.nodes[&id]
            .handle
            .spawn(async move { g.trim(to).await.is_ok() });
        if let Ok(Ok(true)) = madsim::time::timeout(Duration::from_secs(5), task).await {
            let mut o = lock(oracle);
            let c = o.trim_confirmed.entry((name.clone(), id)).or_insert(floor);
            *c = (*c).max(floor);
            done.push(id);
        }
    }
    format!("{name} trimmed to {} on nodes {done:?}", to.0)
}
