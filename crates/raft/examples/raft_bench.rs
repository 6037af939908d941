//! Replication benchmark: 3 in-process nodes on loopback gRPC, segment files in a
//! temporary directory with fsync on, 1 KiB records written through `Group::write`
//! by many concurrent writers. Each writer models one SDK producer's shard
//! connection: it sends a batch of records (one `PutRecords`, 100 records by default;
//! the SDK sends up to 500) and waits for it to commit before sending the next.
//! Prints committed records/s and MB/s, p50/p99/p999 commit latency of a write,
//! process CPU seconds per 1,000 records; then the idle CPU of 1,000 groups (after
//! their elections) and the machine's load average, since the figures depend on it.
//!
//! ```text
//! cargo run --release -p runnel-raft --example raft_bench -- --shards 16 --seconds 10 --writers 64
//! ```
//!
//! Flags: `--shards N` (default: runs 1 and 16; 0 skips the throughput runs), `--seconds S` (10), `--writers W`
//! (64), `--records-per-write R` (100), `--idle-groups G` (1000, 0 to skip),
//! `--idle-seconds S` (10), `--quiesce 0|1` (1: idle groups quiesce, the default). Node metadata (votes) is in memory; the log is fsynced.
//! All three nodes share this process, so CPU figures are for the whole cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use runnel_log::RealDisk;
use runnel_nodemeta::{MemStore, NodeMeta};
use runnel_raft::{Group, Registry, RegistryConfig};
use runnel_types::{GroupId, NodeId, Record};

const RECORD_BYTES: usize = 1024;
const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
/// Linux reports CPU time in clock ticks of 1/100 s (`getconf CLK_TCK`).
const CLOCK_TICKS_PER_S: f64 = 100.0;

struct Args {
    shards: Vec<u64>,
    seconds: u64,
    writers: usize,
    records_per_write: usize,
    idle_groups: u64,
    idle_seconds: u64,
    quiesce: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        shards: vec![1, 16],
        seconds: 10,
        writers: 64,
        records_per_write: 100,
        idle_groups: 1000,
        idle_seconds: 10,
        quiesce: true,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [flag, value] = pair else {
            bail!("flag {} needs a value", pair[0]);
        };
        let n: u64 = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--shards" => a.shards = vec![n],
            "--seconds" => a.seconds = n,
            "--writers" => a.writers = n as usize,
            "--records-per-write" => a.records_per_write = n as usize,
            "--idle-groups" => a.idle_groups = n,
            "--idle-seconds" => a.idle_seconds = n,
            "--quiesce" => a.quiesce = n != 0,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// The 1-minute load average, from `/proc/loadavg` (other work on the machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
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

struct Cluster {
    _dir: tempfile::TempDir,
    addrs: BTreeMap<NodeId, String>,
    registries: BTreeMap<NodeId, Arc<Registry>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    async fn start(quiesce: bool) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut c = Cluster {
            _dir: dir,
            addrs: BTreeMap::new(),
            registries: BTreeMap::new(),
            servers: Vec::new(),
        };
        for n in NODES {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let addr = format!("127.0.0.1:{port}");
            let data = c._dir.path().join(format!("node-{n}"));
            let meta = Arc::new(NodeMeta::new(Arc::new(MemStore::new())));
            let mut cfg = RegistryConfig::new(n, addr.clone(), data);
            cfg.quiesce.enabled = quiesce;
            let registry = Arc::new(Registry::new(cfg, RealDisk::shared(), meta)?);
            let svc = registry.service().into_server();
            let sock: std::net::SocketAddr = addr.parse()?;
            c.servers.push(tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve(sock)
                    .await;
            }));
            c.addrs.insert(n, addr);
            c.registries.insert(n, registry);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(c)
    }

    /// Creates `groups` on every node, initializes them, and returns each group's
    /// leader handle once elected.
    async fn create(&self, groups: &[GroupId]) -> anyhow::Result<Vec<Arc<Group>>> {
        for g in groups {
            for r in self.registries.values() {
                r.create_group(*g).await?;
            }
            self.registries[&NODES[0]]
                .group(*g)?
                .initialize(&self.addrs)
                .await?;
        }
        let mut leaders = Vec::new();
        for g in groups {
            leaders.push(self.leader(*g).await?);
        }
        Ok(leaders)
    }

    async fn leader(&self, g: GroupId) -> anyhow::Result<Arc<Group>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            for r in self.registries.values() {
                let group = r.group(g)?;
                if group.is_leader() {
                    return Ok(group);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("group {g} elected no leader in 60 s")
    }

    /// Replicas that have not quiesced.
    fn active_replicas(&self) -> usize {
        let mut n = 0;
        for r in self.registries.values() {
            for g in r.group_ids() {
                if r.group(g).is_ok_and(|g| !g.is_quiesced()) {
                    n += 1;
                }
            }
        }
        n
    }

    async fn stop(self) {
        for s in &self.servers {
            s.abort();
        }
        for r in self.registries.values() {
            r.shutdown().await;
        }
    }
}

struct Totals {
    records: AtomicU64,
    errors: AtomicU64,
}

async fn writer(
    group: Arc<Group>,
    records_per_write: usize,
    stop: Arc<AtomicBool>,
    totals: Arc<Totals>,
) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let payload = bytes::Bytes::from(vec![0x5a; RECORD_BYTES]);
    // Built once: the data is shared (`Bytes`), so a write costs the server's work,
    // not the benchmark's.
    let batch: Vec<Record> = (0..records_per_write)
        .map(|i| Record::new(format!("key-{i}"), payload.clone()))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let records = batch.clone();
        let started = Instant::now();
        match group.write(records).await {
            Ok(ack) => {
                let us = started.elapsed().as_micros() as u64;
                let _ = hist.record(us.max(1));
                totals
                    .records
                    .fetch_add(u64::from(ack.count), Ordering::Relaxed);
            }
            Err(_) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    hist
}

async fn throughput(shards: u64, args: &Args) -> anyhow::Result<()> {
    let cluster = Cluster::start(args.quiesce).await?;
    let groups: Vec<GroupId> = (1..=shards).map(GroupId).collect();
    let leaders = cluster.create(&groups).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Totals {
        records: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..args.writers)
        .map(|w| {
            let g = leaders[w % leaders.len()].clone();
            tokio::spawn(writer(
                g,
                args.records_per_write,
                stop.clone(),
                totals.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await?)?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let records = totals.records.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "shards={shards} writers={} records/write={}: {:.0} records/s, {:.1} MB/s \
         ({records} records in {elapsed:.1} s, {} failed writes)",
        args.writers,
        args.records_per_write,
        records as f64 / elapsed,
        records as f64 * RECORD_BYTES as f64 / elapsed / 1e6,
        totals.errors.load(Ordering::Relaxed),
    );
    println!(
        "  commit latency: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0
    );
    println!(
        "  CPU (3 nodes, one process): {:.3} s per 1,000 records ({cpu:.1} s total, {:.0}% of one core); load average {}",
        cpu / (records.max(1) as f64 / 1000.0),
        cpu / elapsed * 100.0,
        load_average()
    );
    cluster.stop().await;
    Ok(())
}

async fn idle(args: &Args) -> anyhow::Result<()> {
    let cluster = Cluster::start(args.quiesce).await?;
    let groups: Vec<GroupId> = (1..=args.idle_groups).map(GroupId).collect();
    let created = Instant::now();
    cluster.create(&groups).await?;
    println!(
        "idle: {} groups on each of 3 nodes, created and elected in {:.1} s",
        args.idle_groups,
        created.elapsed().as_secs_f64()
    );
    // Let the elections' aftermath (first commits, metadata writes) settle, and with
    // quiescence on, wait until every replica has quiesced (at most a minute).
    tokio::time::sleep(Duration::from_secs(2)).await;
    if args.quiesce {
        let waited = Instant::now();
        let deadline = waited + Duration::from_secs(60);
        let mut active = usize::MAX;
        while active > 0 && Instant::now() < deadline {
            active = cluster.active_replicas();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "  quiesced after {:.1} s more ({active} of {} replicas still active)",
            waited.elapsed().as_secs_f64(),
            args.idle_groups * 3
        );
    }
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let pct = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "  idle CPU over {} s: {pct:.1}% of one core for the 3 nodes, {:.1}% per node \
         (each node hosts {} groups; node 1 leads them); load average {}",
        args.idle_seconds,
        pct / 3.0,
        args.idle_groups,
        load_average()
    );
    cluster.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let cmd: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "command: cargo run --release -p runnel-raft --example raft_bench -- {}",
        cmd.join(" ")
    );
    println!(
        "setup: 3 nodes in one process on loopback gRPC, fsync on, {RECORD_BYTES}-byte records, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for shards in args.shards.clone() {
        if shards == 0 {
            continue; // `--shards 0`: the idle measurement only
        }
        throughput(shards, &args).await?;
    }
    if args.idle_groups > 0 {
        idle(&args).await?;
    }
    Ok(())
}
