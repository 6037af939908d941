//! Placement scale benchmark (issue 4, item 7): 3 in-process nodes (real tokio, loopback
//! gRPC, segment logs on real files with fsync, node metadata in memory) create streams
//! totalling 1,000 shards of 3 replicas. Prints the time until every stream is ACTIVE
//! and every shard has its 3 voters and a leader, the resident memory each idle shard
//! replica adds (all three nodes share this process), and the meta group's rate: log
//! entries committed while placing, then proposals per second from concurrent callers.
//!
//! ```text
//! cargo run --release -p runnel-server --example placement_scale -- --shards 1000
//! ```
//!
//! Flags: `--shards N` (1000), `--streams S` (10; the shards are split evenly),
//! `--idle-seconds I` (10, settling before memory is read), `--proposers P` (64) and
//! `--seconds T` (5) for the proposal rate, `--timeout T` (600: give up waiting for
//! ACTIVE after this many seconds, printing where it stood), `--progress-seconds P` (5:
//! a progress line this often while waiting: streams ACTIVE, shards placed and led,
//! replicas hosted per node, meta log position, CPU used, resident memory).
//!
//! All three nodes share this process, so CPU and memory figures are the cluster's.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use runnel_log::RealDisk;
use runnel_meta::{Command, MetaState, ReplicaRole, StreamStatus};
use runnel_nodemeta::MemStore;
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::error::ServerError;
use runnel_server::node::{Node, NodeHandle, NodeOptions};
use runnel_types::{GroupId, NodeId, StreamName};

/// A hang guard for the setup steps, not a target.
const PATIENCE: Duration = Duration::from_secs(600);
const RETENTION_MS: u64 = 86_400_000;
/// Linux reports CPU time in clock ticks of 1/100 s (`getconf CLK_TCK`).
const CLOCK_TICKS_PER_S: f64 = 100.0;

struct Args {
    shards: u32,
    streams: u32,
    idle_seconds: u64,
    proposers: usize,
    seconds: u64,
    timeout: Duration,
    progress: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        shards: 1000,
        streams: 10,
        idle_seconds: 10,
        proposers: 64,
        seconds: 5,
        timeout: Duration::from_secs(600),
        progress: Duration::from_secs(5),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [flag, value] = pair else {
            bail!("flag {} needs a value", pair[0]);
        };
        let n: u64 = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--shards" => a.shards = u32::try_from(n)?,
            "--streams" => a.streams = u32::try_from(n)?.max(1),
            "--idle-seconds" => a.idle_seconds = n,
            "--proposers" => a.proposers = usize::try_from(n)?.max(1),
            "--seconds" => a.seconds = n.max(1),
            "--timeout" => a.timeout = Duration::from_secs(n.max(1)),
            "--progress-seconds" => a.progress = Duration::from_secs(n.max(1)),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// Resident set size of this process, from `/proc/self/status` (Linux).
fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()?;
    Ok(kib * 1024)
}

/// Process CPU time (user + system) in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / CLOCK_TICKS_PER_S
}

/// The 1-minute load average, from `/proc/loadavg` (other work on the machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn start_cluster(dir: &std::path::Path) -> anyhow::Result<Vec<NodeHandle>> {
    let addrs: BTreeMap<NodeId, SocketAddr> = (1..=3)
        .map(|i| Ok((NodeId(i), free_addr()?)))
        .collect::<anyhow::Result<_>>()?;
    let initial: BTreeMap<NodeId, String> =
        addrs.iter().map(|(n, a)| (*n, a.to_string())).collect();
    let mut nodes = Vec::new();
    for (node, listen) in &addrs {
        let config = Config {
            node_id: *node,
            listen: *listen,
            advertise: listen.to_string(),
            admin_listen: "127.0.0.1:0".parse()?,
            data_dir: dir.join(format!("node-{node}")),
            bootstrap: Bootstrap::Initial(initial.clone()),
            labels: BTreeMap::new(),
            log_format: LogFormat::Text,
            default_replication: 3,
            min_retention_ms: None,
        };
        let options = NodeOptions {
            placement: Default::default(),
            raft: None,
        };
        let handle = Node::start_with(
            config,
            RealDisk::shared(),
            Arc::new(MemStore::new()),
            options,
        )
        .await
        .with_context(|| format!("starting node {node}"))?;
        nodes.push(handle);
    }
    Ok(nodes)
}

async fn wait(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > PATIENCE {
            bail!("gave up after {PATIENCE:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every stream ACTIVE and every shard with 3 voters and a reported leader.
fn all_active(s: &MetaState, streams: u32) -> bool {
    s.streams.len() == streams as usize
        && s.streams
            .values()
            .all(|st| st.status == StreamStatus::Active)
        && s.shards.values().all(|sh| {
            sh.replicas.len() == 3
                && sh.replicas.iter().all(|r| r.role == ReplicaRole::Voter)
                && sh.leader.is_some()
        })
}

/// Where placement stands: node 1's view of the meta state, and what each node hosts.
struct Progress {
    streams_active: usize,
    shards: usize,
    shards_placed: usize,
    shards_led: usize,
    hosted: Vec<usize>,
    /// Shard groups whose Raft leader is on each node (what the nodes could report).
    leading: Vec<usize>,
    /// Shard groups quiesced on each node (idle: no ticks, no heartbeats).
    quiesced: Vec<usize>,
    meta_applied: u64,
    /// The meta leader and term, as node 1 sees them.
    meta_leader: String,
}

impl Progress {
    fn of(nodes: &[NodeHandle]) -> Progress {
        let (streams_active, shards, shards_placed, shards_led) =
            nodes[0].ctx.placement.read(|s| {
                (
                    s.streams
                        .values()
                        .filter(|st| st.status == StreamStatus::Active)
                        .count(),
                    s.shards.len(),
                    s.shards
                        .values()
                        .filter(|sh| !sh.replicas.is_empty())
                        .count(),
                    s.shards.values().filter(|sh| sh.leader.is_some()).count(),
                )
            });
        let hosted = nodes
            .iter()
            .map(|n| n.ctx.registry.group_ids().len().saturating_sub(1))
            .collect();
        let leading = nodes
            .iter()
            .map(|n| shard_groups_on(n, |g| g.is_leader()))
            .collect();
        let quiesced = nodes
            .iter()
            .map(|n| shard_groups_on(n, |g| g.is_quiesced()))
            .collect();
        let meta_leader = match nodes[0].ctx.registry.group(GroupId::META) {
            Ok(g) => format!(
                "{}@{}",
                g.leader().map_or("none".into(), |l| l.to_string()),
                g.raft().metrics().borrow().current_term
            ),
            Err(_) => "?".into(),
        };
        Progress {
            streams_active,
            shards,
            shards_placed,
            shards_led,
            hosted,
            leading,
            quiesced,
            meta_applied: nodes[0].ctx.placement.applied_index().0,
            meta_leader,
        }
    }

    fn print(&self, elapsed: Duration, streams: u32, cpu_s: f64) {
        let join = |v: &[usize]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/")
        };
        let rss_mib = rss_bytes().unwrap_or(0) as f64 / 1048576.0;
        println!(
            "[{:6.1} s] streams ACTIVE {}/{streams}; shards placed {}/{}, led {}; replicas hosted {}, \
             leading {}, quiesced {}; meta applied {}, leader {}; CPU {cpu_s:.1} s ({:.2} cores); RSS {rss_mib:.0} MiB; load {}",
            elapsed.as_secs_f64(),
            self.streams_active,
            self.shards_placed,
            self.shards,
            self.shards_led,
            join(&self.hosted),
            join(&self.leading),
            join(&self.quiesced),
            self.meta_applied,
            self.meta_leader,
            cpu_s / elapsed.as_secs_f64().max(0.001),
            load_average(),
        );
    }
}

/// Shard groups on this node for which `pred` holds.
fn shard_groups_on(node: &NodeHandle, pred: impl Fn(&runnel_raft::Group) -> bool) -> usize {
    let registry = &node.ctx.registry;
    registry
        .group_ids()
        .into_iter()
        .filter(|id| !id.is_meta())
        .filter(|id| registry.group(*id).is_ok_and(|g| pred(&g)))
        .count()
}

/// Waits until every stream is ACTIVE and every shard led (on every node), printing
/// progress every `args.progress`; gives up after `args.timeout`.
async fn wait_active(
    nodes: &[NodeHandle],
    args: &Args,
    start: Instant,
    cpu0: f64,
) -> anyhow::Result<()> {
    let mut next_report = start + args.progress;
    loop {
        let done = nodes
            .iter()
            .all(|n| n.ctx.placement.read(|s| all_active(s, args.streams)));
        if done {
            return Ok(());
        }
        let now = Instant::now();
        if now >= next_report || now - start > args.timeout {
            Progress::of(nodes).print(now - start, args.streams, cpu_seconds() - cpu0);
            next_report = now + args.progress;
        }
        if now - start > args.timeout {
            bail!(
                "gave up after {:?}: not every stream ACTIVE with every shard led",
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn meta_committed(n: &NodeHandle) -> u64 {
    n.ctx
        .registry
        .group(GroupId::META)
        .map_or(0, |g| g.committed().0)
}

/// Proposes until the command is applied (a meta leader change fails a proposal; a
/// retried create that had gone through is `AlreadyExists`, which counts as done).
async fn propose_until_done(node: &NodeHandle, cmd: Command) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match node.ctx.placement.propose(cmd.clone()).await {
            Ok(_) => return Ok(()),
            Err(ServerError::AlreadyExists { .. }) => return Ok(()),
            Err(e) if start.elapsed() > PATIENCE => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Proposals per second from `proposers` concurrent callers for `seconds`.
async fn proposal_rate(node: &NodeHandle, streams: u32, proposers: usize, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..proposers {
        let (placement, done) = (node.ctx.placement.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let name = StreamName::new(format!("s{}", i as u32 % streams)).expect("valid name");
            while Instant::now() < until {
                let cmd = Command::UpdateRetention {
                    name: name.clone(),
                    retention_ms: RETENTION_MS,
                };
                if placement.propose(cmd).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir_in("target").or_else(|_| tempfile::tempdir())?;
    let nodes = start_cluster(dir.path()).await?;
    let n1 = &nodes[0];
    wait("the cluster is up", || {
        n1.ctx.placement.read(|s| {
            s.identity.is_some()
                && s.nodes.len() == 3
                && s.nodes
                    .values()
                    .all(|n| n.status == runnel_meta::NodeStatus::Up)
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_bytes()?;
    let committed_before = meta_committed(n1);

    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let per_stream = args.shards / args.streams;
    for i in 0..args.streams {
        let extra = u32::from(i < args.shards % args.streams);
        let create = Command::CreateStream {
            name: StreamName::new(format!("s{i}"))?,
            shard_count: per_stream + extra,
            replication_factor: 3,
            retention_ms: RETENTION_MS,
            now_ms: runnel_server::context::now_ms(),
        };
        propose_until_done(n1, create).await?;
    }
    let created_s = start.elapsed().as_secs_f64();
    wait_active(&nodes, &args, start, cpu0).await?;
    let active_s = start.elapsed().as_secs_f64();
    let entries = meta_committed(n1) - committed_before;

    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let rss_after = rss_bytes()?;
    let replicas = u64::from(args.shards) * 3;
    let per_replica = rss_after.saturating_sub(rss_before) as f64 / replicas as f64;
    let snapshot_bytes = n1
        .ctx
        .placement
        .read(|s| serde_json::to_vec(s).map(|v| v.len()))?;
    let rate = proposal_rate(n1, args.streams, args.proposers, args.seconds).await;

    println!(
        "{} shards in {} streams on 3 nodes: all ACTIVE and led in {active_s:.1} s \
         (the creates were acknowledged after {created_s:.1} s)",
        args.shards, args.streams
    );
    println!(
        "meta log: {entries} entries committed while placing ({:.0} entries/s)",
        entries as f64 / active_s
    );
    println!(
        "resident memory: {:.1} MiB before, {:.1} MiB after {} s idle; {:.1} KiB per idle shard replica ({replicas} replicas)",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        args.idle_seconds,
        per_replica / 1024.0
    );
    println!(
        "meta state snapshot (SnapshotState record): {:.0} KiB, {:.0} bytes per shard",
        snapshot_bytes as f64 / 1024.0,
        snapshot_bytes as f64 / f64::from(args.shards.max(1))
    );
    println!(
        "meta proposals: {rate:.0}/s ({} concurrent proposers on a voter, {} s)",
        args.proposers, args.seconds
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", load.trim());
    }
    println!(
        "command: cargo run --release -p runnel-server --example placement_scale -- --shards {} --streams {}",
        args.shards, args.streams
    );
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
