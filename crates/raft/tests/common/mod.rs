//! Scenarios shared by the real-tokio and the madsim cluster tests. A [`Cluster`]
//! starts, kills and restarts nodes; the scenarios drive groups through it and check
//! what every replica holds. No timing thresholds: deadlines only bound a hang.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use runnel_raft::{Error, RaftTimings, Registry, WriteAck};
use runnel_types::{GroupId, LogIndex, NodeId, Record};

/// How long any wait may take before the test fails (a hang guard, not a threshold).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub trait Cluster {
    fn addr(&self, node: NodeId) -> String;
    /// Starts (or restarts, from its files) `node`, opening every group it hosts.
    async fn start(&mut self, node: NodeId) -> anyhow::Result<()>;
    /// Stops `node` abruptly; unsynced writes are lost where the disk allows it.
    async fn kill(&mut self, node: NodeId) -> anyhow::Result<()>;
    fn registry(&self, node: NodeId) -> Option<Arc<Registry>>;
    /// Creates `group` on `node` (empty log).
    async fn create_group(&self, node: NodeId, group: GroupId) -> anyhow::Result<()>;
    async fn sleep(&self, d: Duration);
}

pub fn records(tag: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::new(
                format!("{tag}-{i}"),
                format!("payload {tag} {i}").into_bytes(),
            )
        })
        .collect()
}

pub async fn with_patience<T>(
    c: &impl Cluster,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(50);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if waited > PATIENCE {
            bail!("gave up waiting for {what}");
        }
        c.sleep(step).await;
        waited += step;
    }
}

/// Writes through whichever node leads `group`, following NotLeader hints; retries
/// across elections.
pub async fn write(
    c: &impl Cluster,
    nodes: &[NodeId],
    group: GroupId,
    recs: Vec<Record>,
) -> anyhow::Result<WriteAck> {
    let mut target = nodes[0];
    with_patience(c, "a committed write", async || {
        let reg = c.registry(target);
        let result = match reg.as_ref().map(|r| r.group(group)) {
            Some(Ok(g)) => g.write(recs.clone()).await,
            _ => Err(Error::ShuttingDown { group }),
        };
        match result {
            Ok(ack) => Some(ack),
            Err(Error::NotLeader {
                leader: Some((leader, _)),
                ..
            }) if nodes.contains(&leader) => {
                target = leader;
                None
            }
            Err(_) => {
                let i = nodes.iter().position(|n| *n == target).unwrap_or(0);
                target = nodes[(i + 1) % nodes.len()];
                None
            }
        }
    })
    .await
}

/// Waits until `node`'s replica of `group` has committed `index`.
pub async fn wait_committed(
    c: &impl Cluster,
    node: NodeId,
    group: GroupId,
    index: LogIndex,
) -> anyhow::Result<()> {
    with_patience(
        c,
        &format!("node {node} to commit {index} in group {group}"),
        async || {
            let g = c.registry(node)?.group(group).ok()?;
            (g.committed() >= index).then_some(())
        },
    )
    .await
}

/// Every record batch of `node`'s replica from `from` up to `to`, as (index, bytes).
pub async fn read_all(
    c: &impl Cluster,
    node: NodeId,
    group: GroupId,
    from: LogIndex,
    to: LogIndex,
) -> anyhow::Result<Vec<(LogIndex, Vec<u8>)>> {
    let g = c.registry(node).context("node is down")?.group(group)?;
    let mut out = Vec::new();
    let mut next = from;
    while next <= to {
        let r = g.read_committed(next, 1 << 20).await?;
        if r.next == next {
            break;
        }
        out.extend(
            r.batches
                .into_iter()
                .filter(|b| b.index <= to)
                .map(|b| (b.index, b.batch.to_vec())),
        );
        next = r.next;
    }
    Ok(out)
}

/// Checks that every node in `nodes` holds the same batches from `from` to `to`,
/// and that all `acks` are among them.
pub async fn check_same(
    c: &impl Cluster,
    nodes: &[NodeId],
    group: GroupId,
    from: LogIndex,
    to: LogIndex,
    acks: &[WriteAck],
) -> anyhow::Result<()> {
    let reference = read_all(c, nodes[0], group, from, to).await?;
    for ack in acks.iter().filter(|a| a.index >= from) {
        anyhow::ensure!(
            reference.iter().any(|(i, _)| *i == ack.index),
            "acked entry {} missing in group {group}",
            ack.index
        );
    }
    for n in &nodes[1..] {
        let other = read_all(c, *n, group, from, to).await?;
        anyhow::ensure!(
            other == reference,
            "node {n} differs from node {} in group {group}",
            nodes[0]
        );
    }
    Ok(())
}

pub fn members(c: &impl Cluster, nodes: &[NodeId]) -> BTreeMap<NodeId, String> {
    nodes.iter().map(|n| (*n, c.addr(*n))).collect()
}

/// Creates `groups` on `nodes` and initializes each from the first node.
pub async fn create_groups(
    c: &impl Cluster,
    nodes: &[NodeId],
    groups: &[GroupId],
) -> anyhow::Result<()> {
    for g in groups {
        for n in nodes {
            c.create_group(*n, *g).await?;
        }
        let reg = c.registry(nodes[0]).context("first node is down")?;
        reg.group(*g)?.initialize(&members(c, nodes)).await?;
    }
    Ok(())
}

pub async fn leader_of(
    c: &impl Cluster,
    nodes: &[NodeId],
    group: GroupId,
) -> anyhow::Result<NodeId> {
    with_patience(c, "a leader", async || {
        for n in nodes {
            if let Some(reg) = c.registry(*n)
                && let Ok(g) = reg.group(group)
                && g.is_leader()
            {
                return Some(*n);
            }
        }
        None
    })
    .await
}

/// Replicate; stop the leader; keep committing; restart it from its files; it
/// catches up; everyone holds the same batches.
pub async fn replicate_failover_restart(
    c: &mut impl Cluster,
    groups: &[GroupId],
    writes: usize,
) -> anyhow::Result<()> {
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    for n in nodes {
        c.start(n).await?;
    }
    create_groups(c, &nodes, groups).await?;
    let mut acks: BTreeMap<GroupId, Vec<WriteAck>> = BTreeMap::new();
    for g in groups {
        for i in 0..writes {
            acks.entry(*g)
                .or_default()
                .push(write(c, &nodes, *g, records(&format!("a{i}"), 3)).await?);
        }
    }
    let victim = leader_of(c, &nodes, groups[0]).await?;
    c.kill(victim).await?;
    let alive: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != victim).collect();
    for g in groups {
        for i in 0..writes {
            acks.entry(*g)
                .or_default()
                .push(write(c, &alive, *g, records(&format!("b{i}"), 2)).await?);
        }
    }
    c.start(victim).await?;
    for g in groups {
        let last = acks[g].iter().map(|a| a.index).max().context("no acks")?;
        for n in nodes {
            wait_committed(c, n, *g, last).await?;
        }
        check_same(c, &nodes, *g, LogIndex(1), last, &acks[g]).await?;
        for pair in acks[g].windows(2) {
            anyhow::ensure!(
                pair[0].seq_nos().last() < pair[1].seq_nos().next(),
                "sequence numbers must grow"
            );
        }
    }
    Ok(())
}

/// A follower misses writes while the others trim past them: it catches up by snapshot
/// (the retained log), and then holds the same batches from the trim point on.
pub async fn follower_behind_trim_point(
    c: &mut impl Cluster,
    groups: &[GroupId],
    writes: usize,
) -> anyhow::Result<()> {
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    for n in nodes {
        c.start(n).await?;
    }
    create_groups(c, &nodes, groups).await?;
    for g in groups {
        write(c, &nodes, *g, records("before", 2)).await?;
    }
    let leader = leader_of(c, &nodes, groups[0]).await?;
    let lagger = *nodes.iter().find(|n| **n != leader).context("a follower")?;
    c.kill(lagger).await?;
    let alive: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != lagger).collect();
    let mut last = BTreeMap::new();
    for g in groups {
        let mut acks = Vec::new();
        for i in 0..writes {
            acks.push(write(c, &alive, *g, records(&format!("w{i}"), 2)).await?);
        }
        let top = acks.iter().map(|a| a.index).max().context("acks")?;
        // Trim everything but the last few entries on the live replicas.
        let trim_to = LogIndex(top.0.saturating_sub(2));
        for n in &alive {
            wait_committed(c, *n, *g, top).await?;
            let reg = c.registry(*n).context("alive")?;
            reg.group(*g)?.trim(trim_to).await?;
        }
        last.insert(*g, (top, trim_to, acks));
    }
    c.start(lagger).await?;
    for g in groups {
        let (top, trim_to, acks) = &last[g];
        wait_committed(c, lagger, *g, *top).await?;
        let reg = c.registry(lagger).context("lagger up")?;
        let first = reg.group(*g)?.first_index().context("lagger has entries")?;
        anyhow::ensure!(
            first <= trim_to.next(),
            "lagger must hold the retained log from {}",
            trim_to.next()
        );
        check_same(c, &nodes, *g, trim_to.next(), *top, acks).await?;
    }
    Ok(())
}

/// Like [`follower_behind_trim_point`], with a retained log of several snapshot
/// chunks (records of 100 KiB): the lagger stages the snapshot on disk chunk by chunk,
/// installs it, and no staging directory is left behind.
pub async fn follower_catches_up_by_large_snapshot(
    c: &mut impl Cluster,
    group: GroupId,
) -> anyhow::Result<()> {
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    for n in nodes {
        c.start(n).await?;
    }
    create_groups(c, &nodes, &[group]).await?;
    write(c, &nodes, group, records("before", 2)).await?;
    let leader = leader_of(c, &nodes, group).await?;
    let lagger = *nodes.iter().find(|n| **n != leader).context("a follower")?;
    c.kill(lagger).await?;
    let alive: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != lagger).collect();
    let big = |tag: String| -> Vec<Record> {
        (0..4)
            .map(|i| Record::new(format!("{tag}-{i}"), vec![i as u8; 100 * 1024]))
            .collect()
    };
    let mut acks = Vec::new();
    for i in 0..12 {
        acks.push(write(c, &alive, group, big(format!("big{i}"))).await?);
    }
    let top = acks.iter().map(|a| a.index).max().context("acks")?;
    let trim_to = acks[0].index;
    for n in &alive {
        wait_committed(c, *n, group, top).await?;
        c.registry(*n)
            .context("alive")?
            .group(group)?
            .trim(trim_to)
            .await?;
    }
    c.start(lagger).await?;
    wait_committed(c, lagger, group, top).await?;
    let reg = c.registry(lagger).context("lagger up")?;
    let first = reg
        .group(group)?
        .first_index()
        .context("lagger has entries")?;
    anyhow::ensure!(first <= trim_to.next(), "lagger starts at {first}");
    check_same(c, &nodes, group, trim_to.next(), top, &acks).await?;
    let staged = reg.staged_snapshots()?;
    anyhow::ensure!(staged.is_empty(), "staging left behind: {staged:?}");
    Ok(())
}

/// A move's learner is added, the move is cancelled, the learner's replica is wiped
/// and created afresh, and the learner is added again: it catches up from nothing.
/// Twice: once with the learner dropped from the membership before the wipe (what the
/// shard manager does after `CancelMove`), once still a member when its log reverts.
pub async fn learner_cancelled_wiped_and_added_again(
    c: &mut impl Cluster,
    group: GroupId,
) -> anyhow::Result<()> {
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    let learner = NodeId(4);
    for n in nodes.iter().chain([&learner]) {
        c.start(*n).await?;
    }
    create_groups(c, &nodes, &[group]).await?;
    let mut acks = vec![write(c, &nodes, group, records("l0", 4)).await?];
    c.create_group(learner, group).await?;
    let leader = leader_of(c, &nodes, group).await?;
    let lg = c.registry(leader).context("leader")?.group(group)?;
    lg.add_learner(learner, &c.addr(learner)).await?;
    wait_committed(c, learner, group, acks[0].index).await?;
    for remove_first in [true, false] {
        if remove_first {
            lg.remove_learner(learner).await?;
            let m = lg.raft().metrics().borrow().membership_config.clone();
            anyhow::ensure!(
                m.membership().get_node(&learner.0).is_none(),
                "node {learner} is still a member: {m:?}"
            );
        }
        let reg = c.registry(learner).context("learner up")?;
        reg.remove_group(group).await?;
        reg.create_group(group).await?;
        acks.push(write(c, &nodes, group, records("l1", 4)).await?);
        lg.add_learner(learner, &c.addr(learner)).await?;
        // The leader never counts more of the learner's log than the learner holds
        // (a stale record of the wiped replica would).
        let matched = lg
            .raft()
            .metrics()
            .borrow()
            .replication
            .as_ref()
            .and_then(|r| r.get(&learner.0).cloned().flatten())
            .map(|l| l.index);
        let lr = c.registry(learner).context("learner up")?.group(group)?;
        let held = lr.raft().metrics().borrow().last_log_index;
        anyhow::ensure!(
            matched <= held,
            "the leader counts {matched:?} on node {learner}, which holds {held:?}"
        );
        let top = acks.iter().map(|a| a.index).max().context("acks")?;
        let mut all = nodes.to_vec();
        all.push(learner);
        for n in &all {
            wait_committed(c, *n, group, top).await?;
        }
        check_same(c, &all, group, LogIndex(1), top, &acks).await?;
    }
    let m = lg.raft().metrics().borrow().membership_config.clone();
    let voters: BTreeSet<u64> = m.voter_ids().collect();
    anyhow::ensure!(
        voters == nodes.iter().map(|n| n.0).collect(),
        "voters changed: {voters:?}"
    );
    Ok(())
}

/// Add a learner, promote it, remove a voter; the group keeps committing and the new
/// member holds everything.
pub async fn membership_change(c: &mut impl Cluster, groups: &[GroupId]) -> anyhow::Result<()> {
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    let newcomer = NodeId(4);
    for n in nodes.iter().chain([&newcomer]) {
        c.start(*n).await?;
    }
    create_groups(c, &nodes, groups).await?;
    for g in groups {
        let mut acks = vec![write(c, &nodes, *g, records("m0", 4)).await?];
        c.create_group(newcomer, *g).await?;
        let leader = leader_of(c, &nodes, *g).await?;
        let lg = c.registry(leader).context("leader")?.group(*g)?;
        lg.add_learner(newcomer, &c.addr(newcomer)).await?;
        let removed = *nodes.iter().find(|n| **n != leader).context("a follower")?;
        let voters: BTreeSet<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| *n != removed)
            .chain([newcomer])
            .collect();
        lg.change_voters(voters.clone()).await?;
        let now: Vec<NodeId> = voters.iter().copied().collect();
        acks.push(write(c, &now, *g, records("m1", 4)).await?);
        let top = acks.iter().map(|a| a.index).max().context("acks")?;
        for n in &now {
            wait_committed(c, *n, *g, top).await?;
        }
        check_same(c, &now, *g, LogIndex(1), top, &acks).await?;
        let m = lg.raft().metrics().borrow().membership_config.clone();
        let voter_ids: BTreeSet<u64> = m.voter_ids().collect();
        anyhow::ensure!(
            voter_ids == voters.iter().map(|n| n.0).collect(),
            "voters are {voter_ids:?}"
        );
    }
    Ok(())
}

/// Leadership moves to a chosen follower on request; the group keeps committing
/// through the new leader, and every replica holds the same batches.
pub async fn transfer_leadership(c: &mut impl Cluster, groups: &[GroupId]) -> anyhow::Result<()> {
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    for n in nodes {
        c.start(n).await?;
    }
    create_groups(c, &nodes, groups).await?;
    for g in groups {
        let mut acks = vec![write(c, &nodes, *g, records("t0", 3)).await?];
        let leader = leader_of(c, &nodes, *g).await?;
        let to = *nodes
            .iter()
            .rev()
            .find(|n| **n != leader)
            .context("a follower")?;
        let lg = c.registry(leader).context("leader")?.group(*g)?;
        lg.transfer_leader(to).await?;
        let tg = c.registry(to).context("target")?.group(*g)?;
        with_patience(c, "the target to lead", async || {
            tg.is_leader().then_some(())
        })
        .await?;
        // Written on the new leader only (it may take a moment to accept writes
        // after its election): it must commit there.
        acks.push(write(c, &[to], *g, records("t1", 3)).await?);
        acks.push(write(c, &nodes, *g, records("t2", 3)).await?);
        let top = acks.iter().map(|a| a.index).max().context("acks")?;
        for n in nodes {
            wait_committed(c, n, *g, top).await?;
        }
        check_same(c, &nodes, *g, LogIndex(1), top, &acks).await?;
    }
    Ok(())
}

/// Whether every replica of `groups` on `nodes` has quiesced (stopped ticking).
fn all_quiesced(c: &impl Cluster, nodes: &[NodeId], groups: &[GroupId]) -> bool {
    nodes.iter().all(|n| {
        c.registry(*n).is_some_and(|reg| {
            groups
                .iter()
                .all(|g| reg.group(*g).is_ok_and(|g| g.is_quiesced()))
        })
    })
}

/// Idle groups quiesce on every replica; a write to a quiesced group commits; once
/// quiesced again, killing the leader's node still gets a new leader elected (the
/// followers notice the node is silent, not a missing heartbeat), which commits.
pub async fn idle_groups_quiesce_and_fail_over(
    c: &mut impl Cluster,
    groups: &[GroupId],
) -> anyhow::Result<()> {
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    for n in nodes {
        c.start(n).await?;
    }
    create_groups(c, &nodes, groups).await?;
    let mut acks: BTreeMap<GroupId, Vec<WriteAck>> = BTreeMap::new();
    for g in groups {
        let ack = write(c, &nodes, *g, records("before", 2)).await?;
        acks.entry(*g).or_default().push(ack);
    }
    with_patience(c, "every replica to quiesce", async || {
        all_quiesced(c, &nodes, groups).then_some(())
    })
    .await?;
    // A quiesced leader sends no heartbeats, so its lease (an election timeout) lapses;
    // the first write after that must still succeed at once on the leader, not be
    // refused as "not the leader" with no leader named (lease.rs).
    c.sleep(Duration::from_millis(
        RaftTimings::default().election_timeout_ms_max * 2,
    ))
    .await;
    for g in groups {
        let leader = leader_of(c, &nodes, *g).await?;
        let group = c
            .registry(leader)
            .ok_or_else(|| anyhow::anyhow!("node {leader} is not running"))?
            .group(*g)?;
        assert!(group.is_quiesced(), "group {g} woke before the write");
        let ack = group
            .write(records("quiesced", 2))
            .await
            .map_err(|e| anyhow::anyhow!("first write to quiesced group {g} on its leader: {e}"))?;
        acks.entry(*g).or_default().push(ack);
    }
    with_patience(c, "every replica to quiesce again", async || {
        all_quiesced(c, &nodes, groups).then_some(())
    })
    .await?;
    let victim = leader_of(c, &nodes, groups[0]).await?;
    c.kill(victim).await?;
    let alive: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != victim).collect();
    for g in groups {
        leader_of(c, &alive, *g).await?;
        let ack = write(c, &alive, *g, records("after", 2)).await?;
        acks.entry(*g).or_default().push(ack);
        let last = ack.index;
        for n in &alive {
            wait_committed(c, *n, *g, last).await?;
        }
        check_same(c, &alive, *g, LogIndex(1), last, &acks[g]).await?;
    }
    Ok(())
}
