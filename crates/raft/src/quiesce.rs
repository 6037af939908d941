//! Quiescing idle groups: a group with no writes stops its openraft ticker on every
//! replica, so 1,000 idle groups cost no per-group heartbeats, timers or wake-ups;
//! the node-level probes of `network/liveness.rs` stand in for the heartbeats.
//!
//! Why: openraft ticks every group about five times per heartbeat interval and its
//! leader sends a heartbeat to each follower every interval. Batched into a handful
//! of RPCs that is still 20,000 heartbeats a second for 1,000 groups, each handled by
//! two RaftCores; measured, most of a core per node. CockroachDB and TiKV quiesce idle
//! ranges / regions for the same reason.
//!
//! The rule, checked by one task per node every heartbeat interval:
//! - **Leader**: no new entry for `leader_idle_ms`, everything applied, and every
//!   follower and learner has matched the last entry: it stops ticking (no heartbeats).
//! - **Follower / learner**: no new entry for `follower_idle_ms` (shorter, so that it
//!   stops expecting heartbeats before the leader stops sending them), everything
//!   applied, a known leader on another node whose node answers probes: it stops
//!   ticking (no election timer).
//! - **Wake**: any new entry (a write on the leader; entries, a vote request, a
//!   snapshot or a leader transfer arriving at a follower, see `server.rs`) turns the
//!   ticker back on. A quiesced follower whose leader's node has been silent for
//!   `election_timeout_ms_max` wakes too: its election timer has long expired, so it
//!   campaigns at its next tick, and openraft elects a new leader as usual.
//!
//! Safety does not depend on any of this: a tick only drives timeouts, never what is
//! accepted, so the worst a wrong guess causes is an unneeded election. The costs: a
//! dead leader is noticed an election timeout after its node stops answering probes
//! (instead of after its last heartbeat), plus one interval; a leader whose node
//! still answers probes but whose group is stuck is not replaced while quiesced; and
//! a follower that learns the leader only from its persisted vote after a restart
//! starts quiesced (instead of campaigning because nothing is heard).

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::ServerState;
use runnel_types::{GroupId, NodeId};
use tracing::{Instrument, debug};

use crate::group::Group;
use crate::network::client::Router;
use crate::network::liveness::Liveness;
use crate::registry::{Hosted, RaftTimings};

/// When idle groups stop ticking.
#[derive(Clone, Debug)]
pub struct QuiesceConfig {
    /// Off: every group ticks and heartbeats all the time (openraft's own behaviour).
    pub enabled: bool,
    /// A follower or learner stops its election timer after this long without a new
    /// entry.
    pub follower_idle_ms: u64,
    /// A leader stops its heartbeats after this long without a new entry. Longer than
    /// `follower_idle_ms` by several heartbeat intervals, so that the followers have
    /// quiesced (and the last commit point reached them) before heartbeats stop.
    pub leader_idle_ms: u64,
}

impl Default for QuiesceConfig {
    fn default() -> Self {
        QuiesceConfig {
            enabled: true,
            follower_idle_ms: 2_000,
            leader_idle_ms: 3_000,
        }
    }
}

/// What the scan remembers of a group between two looks.
struct Seen {
    last_log: Option<u64>,
    since: Instant,
}

/// What one look at a group's metrics decides.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    Wake,
    Quiesce,
}

/// The facts a decision needs, read from openraft's metrics.
struct Facts {
    state: ServerState,
    last_log: Option<u64>,
    applied: Option<u64>,
    /// The leader this replica follows (or, before it heard one, the leader its
    /// persisted vote names).
    leader: Option<u64>,
    /// For a leader: every follower and learner has matched the last entry.
    all_matched: bool,
}

fn facts(g: &Group) -> Facts {
    let rx = g.raft.metrics();
    let m = rx.borrow();
    let last_log = m.last_log_index;
    let voted = m.vote.committed.then_some(m.vote.leader_id.voted_for);
    let all_matched = m.replication.as_ref().is_some_and(|r| {
        r.values()
            .all(|matched| matched.as_ref().map(|l| l.index) == last_log)
    });
    Facts {
        state: m.state,
        last_log,
        applied: m.last_applied.as_ref().map(|l| l.index),
        leader: m.current_leader.or(voted),
        all_matched,
    }
}

/// The decision for one group: pure, given what the scan saw.
fn decide(
    f: &Facts,
    seen: &mut Seen,
    quiesced: bool,
    me: u64,
    now: Instant,
    config: &QuiesceConfig,
    leader_silent: impl Fn(u64) -> bool,
) -> Step {
    if seen.last_log != f.last_log {
        seen.last_log = f.last_log;
        seen.since = now;
        return if quiesced { Step::Wake } else { Step::Nothing };
    }
    let remote_leader = f.leader.filter(|l| *l != me);
    if quiesced {
        let orphaned = f.state != ServerState::Leader && remote_leader.is_some_and(&leader_silent);
        if orphaned {
            seen.since = now;
            return Step::Wake;
        }
        return Step::Nothing;
    }
    if f.applied != f.last_log {
        return Step::Nothing;
    }
    let idle = now.saturating_duration_since(seen.since);
    match f.state {
        ServerState::Leader
            if f.all_matched && idle >= Duration::from_millis(config.leader_idle_ms) =>
        {
            Step::Quiesce
        }
        ServerState::Follower | ServerState::Learner
            if remote_leader.is_some_and(|l| !leader_silent(l))
                && idle >= Duration::from_millis(config.follower_idle_ms) =>
        {
            Step::Quiesce
        }
        _ => Step::Nothing,
    }
}

/// Starts the node's quiescer; it ends when the registry is dropped or shut down.
pub(crate) fn spawn(
    hosted: Weak<Hosted>,
    router: Router,
    config: QuiesceConfig,
    timings: RaftTimings,
    node: NodeId,
) {
    let span = tracing::info_span!("quiesce", node_id = %node);
    tokio::spawn(run(hosted, router, config, timings, node).instrument(span));
}

async fn run(
    hosted: Weak<Hosted>,
    router: Router,
    config: QuiesceConfig,
    timings: RaftTimings,
    node: NodeId,
) {
    let liveness = Liveness::new();
    let interval = Duration::from_millis(timings.heartbeat_interval_ms.max(10));
    let silent_max = Duration::from_millis(timings.election_timeout_ms_max);
    let mut seen: BTreeMap<GroupId, Seen> = BTreeMap::new();
    loop {
        tokio::time::sleep(interval).await;
        let groups = match hosted.upgrade() {
            Some(h) if !h.is_stopped() => h.all(),
            _ => return,
        };
        liveness.probe_all(&router, interval).await;
        let now = Instant::now();
        seen.retain(|id, _| groups.iter().any(|g| g.id == *id));
        for g in groups {
            let f = facts(&g);
            let s = seen.entry(g.id).or_insert(Seen {
                last_log: f.last_log,
                since: now,
            });
            let silent = |l: u64| liveness.silent_for(l) > silent_max;
            match decide(&f, s, g.is_quiesced(), node.0, now, &config, silent) {
                Step::Nothing => {}
                Step::Wake => {
                    debug!(group_id = %g.id, "waking group");
                    g.wake();
                }
                Step::Quiesce => {
                    debug!(group_id = %g.id, state = ?f.state, "quiescing idle group");
                    g.quiesce();
                    // Every follower has matched: the tail kept for them is not needed.
                    g.storage.forget_tail();
                }
            }
        }
    }
}

/// Whether a group opened after a restart may start quiesced: its persisted vote is
/// committed and names another node as leader (it will wake if that node is silent,
/// or at the first entry, vote request or snapshot).
pub(crate) fn starts_quiesced(g: &Group) -> bool {
    let rx = g.raft.metrics();
    let m = rx.borrow();
    m.vote.committed && m.vote.leader_id.voted_for != g.node_id.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(state: ServerState, last: u64, applied: u64, leader: u64) -> Facts {
        Facts {
            state,
            last_log: Some(last),
            applied: Some(applied),
            leader: Some(leader),
            all_matched: true,
        }
    }

    #[test]
    fn idle_groups_quiesce_and_wake() {
        let cfg = QuiesceConfig::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(cfg.leader_idle_ms);
        let mut seen = Seen {
            last_log: Some(5),
            since: t0,
        };
        let alive = |_| false;
        let dead = |_| true;
        let f = facts(ServerState::Follower, 5, 5, 1);
        assert_eq!(
            decide(&f, &mut seen, false, 2, t0, &cfg, alive),
            Step::Nothing
        );
        assert_eq!(
            decide(&f, &mut seen, false, 2, later, &cfg, alive),
            Step::Quiesce
        );
        // Not while the leader's node is silent, nor with entries not yet applied.
        assert_eq!(
            decide(&f, &mut seen, false, 2, later, &cfg, dead),
            Step::Nothing
        );
        let behind = facts(ServerState::Follower, 5, 4, 1);
        assert_eq!(
            decide(&behind, &mut seen, false, 2, later, &cfg, alive),
            Step::Nothing
        );
        // Quiesced: a silent leader node wakes it; so does a new entry.
        assert_eq!(
            decide(&f, &mut seen, true, 2, later, &cfg, alive),
            Step::Nothing
        );
        assert_eq!(
            decide(&f, &mut seen, true, 2, later, &cfg, dead),
            Step::Wake
        );
        let grown = facts(ServerState::Follower, 6, 6, 1);
        assert_eq!(
            decide(&grown, &mut seen, true, 2, later, &cfg, alive),
            Step::Wake
        );
        // A leader waits until every replica has matched.
        let mut seen = Seen {
            last_log: Some(5),
            since: t0,
        };
        let mut l = facts(ServerState::Leader, 5, 5, 1);
        l.all_matched = false;
        assert_eq!(
            decide(&l, &mut seen, false, 1, later, &cfg, alive),
            Step::Nothing
        );
        l.all_matched = true;
        assert_eq!(
            decide(&l, &mut seen, false, 1, later, &cfg, alive),
            Step::Quiesce
        );
        // A quiesced leader never wakes itself for liveness.
        assert_eq!(
            decide(&l, &mut seen, true, 1, later, &cfg, dead),
            Step::Nothing
        );
    }
}
