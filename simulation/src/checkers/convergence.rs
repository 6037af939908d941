//! Convergence: once healed and quiet, every replica of every group (each shard and
//! the meta group) reaches its group's commit point, and holds the same entries as the
//! leader up to it: the same log ids (index, term) and the same payload bytes (and, for
//! record batches, the same stored arrival time). A replica that kept a conflicting
//! suffix, or whose storage error stopped its Raft core while the other two carried on,
//! fails here although every client check passes.
//!
//! White-box: [`measure`] reads each replica's segment log in place (the harness owns
//! the nodes) after the liveness phase and the full read; [`check`] reports what it
//! found.

use std::collections::BTreeSet;
use std::time::Duration;

use runnel_log::{Entry, SegmentLog};
use runnel_raft::Group;
use runnel_types::{GroupId, LogIndex};

use super::Final;
use crate::cluster::Cluster;
use crate::oracle::Oracle;

/// How long (simulated) every replica may take to reach the commit point read from
/// the leader.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(30);
/// Bytes of entries read at a time when comparing logs.
const READ_CHUNK_BYTES: usize = 4 << 20;

pub fn check(_oracle: &Oracle, fin: &Final) -> Vec<String> {
    fin.convergence.clone()
}

/// Measures every group in `groups`: the problems found (none when converged).
pub async fn measure(cluster: &Cluster, groups: &[GroupId]) -> Vec<String> {
    let mut out = Vec::new();
    for group in groups {
        out.extend(measure_group(cluster, *group).await);
    }
    out
}

fn name(group: GroupId) -> String {
    if group.is_meta() {
        "the meta group".into()
    } else {
        runnel_types::ShardId(group.0).kinesis_name()
    }
}

fn hosted(cluster: &Cluster, node: u64, group: GroupId) -> Option<std::sync::Arc<Group>> {
    cluster.ctx(node)?.registry.group(group).ok()
}

/// The replica that leads `group` (the highest term, if two believe they do).
fn leader(cluster: &Cluster, group: GroupId) -> Option<(u64, std::sync::Arc<Group>)> {
    cluster
        .up_nodes()
        .into_iter()
        .filter_map(|n| hosted(cluster, n, group).map(|g| (n, g)))
        .filter(|(_, g)| g.is_leader())
        .max_by_key(|(_, g)| g.raft().metrics().borrow().current_term)
}

async fn measure_group(cluster: &Cluster, group: GroupId) -> Vec<String> {
    let what = name(group);
    let start = madsim::time::Instant::now();
    let (leader_node, lead) = loop {
        if let Some(l) = leader(cluster, group) {
            break l;
        }
        if start.elapsed() > CONVERGE_BOUND {
            return vec![format!("{what}: no replica leads after {CONVERGE_BOUND:?}")];
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    };
    let target = lead.committed();
    let members: BTreeSet<u64> = lead
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    let lagging = wait_for_commit(cluster, group, &members, target).await;
    if !lagging.is_empty() {
        return lagging
            .into_iter()
            .map(|l| format!("{what}: {l}, short of the commit point {} of its leader (node {leader_node}) after {CONVERGE_BOUND:?}", target.0))
            .collect();
    }
    compare_logs(cluster, group, leader_node, &members, target)
        .into_iter()
        .map(|l| format!("{what}: {l}"))
        .collect()
}

/// Waits (at most [`CONVERGE_BOUND`]) for every member to host `group` with its commit
/// point at `target` or past it; what still lags at the bound.
async fn wait_for_commit(
    cluster: &Cluster,
    group: GroupId,
    members: &BTreeSet<u64>,
    target: LogIndex,
) -> Vec<String> {
    let start = madsim::time::Instant::now();
    loop {
        let lagging: Vec<String> = members
            .iter()
            .filter_map(|n| match hosted(cluster, *n, group) {
                None => Some(format!("node {n}, a member, does not host it")),
                Some(g) if g.committed() < target => {
                    let log = g.segment_log();
                    Some(format!(
                        "node {n}'s replica is at commit point {} (log {:?}..={:?})",
                        g.committed().0,
                        log.first_index().map(|i| i.0),
                        log.last_entry().map(|e| e.index.0)
                    ))
                }
                Some(_) => None,
            })
            .collect();
        if lagging.is_empty() || start.elapsed() > CONVERGE_BOUND {
            return lagging;
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first index every replica still holds (a replica's trimmed prefix is not
/// compared).
fn floor(log: &SegmentLog) -> LogIndex {
    log.first_index()
        .unwrap_or_else(|| log.purged().map_or(LogIndex(1), |p| p.index.next()))
}

/// Compares every member's entries with the leader's, from the highest first index to
/// `target`; the first difference per member. Synchronous, so nothing (retention
/// included) moves the logs while it reads.
fn compare_logs(
    cluster: &Cluster,
    group: GroupId,
    leader_node: u64,
    members: &BTreeSet<u64>,
    target: LogIndex,
) -> Vec<String> {
    let logs: Vec<(u64, std::sync::Arc<Group>)> = members
        .iter()
        .filter_map(|n| hosted(cluster, *n, group).map(|g| (*n, g)))
        .collect();
    let Some(lead) = logs
        .iter()
        .find(|(n, _)| *n == leader_node)
        .map(|(_, g)| g.clone())
    else {
        return vec![format!(
            "its leader, node {leader_node}, is not among its members"
        )];
    };
    let from = logs
        .iter()
        .map(|(_, g)| floor(g.segment_log()))
        .max()
        .unwrap_or(LogIndex(1));
    let mut out = Vec::new();
    for (node, g) in logs.iter().filter(|(n, _)| *n != leader_node) {
        if let Err(e) = compare_one(lead.segment_log(), g.segment_log(), from, target) {
            out.push(format!(
                "node {node}'s log differs from the leader's (node {leader_node}): {e}"
            ));
        }
    }
    out
}

/// Compares `other` with `lead` over `[from, target]`, chunk by chunk.
fn compare_one(
    lead: &SegmentLog,
    other: &SegmentLog,
    from: LogIndex,
    target: LogIndex,
) -> Result<(), String> {
    let mut next = from;
    while next <= target {
        let want = lead
            .read(next, target.next(), READ_CHUNK_BYTES)
            .map_err(|e| format!("the leader's log fails to read at {}: {e}", next.0))?;
        let Some(last) = want.last().map(|e| e.index) else {
            return Err(format!("the leader's log has no entry at {}", next.0));
        };
        let have = other
            .read(next, last.next(), usize::MAX)
            .map_err(|e| format!("it fails to read at {}: {e}", next.0))?;
        let mut have = have.iter();
        for w in &want {
            match have.next() {
                Some(h) if same(h, w) => {}
                Some(h) => {
                    return Err(format!(
                        "at {}: {} where the leader has {}",
                        w.index.0,
                        show(h),
                        show(w)
                    ));
                }
                None => {
                    return Err(format!(
                        "entry {} is missing (the leader has {})",
                        w.index.0,
                        show(w)
                    ));
                }
            }
        }
        next = last.next();
    }
    Ok(())
}

/// The same log id and payload; for a record batch the same stored arrival time too
/// (what readers see and retention goes by). Other entries (blank, membership, meta
/// commands) store the replica's running maximum of arrival times
/// (`log_store.rs`, `to_log_entries`), which is local by design: a replica that
/// restarted or truncated may hold a lower one.
fn same(a: &Entry, b: &Entry) -> bool {
    let records = runnel_raft::codec::decode_payload(&a.payload)
        .ok()
        .and_then(|p| runnel_raft::codec::payload_timestamp(&p))
        .is_some();
    a.index == b.index
        && a.term == b.term
        && a.payload == b.payload
        && (!records || a.timestamp_ms == b.timestamp_ms)
}
fn show(e: &Entry) -> String {
    format!(
        "entry {} of term {} ({} bytes, arrived at {} ms)",
        e.index.0,
        e.term.0,
        e.payload.len(),
        e.timestamp_ms
    )
}
