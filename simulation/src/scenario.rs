//! One simulated run, from its seed: boot, load, faults (the safety phase), heal, the
//! liveness phase, the final full read, the checks.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use madsim::rand::{Rng, thread_rng};
use madsim::runtime::Handle;
use runnel_client::{
    Client, ConsumerConfig, CreateStream, NodeStatus, Record, SeqNo, StartPosition,
};
use runnel_types::{GroupId, ShardId};

use crate::checkers::{self, Final};
use crate::cluster::{Cluster, client_ip};
use crate::nemesis::{AdminSeat, Nemesis, random_mix};
use crate::oracle::{Acked, Oracle, SharedOracle, lock, now_ms};
use crate::workload::{STREAM, Shape, Workload, client};

/// How long (simulated) writes may take to succeed again once faults stop.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(60);
/// How long consumers may take to catch up, and placement to settle, after healing.
pub const SETTLE_BOUND: Duration = Duration::from_secs(60);
/// Stream retention of most seeds: the default minimum. Runs are shorter, so only the
/// harness's trims (the Trim fault) remove records.
pub const RETENTION: Duration = Duration::from_secs(3600);
/// The short retentions some seeds draw instead ([`SHORT_RETENTION_P`] of them): the
/// cluster boots with that minimum (`--min-retention`), so its retention loop runs every
/// quarter of it and trims during the run, under the faults.
pub const SHORT_RETENTIONS: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(40),
];
pub const SHORT_RETENTION_P: f64 = 0.4;

thread_local! {
    /// A retention forced by a planted-bug hunt for the seeds this thread runs (`None`:
    /// each seed draws its own).
    static FORCED_RETENTION: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Forces the stream retention of the seeds this thread runs next (`None`: drawn). The
/// `LoseTrimPoint` hunt keeps the hour: a short retention has the retention loop trim a
/// restarted replica again, which hides a forgotten trim point by the final check.
pub fn force_retention(retention: Option<Duration>) {
    FORCED_RETENTION.with(|r| r.set(retention));
}

/// The outcome of one seed.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub failed: bool,
    /// One line of figures (and, on failure, the violations and the fault history).
    pub text: String,
    pub simulated: Duration,
    pub faults: usize,
    /// The checkers that found violations ("panic" for a panic).
    pub violated: Vec<&'static str>,
}

/// The run's parameters, all drawn from the seed.
#[derive(Debug)]
struct Params {
    nodes: u64,
    shards: u32,
    safety: Duration,
    shape: Shape,
    retention: Duration,
}

impl Params {
    fn random() -> Params {
        let mut rng = thread_rng();
        Params {
            nodes: if rng.gen_bool(0.3) { 5 } else { 3 },
            shards: rng.gen_range(2..=4),
            safety: Duration::from_secs(rng.gen_range(20..=45)),
            shape: Shape::random(),
            retention: match (rng.gen_bool(SHORT_RETENTION_P), FORCED_RETENTION.get()) {
                (_, Some(forced)) => forced,
                (true, None) => SHORT_RETENTIONS[rng.gen_range(0..SHORT_RETENTIONS.len())],
                (false, None) => RETENTION,
            },
        }
    }

    /// The retention when it expires records within the run.
    fn short_retention(&self) -> Option<Duration> {
        (self.retention < RETENTION).then_some(self.retention)
    }
}

/// Runs the scenario of the current madsim seed.
pub async fn run() -> Outcome {
    let watchdog = madsim::task::spawn(crate::runner::watchdog());
    let out = run_checked().await;
    watchdog.abort();
    out
}

async fn run_checked() -> Outcome {
    let seed = Handle::current().seed();
    let started = madsim::time::Instant::now();
    let params = Params::random();
    let mix = random_mix();
    let oracle = SharedOracle::default();
    let short = params.short_retention();
    lock(&oracle).retention_ms = short.map(|r| r.as_millis() as u64);
    let mut cluster = Cluster::boot(params.nodes, short);
    let endpoints = cluster.endpoints();
    let admin = Handle::current()
        .create_node()
        .name("admin")
        .ip(client_ip(1))
        .build();

    let create = create_stream(client(&endpoints), params.shards, params.retention);
    let shards = match on(&admin, create).await {
        Ok(s) => s,
        Err(e) => return outcome(seed, started, vec![("setup", vec![e])], &[], &params, &mix),
    };
    let mut workload = Workload::start(&params.shape, &endpoints, &oracle);
    let mut nemesis = Nemesis::new(mix.clone());
    nemesis.admin = Some(AdminSeat {
        machine: admin.clone(),
        endpoints: endpoints.clone(),
    });
    nemesis
        .run(&mut cluster, &oracle, &shards, params.safety)
        .await;
    nemesis.heal(&mut cluster);
    for id in cluster.down_nodes() {
        cluster.restart(id);
    }

    let mut fin = Final::default();
    fin.liveness
        .extend(on(&admin, probe_writes(client(&endpoints), oracle.clone())).await);
    workload.stop_producers().await;
    fin.liveness.extend(catch_up(&oracle, &params.shape).await);
    workload.stop_readers().await;
    let expected = Expected {
        nodes: cluster.nodes.keys().copied().collect(),
        drained: cluster.drained.iter().copied().collect(),
    };
    fin.placement = on(&admin, settle_placement(client(&endpoints), expected)).await;
    for shard in &shards {
        let name = shard.kinesis_name();
        let began = now_ms();
        let read = on(&admin, full_read(client(&endpoints), name.clone())).await;
        fin.read_window_ms.insert(name.clone(), (began, now_ms()));
        match read {
            Ok(records) => {
                fin.reads.insert(name, records);
            }
            Err(e) => fin.read_failures.push(format!("{name}: {e}")),
        }
    }
    fin.first_index = first_indexes(&cluster, &shards);
    let groups: Vec<GroupId> = std::iter::once(GroupId::META)
        .chain(shards.iter().map(|s| GroupId::from(*s)))
        .collect();
    fin.convergence = checkers::convergence::measure(&cluster, &groups).await;
    fin.liveness.extend(
        cluster
            .start_failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default(),
    );
    let violations = checkers::check_all(&lock(&oracle), &fin);
    let figures = figures(&lock(&oracle), &fin);
    let mut out = outcome(seed, started, violations, &nemesis.history, &params, &mix);
    out.text = format!("{figures}; {}", out.text);
    out
}

/// Runs `f` on a client machine and waits for it.
async fn on<T: Send + 'static>(
    m: &madsim::runtime::NodeHandle,
    f: impl Future<Output = T> + Send + 'static,
) -> T {
    m.spawn(f).await.expect("a client task does not panic")
}

async fn create_stream(
    c: Client,
    shards: u32,
    retention: Duration,
) -> Result<Vec<ShardId>, String> {
    let admin = c.admin();
    let mut options = CreateStream::with_shards(shards);
    options.replication_factor = Some(3);
    options.retention = Some(retention);
    let start = madsim::time::Instant::now();
    loop {
        match admin.create_stream(STREAM, options.clone()).await {
            Ok(_) | Err(runnel_client::ClientError::AlreadyExists { .. }) => break,
            Err(e) if start.elapsed() > SETTLE_BOUND => return Err(format!("CreateStream: {e}")),
            Err(_) => madsim::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let d = admin
        .wait_until_active(STREAM, SETTLE_BOUND)
        .await
        .map_err(|e| format!("stream not active: {e}"))?;
    d.shards
        .iter()
        .map(|s| {
            s.shard_id
                .trim_start_matches("shardId-")
                .parse()
                .map(ShardId)
                .map_err(|e| format!("{e}"))
        })
        .collect()
}

/// Liveness of writes: after healing, a fresh producer stores records (to every shard,
/// given enough keys) within [`LIVENESS_BOUND`].
async fn probe_writes(c: Client, oracle: SharedOracle) -> Vec<String> {
    let producer = match c.producer(STREAM, runnel_client::ProducerConfig::default()) {
        Ok(p) => p,
        Err(e) => return vec![format!("probe producer: {e}")],
    };
    let start = madsim::time::Instant::now();
    for i in 0..16 {
        let data = Bytes::from(format!("probe.{i}|"));
        lock(&oracle).send(&data);
        loop {
            match producer
                .send(Record::new(format!("probe-key-{i}"), data.clone()))
                .await
            {
                Ok(put) => {
                    lock(&oracle).acked.push(Acked {
                        shard: put.shard_id,
                        seq: put.sequence_number,
                        data,
                        acked_ms: now_ms(),
                    });
                    break;
                }
                Err(e) if start.elapsed() > LIVENESS_BOUND => {
                    return vec![format!(
                        "writes still fail {LIVENESS_BOUND:?} after healing: {e}"
                    )];
                }
                Err(_) => madsim::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Vec::new()
}

/// Liveness of reads: every consumer's reads (and the group's) reach every acknowledged
/// record within [`SETTLE_BOUND`].
async fn catch_up(oracle: &SharedOracle, shape: &Shape) -> Vec<String> {
    let start = madsim::time::Instant::now();
    loop {
        let missing = missing_reads(&lock(oracle), shape);
        if missing.is_empty() {
            return missing;
        }
        if start.elapsed() > SETTLE_BOUND {
            return missing;
        }
        madsim::time::sleep(Duration::from_millis(500)).await;
    }
}

fn missing_reads(o: &Oracle, shape: &Shape) -> Vec<String> {
    let now = now_ms();
    let live = o
        .acked
        .iter()
        .filter(|a| !o.maybe_trimmed(&a.shard, a.seq) && !o.may_have_expired(&a.data, now));
    let (mut consumers, mut group) = (0, 0);
    for a in live {
        if shape.consumers > 0 && !o.observed.contains_key(&(a.shard.clone(), a.seq)) {
            consumers += 1;
        }
        if shape.group_members > 0 && !o.group_seen.contains(&(a.shard.clone(), a.seq)) {
            group += 1;
        }
    }
    let mut out = Vec::new();
    if consumers > 0 {
        out.push(format!(
            "consumers never read {consumers} acknowledged records within {SETTLE_BOUND:?}"
        ));
    }
    if group > 0 {
        out.push(format!(
            "the consumer group never read {group} acknowledged records within {SETTLE_BOUND:?}"
        ));
    }
    out
}

/// The nodes placement must show after healing.
struct Expected {
    /// Every node booted or joined.
    nodes: Vec<u64>,
    /// The ones drained: they must end `Drained`, holding no replica.
    drained: Vec<u64>,
}

/// Waits for every undrained node Up and every drained one Drained, no shard
/// under-replicated or leaderless, and every shard's replicas on distinct undrained
/// nodes; the problems still seen at the bound.
async fn settle_placement(c: Client, expected: Expected) -> Vec<String> {
    let start = madsim::time::Instant::now();
    loop {
        let problems = placement_problems(&c, &expected).await;
        if problems.is_empty() || start.elapsed() > SETTLE_BOUND {
            return problems;
        }
        madsim::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn placement_problems(c: &Client, expected: &Expected) -> Vec<String> {
    let admin = c.admin();
    let status = match admin.cluster_status().await {
        Ok(s) => s,
        Err(e) => return vec![format!("ClusterStatus fails: {e}")],
    };
    let mut out = Vec::new();
    let mut up: Vec<u64> = status
        .nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Up)
        .map(|n| n.node_id.0)
        .collect();
    up.sort_unstable();
    let want_up: Vec<u64> = expected
        .nodes
        .iter()
        .copied()
        .filter(|n| !expected.drained.contains(n))
        .collect();
    if up != want_up {
        out.push(format!("nodes Up: {up:?}, expected {want_up:?}"));
    }
    let mut drained: Vec<u64> = status
        .nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Drained)
        .map(|n| n.node_id.0)
        .collect();
    drained.sort_unstable();
    if drained != expected.drained {
        out.push(format!(
            "nodes Drained: {drained:?}, expected {:?}",
            expected.drained
        ));
    }
    if status.under_replicated_shards > 0 || status.leaderless_shards > 0 {
        out.push(format!(
            "{} shards under-replicated, {} leaderless",
            status.under_replicated_shards, status.leaderless_shards
        ));
    }
    match admin.list_shards(STREAM).await {
        Err(e) => out.push(format!("ListShards fails: {e}")),
        Ok(shards) => {
            for s in shards {
                let mut on: Vec<u64> = s.replicas.iter().map(|r| r.node_id).collect();
                on.sort_unstable();
                on.dedup();
                let distinct_up = on.iter().filter(|n| up.contains(n)).count();
                let on_drained = on.iter().any(|n| expected.drained.contains(n));
                if on.len() != s.replicas.len()
                    || distinct_up < 3
                    || on_drained
                    || s.leader.is_none()
                {
                    out.push(format!(
                        "{}: replicas {:?}, leader {:?}",
                        s.shard_id, s.replicas, s.leader
                    ));
                }
            }
        }
    }
    out
}

/// Reads one shard from its oldest record to its tip through the public API.
async fn full_read(c: Client, shard: String) -> Result<Vec<(SeqNo, Bytes)>, String> {
    let config = ConsumerConfig {
        idle_poll_interval: Duration::from_millis(50),
        ..ConsumerConfig::default()
    };
    let mut reader = c
        .consumer(STREAM, config)
        .read_shard(&shard, StartPosition::TrimHorizon);
    let mut out = Vec::new();
    let start = madsim::time::Instant::now();
    while start.elapsed() < SETTLE_BOUND {
        match madsim::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Ok(Some(b))) => {
                let done = b.records.is_empty() && b.millis_behind_latest == 0;
                out.extend(b.records.into_iter().map(|r| (r.sequence_number, r.data)));
                if done {
                    return Ok(out);
                }
            }
            Ok(Ok(None)) => return Ok(out),
            Ok(Err(_)) | Err(_) => madsim::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Err(format!(
        "not at the tip after {SETTLE_BOUND:?} ({} records read)",
        out.len()
    ))
}

fn first_indexes(
    cluster: &Cluster,
    shards: &[ShardId],
) -> BTreeMap<(String, u64), Option<runnel_types::LogIndex>> {
    let mut out = BTreeMap::new();
    for shard in shards {
        for id in cluster.up_nodes() {
            if let Some(g) = cluster
                .ctx(id)
                .and_then(|c| c.registry.group((*shard).into()).ok())
            {
                out.insert((shard.kinesis_name(), id), g.first_index());
            }
        }
    }
    out
}

fn figures(o: &Oracle, fin: &Final) -> String {
    let read: usize = fin.reads.values().map(Vec::len).sum();
    let mut text = format!(
        "sent {}, acked {}, failed sends {}, read in the run {}, read at the end {}",
        o.sent.len(),
        o.acked.len(),
        o.failed_sends,
        o.observed.len(),
        read
    );
    if let Some(r) = o.retention_ms {
        let expired = o
            .acked
            .iter()
            .filter(|a| o.may_have_expired(&a.data, checkers::read_end_ms(fin, &a.shard)))
            .count();
        let trimmed = fin
            .first_index
            .values()
            .filter(|f| f.is_some_and(|i| i.0 > 1))
            .count();
        text.push_str(&format!(
            "; retention {} s: {expired} acked records may have expired by the full read, \
             {trimmed} of {} replicas trimmed",
            r / 1000,
            fin.first_index.len()
        ));
    }
    text
}

fn outcome(
    seed: u64,
    started: madsim::time::Instant,
    violations: Vec<(&'static str, Vec<String>)>,
    history: &[String],
    params: &Params,
    mix: &[crate::nemesis::Fault],
) -> Outcome {
    let simulated = started.elapsed();
    let failed = !violations.is_empty();
    let violated = violations.iter().map(|(c, _)| *c).collect();
    let retention = params
        .short_retention()
        .map_or(String::new(), |r| format!(", retention {r:?}"));
    let mut text = format!(
        "{} nodes, {} shards{retention}, {:?} of faults from {mix:?}: {} injected; {:.0} s simulated",
        params.nodes,
        params.shards,
        params.safety,
        history.len(),
        simulated.as_secs_f64()
    );
    if failed {
        text.push_str(&format!("\n  workload: {:?}", params.shape));
        for (checker, v) in &violations {
            text.push_str(&format!("\n  VIOLATION [{checker}] ({} in all)", v.len()));
            for line in v.iter().take(10) {
                text.push_str(&format!("\n    {line}"));
            }
        }
    }
    // `RUNNEL_SIM_HISTORY=1` prints the faults of passing seeds too (how a planted bug
    // escaped a seed, what a mix did).
    if failed || std::env::var("RUNNEL_SIM_HISTORY").is_ok_and(|v| v == "1") {
        text.push_str("\n  faults:");
        for h in history {
            text.push_str(&format!("\n    {h}"));
        }
    }
    Outcome {
        seed,
        failed,
        text,
        simulated,
        faults: history.len(),
        violated,
    }
}
