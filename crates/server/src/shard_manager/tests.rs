//! `decide` against meta states built with the meta crate's own commands.

use runnel_meta::{Action, CommandResult, MoveReason, NodeLabels, NodeLoad, PlannerConfig, apply};
use runnel_types::StreamName;

use super::*;

const T: u64 = 1_000_000;

fn n(i: u64) -> NodeId {
    NodeId(i)
}

fn ok(s: &mut MetaState, cmd: Command) -> CommandResult {
    apply(s, cmd).expect("command applies")
}

/// Nodes 1..=count, Up, and a stream "s" of `shards` shards, replication 3, placed by
/// the planner.
fn placed(count: u64, shards: u32) -> MetaState {
    let mut s = MetaState::default();
    for i in 1..=count {
        let address = format!("n{i}:7100");
        let register = Command::RegisterNode {
            node: n(i),
            address,
            labels: NodeLabels::default(),
            capacity_weight: 1,
            now_ms: T,
        };
        ok(&mut s, register);
        ok(
            &mut s,
            Command::Heartbeat {
                node: n(i),
                now_ms: T,
                load: NodeLoad::default(),
                leaders: vec![],
            },
        );
    }
    let name = StreamName::new("s").expect("valid name");
    let create = Command::CreateStream {
        name,
        shard_count: shards,
        replication_factor: 3,
        retention_ms: 86_400_000,
        now_ms: T,
    };
    ok(&mut s, create);
    let actions = runnel_meta::plan(&s, T, &PlannerConfig::default());
    ok(&mut s, Command::ApplyPlacement { now_ms: T, actions });
    s
}

fn hosted(voters: &[u64], leader: bool) -> LocalShard {
    LocalShard {
        is_leader: leader,
        log_empty: false,
        voters: voters.iter().map(|i| n(*i)).collect(),
        learners: BTreeSet::new(),
    }
}

#[test]
fn a_new_shard_is_created_everywhere_and_initialized_by_its_preferred_leader_only() {
    let s = placed(3, 1);
    let shard = *s.shards.keys().next().expect("one shard");
    let leader = s.shards[&shard]
        .preferred_leader
        .expect("placed with a leader");
    for i in 1..=3 {
        let actions = decide(&s, n(i), &BTreeMap::new());
        let [
            LocalAction::Create {
                shard: got,
                initialize,
            },
        ] = actions.as_slice()
        else {
            panic!("node {i}: {actions:?}")
        };
        assert_eq!(*got, shard);
        assert_eq!(initialize.is_some(), n(i) == leader, "node {i}");
        if let Some(voters) = initialize {
            assert_eq!(voters.len(), 3);
            assert_eq!(voters[&n(1)], "n1:7100");
        }
    }
}

#[test]
fn a_hosted_shard_that_never_ran_is_initialized_after_a_crash() {
    let s = placed(3, 1);
    let shard = *s.shards.keys().next().expect("one shard");
    let leader = s.shards[&shard]
        .preferred_leader
        .expect("placed with a leader");
    let local = BTreeMap::from([(
        shard,
        LocalShard {
            log_empty: true,
            ..LocalShard::default()
        },
    )]);
    let actions = decide(&s, leader, &local);
    assert!(
        matches!(actions.as_slice(), [LocalAction::Initialize { .. }]),
        "{actions:?}"
    );
}

#[test]
fn a_running_shard_is_left_alone_and_unknown_future_shards_are_kept() {
    let s = placed(3, 1);
    let shard = *s.shards.keys().next().expect("one shard");
    let local = BTreeMap::from([
        (shard, hosted(&[1, 2, 3], false)),
        (ShardId(999), hosted(&[1], false)),
    ]);
    assert_eq!(decide(&s, n(1), &local), vec![]);
}

#[test]
fn a_deleted_shard_is_removed_and_a_deleting_one_reclaimed() {
    let mut s = placed(3, 2);
    let shards: Vec<ShardId> = s.shards.keys().copied().collect();
    ok(
        &mut s,
        Command::DeleteStream {
            name: StreamName::new("s").expect("valid"),
        },
    );
    let local = BTreeMap::from([(shards[0], hosted(&[1, 2, 3], false))]);
    let mut actions = decide(&s, n(1), &local);
    actions.sort_by_key(|a| a.shard());
    assert_eq!(
        actions,
        vec![
            LocalAction::Remove {
                shard: shards[0],
                reclaimed: true
            },
            LocalAction::ReportReclaimed { shard: shards[1] }
        ]
    );
    // Once the stream is gone, a replica still hosted is removed without a report.
    let mut gone = placed(3, 1);
    gone.shards.clear();
    gone.streams.clear();
    gone.next_shard_id = ShardId(10);
    let local = BTreeMap::from([(ShardId(3), hosted(&[1], false))]);
    assert_eq!(
        decide(&gone, n(1), &local),
        vec![LocalAction::Remove {
            shard: ShardId(3),
            reclaimed: false
        }]
    );
}

/// A 4-node state where shard's replica on `from` is being replaced by node 4.
fn moving(phase_to: MovePhase) -> (MetaState, ShardId, NodeId) {
    let mut s = placed(4, 1);
    let shard = *s.shards.keys().next().expect("one shard");
    let info = &s.shards[&shard];
    let from = info
        .voters()
        .find(|v| Some(*v) != info.preferred_leader)
        .expect("a non-leader voter");
    let add = (1..=4)
        .map(n)
        .find(|c| !info.has_replica(*c))
        .expect("a spare node");
    let start = Action::AddLearner {
        shard,
        node: add,
        replaces: Some(from),
        reason: MoveReason::Balance,
    };
    ok(
        &mut s,
        Command::ApplyPlacement {
            now_ms: T,
            actions: vec![start],
        },
    );
    if phase_to != MovePhase::AddingLearner {
        ok(
            &mut s,
            Command::ReportMove {
                shard,
                node: add,
                step: MoveStep::CaughtUp,
                now_ms: T,
            },
        );
        ok(
            &mut s,
            Command::ApplyPlacement {
                now_ms: T,
                actions: vec![Action::PromoteReplica { shard, node: add }],
            },
        );
    }
    if phase_to == MovePhase::Removing {
        ok(
            &mut s,
            Command::ReportMove {
                shard,
                node: add,
                step: MoveStep::Promoted,
                now_ms: T,
            },
        );
        ok(
            &mut s,
            Command::ApplyPlacement {
                now_ms: T,
                actions: vec![Action::RemoveReplica { shard, node: from }],
            },
        );
    }
    (s, shard, from)
}

#[test]
fn the_leader_carries_a_move_through_its_phases() {
    let (s, shard, from) = moving(MovePhase::AddingLearner);
    let info = &s.shards[&shard];
    let leader = info.preferred_leader.expect("leader");
    let add = info.pending_move.as_ref().expect("move").add;
    let voters: Vec<u64> = info.voters().map(|v| v.0).collect();
    let local = BTreeMap::from([(shard, hosted(&voters, true))]);
    let actions = decide(&s, leader, &local);
    assert!(
        matches!(&actions[..], [LocalAction::AddLearner { node, .. }] if *node == add),
        "{actions:?}"
    );
    // The new node creates its (learner) replica; followers do nothing.
    assert!(matches!(
        &decide(&s, add, &BTreeMap::new())[..],
        [LocalAction::Create {
            initialize: None,
            ..
        }]
    ));
    let follower = BTreeMap::from([(shard, hosted(&voters, false))]);
    assert_eq!(decide(&s, from, &follower), vec![]);

    let (s, _, _) = moving(MovePhase::Promoting);
    let actions = decide(&s, leader, &local);
    assert!(
        matches!(&actions[..], [LocalAction::ChangeVoters { node, step: MoveStep::Promoted, voters, .. }] if *node == add && voters.len() == 4),
        "{actions:?}"
    );

    let (s, shard, from) = moving(MovePhase::Removing);
    let four: Vec<u64> = (1..=4).collect();
    let local = BTreeMap::from([(shard, hosted(&four, true))]);
    let actions = decide(&s, leader, &local);
    assert!(
        matches!(&actions[..], [LocalAction::ChangeVoters { node, step: MoveStep::Removed, voters, .. }] if *node == from && voters.len() == 3),
        "{actions:?}"
    );
    // The replica being moved off stays until the removal is reported.
    let hosted_there = BTreeMap::from([(shard, hosted(&four, false))]);
    assert_eq!(decide(&s, from, &hosted_there), vec![]);
    let mut done = s.clone();
    ok(
        &mut done,
        Command::ReportMove {
            shard,
            node: from,
            step: MoveStep::Removed,
            now_ms: T,
        },
    );
    assert_eq!(
        decide(&done, from, &hosted_there),
        vec![LocalAction::Remove {
            shard,
            reclaimed: false
        }]
    );
}

#[test]
fn a_leader_hands_over_to_a_live_preferred_voter() {
    let s = placed(3, 1);
    let shard = *s.shards.keys().next().expect("one shard");
    let preferred = s.shards[&shard].preferred_leader.expect("leader");
    let other = s.shards[&shard]
        .voters()
        .find(|v| *v != preferred)
        .expect("another voter");
    let local = BTreeMap::from([(shard, hosted(&[1, 2, 3], true))]);
    assert_eq!(
        decide(&s, other, &local),
        vec![LocalAction::TransferLeader {
            shard,
            to: preferred
        }]
    );
    assert_eq!(decide(&s, preferred, &local), vec![]);
}

/// Chaos seed 6: the move replaces the shard's leader. In `Removing` the leader hands
/// leadership over before its replica may go; should it lead again after the removal
/// was ordered, it hands over again; the new leader finishes the move.
#[test]
fn a_leader_being_moved_off_hands_over_and_the_new_leader_finishes() {
    let (mut s, shard, from) = moving(MovePhase::Promoting);
    let add = s.shards[&shard].pending_move.as_ref().expect("move").add;
    ok(
        &mut s,
        Command::ReportMove {
            shard,
            node: add,
            step: MoveStep::Promoted,
            now_ms: T,
        },
    );
    let four: Vec<u64> = (1..=4).collect();
    let leading = BTreeMap::from([(shard, hosted(&four, true))]);
    let [LocalAction::TransferLeader { to, .. }] = decide(&s, from, &leading)[..] else {
        panic!("{:?}", decide(&s, from, &leading));
    };
    assert_ne!(to, from);
    assert_eq!(s.shards[&shard].role_of(to), Some(ReplicaRole::Voter));

    // The removal is ordered once another voter reports leadership.
    ok(
        &mut s,
        Command::Heartbeat {
            node: to,
            now_ms: T,
            load: NodeLoad::default(),
            leaders: vec![runnel_meta::LeaderReport {
                shard,
                term: runnel_types::Term(7),
            }],
        },
    );
    ok(
        &mut s,
        Command::ApplyPlacement {
            now_ms: T,
            actions: vec![Action::RemoveReplica { shard, node: from }],
        },
    );
    // The new leader takes the old one out and reports it.
    let actions = decide(&s, to, &leading);
    assert!(
        matches!(&actions[..], [LocalAction::ChangeVoters { node, step: MoveStep::Removed, voters, .. }] if *node == from && !voters.contains(&from)),
        "{actions:?}"
    );
    // Had the old leader won an election meanwhile, it would hand over again rather
    // than sit on the shard.
    let [LocalAction::TransferLeader { to: again, .. }] = decide(&s, from, &leading)[..] else {
        panic!("{:?}", decide(&s, from, &leading));
    };
    assert_ne!(again, from);
    // A follower replica being moved off just waits for the report.
    let following = BTreeMap::from([(shard, hosted(&four, false))]);
    assert_eq!(decide(&s, from, &following), vec![]);
}

/// After `CancelMove` the learner's node removes the replica it created for the move
/// (when it runs again); the leader has nothing left to do for the move.
#[test]
fn a_cancelled_learner_replica_is_removed_from_its_node() {
    let (mut s, shard, _) = moving(MovePhase::AddingLearner);
    let add = s.shards[&shard].pending_move.as_ref().expect("move").add;
    ok(
        &mut s,
        Command::ApplyPlacement {
            now_ms: T,
            actions: vec![Action::CancelMove { shard, node: add }],
        },
    );
    let hosted_as_learner = BTreeMap::from([(shard, hosted(&[], false))]);
    assert_eq!(
        decide(&s, add, &hosted_as_learner),
        vec![LocalAction::Remove {
            shard,
            reclaimed: false
        }]
    );
    let leader = s.shards[&shard].preferred_leader.expect("leader");
    let voters: Vec<u64> = s.shards[&shard].voters().map(|v| v.0).collect();
    // The leader drops the learner from the Raft membership...
    let mut with_learner = hosted(&voters, true);
    with_learner.learners.insert(add);
    let leading = BTreeMap::from([(shard, with_learner)]);
    assert_eq!(
        decide(&s, leader, &leading),
        vec![LocalAction::RemoveLearner { shard, node: add }]
    );
    // ...and a follower leaves it to the leader.
    let mut following = hosted(&voters, false);
    following.learners.insert(add);
    assert_eq!(
        decide(&s, leader, &BTreeMap::from([(shard, following)])),
        vec![]
    );
    // Once it is gone, the leader has nothing left to do for the move.
    let leading = BTreeMap::from([(shard, hosted(&voters, true))]);
    assert_eq!(decide(&s, leader, &leading), vec![]);
}

/// A learner still in the membership while a move's learner is being added (the
/// cancelled learner was not yet dropped when the next move began) goes first.
#[test]
fn a_stale_learner_goes_before_the_next_move_proceeds() {
    let (s, shard, _) = moving(MovePhase::AddingLearner);
    let add = s.shards[&shard].pending_move.as_ref().expect("move").add;
    let leader = s.shards[&shard].preferred_leader.expect("leader");
    let voters: Vec<u64> = s.shards[&shard].voters().map(|v| v.0).collect();
    let stale = (1..=9)
        .map(n)
        .find(|c| !s.shards[&shard].has_replica(*c) && *c != add)
        .expect("a node with no replica");
    let mut local = hosted(&voters, true);
    local.learners.insert(stale);
    local.learners.insert(add);
    assert_eq!(
        decide(&s, leader, &BTreeMap::from([(shard, local)])),
        vec![LocalAction::RemoveLearner { shard, node: stale }]
    );
    // The move's own learner is not stale.
    let mut local = hosted(&voters, true);
    local.learners.insert(add);
    assert!(matches!(
        &decide(&s, leader, &BTreeMap::from([(shard, local)]))[..],
        [LocalAction::AddLearner { node, .. }] if *node == add
    ));
}
