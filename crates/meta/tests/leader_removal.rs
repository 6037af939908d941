//! A move that replaces the shard's current leader (chaos seed 6, SIMULATION.md): the
//! meta state used to drop the reported leader together with the removed replica while
//! the move stayed in `Removing`, and the removed leader (the one that carries moves
//! out) no longer acted on the shard, so the shard stayed leaderless for good. Now the
//! removal waits until the leader has handed over and the new leader has reported.

use runnel_meta::{
    Action, Command, CommandResult, LeaderReport, MetaState, MovePhase, MoveReason, MoveStep,
    NodeLabels, NodeLoad, PlannerConfig, apply, plan,
};
use runnel_types::{NodeId, ShardId, StreamName, Term};

const T: u64 = 1_000_000;

fn n(i: u64) -> NodeId {
    NodeId(i)
}

fn ok(s: &mut MetaState, cmd: Command) -> CommandResult {
    let text = format!("{cmd:?}");
    apply(s, cmd).unwrap_or_else(|e| panic!("{text} failed: {e}"))
}

fn heartbeat(s: &mut MetaState, node: u64, leads: Option<(ShardId, u64)>) {
    let leaders = leads
        .map(|(shard, term)| LeaderReport {
            shard,
            term: Term(term),
        })
        .into_iter()
        .collect();
    ok(
        s,
        Command::Heartbeat {
            node: n(node),
            now_ms: T,
            load: NodeLoad::default(),
            leaders,
        },
    );
}

/// Applies actions and returns how many were rejected, with the reasons.
fn place(s: &mut MetaState, actions: Vec<Action>) -> Vec<String> {
    match ok(s, Command::ApplyPlacement { now_ms: T, actions }) {
        CommandResult::Placement { rejected, .. } => {
            rejected.into_iter().map(|r| r.reason).collect()
        }
        other => panic!("unexpected result {other:?}"),
    }
}

fn report(s: &mut MetaState, shard: ShardId, node: u64, step: MoveStep) {
    ok(
        s,
        Command::ReportMove {
            shard,
            node: n(node),
            step,
            now_ms: T,
        },
    );
}

/// Five Up nodes; one shard on {1, 2, 3} led by node 2 (term 1), with a balance move
/// under way that replaces node 2 by node 5, already in `Removing`.
fn removing_the_leader() -> (MetaState, ShardId) {
    let mut s = MetaState::default();
    for i in 1..=5 {
        ok(
            &mut s,
            Command::RegisterNode {
                node: n(i),
                address: format!("10.0.1.{i}:7100"),
                labels: NodeLabels::default(),
                capacity_weight: 100,
                now_ms: T,
            },
        );
        heartbeat(&mut s, i, None);
    }
    let created = ok(
        &mut s,
        Command::CreateStream {
            name: StreamName::new("s").expect("valid name"),
            shard_count: 1,
            replication_factor: 3,
            retention_ms: 86_400_000,
            now_ms: T,
        },
    );
    let CommandResult::StreamCreated { shards } = created else {
        panic!("unexpected result {created:?}");
    };
    let shard = shards[0];
    let initial = Action::InitialPlacement {
        shard,
        voters: vec![n(1), n(2), n(3)],
        leader: n(2),
    };
    assert!(place(&mut s, vec![initial]).is_empty());
    heartbeat(&mut s, 2, Some((shard, 1)));
    let add = Action::AddLearner {
        shard,
        node: n(5),
        replaces: Some(n(2)),
        reason: MoveReason::Balance,
    };
    assert!(place(&mut s, vec![add]).is_empty());
    report(&mut s, shard, 5, MoveStep::CaughtUp);
    assert!(place(&mut s, vec![Action::PromoteReplica { shard, node: n(5) }]).is_empty());
    report(&mut s, shard, 5, MoveStep::Promoted);
    let info = &s.shards[&shard];
    assert_eq!(
        info.pending_move.as_ref().map(|m| m.phase),
        Some(MovePhase::Removing)
    );
    assert_eq!(info.leader.map(|l| l.node), Some(n(2)));
    (s, shard)
}

#[test]
fn the_leaders_replica_is_not_removed_while_it_leads() {
    let (mut s, shard) = removing_the_leader();
    let remove = Action::RemoveReplica { shard, node: n(2) };
    let rejected = place(&mut s, vec![remove.clone()]);
    assert_eq!(
        rejected.len(),
        1,
        "removing the leader's replica was accepted"
    );
    assert!(rejected[0].contains("leads the shard"), "{rejected:?}");
    assert!(s.shards[&shard].has_replica(n(2)));
    assert_eq!(s.shards[&shard].leader.map(|l| l.node), Some(n(2)));

    let actions = plan(&s, T, &PlannerConfig::default());
    assert!(
        !actions.contains(&remove),
        "the planner removes the leader's replica: {actions:?}"
    );
    assert!(place(&mut s, actions).is_empty());
    let preferred = s.shards[&shard]
        .preferred_leader
        .expect("the planner names a leader to hand over to");
    assert_ne!(
        preferred,
        n(2),
        "the preferred leader is the replica being removed"
    );
}

#[test]
fn the_move_finishes_once_the_new_leader_reports() {
    let (mut s, shard) = removing_the_leader();
    let actions = plan(&s, T, &PlannerConfig::default());
    assert!(place(&mut s, actions).is_empty());
    let to = s.shards[&shard]
        .preferred_leader
        .expect("a preferred leader");
    // The old leader hands over; the new one reports a newer term.
    heartbeat(&mut s, to.0, Some((shard, 2)));
    let actions = plan(&s, T, &PlannerConfig::default());
    let remove = Action::RemoveReplica { shard, node: n(2) };
    assert!(actions.contains(&remove), "no removal planned: {actions:?}");
    assert!(place(&mut s, actions).is_empty());
    assert_eq!(
        s.shards[&shard].leader.map(|l| l.node),
        Some(to),
        "the shard lost its reported leader with the removal"
    );
    // A late report of the removed node's old leadership changes nothing.
    heartbeat(&mut s, 2, Some((shard, 1)));
    assert_eq!(s.shards[&shard].leader.map(|l| l.node), Some(to));
    report(&mut s, shard, 2, MoveStep::Removed);
    let info = &s.shards[&shard];
    assert!(info.pending_move.is_none());
    assert_eq!(info.voters().collect::<Vec<_>>(), vec![n(1), n(3), n(5)]);
    assert_eq!(info.leader.map(|l| l.node), Some(to));
}
