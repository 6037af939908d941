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
//! `--seconds T` (5) for the proposal rate.

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

/// A hang guard, not a target.
const PATIENCE: Duration = Duration::from_secs(600);
const RETENTION_MS: u64 = 86_400_000;

struct Args {
    shards: u32,
    streams: u32,
    idle_seconds: u64,
    proposers: usize,
    seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        shards: 1000,
        streams: 10,
        idle_seconds: 10,
        proposers: 64,
        seconds: 5,
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

    let start = Instant::now();
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
    wait("every stream is ACTIVE and every shard led", || {
        nodes
            .iter()
            .all(|n| n.ctx.placement.read(|s| all_active(s, args.streams)))
    })
    .await?;
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
        "{} shards in {} streams on 3 nodes: all ACTIVE and led in {active_s:.1} s",
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
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
