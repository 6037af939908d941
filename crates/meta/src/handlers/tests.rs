//! Unit tests of `apply`: the happy paths of each operation, and every error path,
//! each checked to leave the state unchanged.

use std::collections::BTreeMap;

use runnel_types::limits::{REPLICATION_FACTOR_MAX, RETENTION_MS_MAX, SHARDS_PER_STREAM_MAX};
use runnel_types::{NodeId, SeqNo, ShardId, StreamName, Term};

use crate::action::Action;
use crate::command::{Command, CommandResult, LeaderReport, MoveStep, apply};
use crate::error::MetaError;
use crate::limits::{
    CAPACITY_WEIGHT_MAX, NODE_LABELS_MAX, PLACEMENT_ACTIONS_MAX, SESSION_TIMEOUT_MS_MIN,
};
use crate::names::{GroupName, MemberId};
use crate::state::{
    Checkpoint, MetaState, MovePhase, MoveReason, NodeLabels, NodeLoad, NodeStatus, ReplicaRole,
    ShardState, StreamStatus,
};

const T: u64 = 1_000_000;

fn n(i: u64) -> NodeId {
    NodeId(i)
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn ok(state: &mut MetaState, cmd: Command) -> CommandResult {
    let text = format!("{cmd:?}");
    apply(state, cmd).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Applies a command that must fail, checks the state did not change, returns the error.
fn err(state: &mut MetaState, cmd: Command) -> MetaError {
    let before = state.clone();
    let e = apply(state, cmd).expect_err("the command should fail");
    assert_eq!(*state, before, "a failed command changed the state ({e})");
    assert!(!e.to_string().is_empty());
    e
}

fn register(i: u64) -> Command {
    Command::RegisterNode {
        node: n(i),
        address: format!("10.0.0.{i}:7000"),
        labels: NodeLabels::default(),
        capacity_weight: 100,
        now_ms: T,
    }
}

fn heartbeat(i: u64, leaders: Vec<LeaderReport>) -> Command {
    Command::Heartbeat {
        node: n(i),
        now_ms: T,
        load: NodeLoad::default(),
        leaders,
    }
}

/// A state with nodes 1..=count Up.
fn cluster(count: u64) -> MetaState {
    let mut s = MetaState::default();
    s.settings.retention_ms_min = 1;
    for i in 1..=count {
        ok(&mut s, register(i));
        ok(&mut s, heartbeat(i, vec![]));
    }
    s
}

fn create(s: &mut MetaState, stream: &str, shards: u32, rf: u32) -> Vec<ShardId> {
    let cmd = Command::CreateStream {
        name: name(stream),
        shard_count: shards,
        replication_factor: rf,
        retention_ms: 60_000,
        now_ms: T,
    };
    match ok(s, cmd) {
        CommandResult::StreamCreated { shards } => shards,
        other => panic!("{other:?}"),
    }
}

fn place(s: &mut MetaState, actions: Vec<Action>) -> (u32, usize) {
    match ok(s, Command::ApplyPlacement { now_ms: T, actions }) {
        CommandResult::Placement { applied, rejected } => (applied, rejected.len()),
        other => panic!("{other:?}"),
    }
}

fn rejected(s: &mut MetaState, action: Action) -> String {
    let before = s.clone();
    match ok(
        s,
        Command::ApplyPlacement {
            now_ms: T,
            actions: vec![action],
        },
    ) {
        CommandResult::Placement {
            applied: 0,
            rejected,
        } if rejected.len() == 1 => {
            assert_eq!(*s, before, "a rejected action changed the state");
            rejected[0].reason.clone()
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn invalid_field(e: MetaError) -> &'static str {
    match e {
        MetaError::InvalidArgument { field, .. } => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn precondition(e: MetaError) -> String {
    match e {
        MetaError::FailedPrecondition { reason, .. } => reason,
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
}

#[test]
fn node_lifecycle() {
    let mut s = cluster(1);
    assert_eq!(s.nodes[&n(1)].status, NodeStatus::Up);
    ok(&mut s, register(2));
    assert_eq!(s.nodes[&n(2)].status, NodeStatus::Joining);
    ok(
        &mut s,
        Command::MarkDown {
            node: n(1),
            now_ms: T + 5,
        },
    );
    assert_eq!(s.nodes[&n(1)].down_since_ms, Some(T + 5));
    ok(
        &mut s,
        Command::MarkDown {
            node: n(1),
            now_ms: T + 9,
        },
    );
    assert_eq!(
        s.nodes[&n(1)].down_since_ms,
        Some(T + 5),
        "marking down again keeps the first time"
    );
    ok(&mut s, heartbeat(1, vec![]));
    assert_eq!(s.nodes[&n(1)].status, NodeStatus::Up);
    ok(&mut s, Command::DrainNode { node: n(1) });
    ok(
        &mut s,
        Command::MarkDown {
            node: n(1),
            now_ms: T,
        },
    );
    ok(&mut s, heartbeat(1, vec![]));
    assert_eq!(
        s.nodes[&n(1)].status,
        NodeStatus::Draining,
        "a drain survives a restart"
    );
    ok(&mut s, Command::RemoveNode { node: n(2) });
    ok(&mut s, Command::RemoveNode { node: n(2) });
    assert_eq!(s.nodes[&n(2)].status, NodeStatus::Removed);
}

#[test]
fn node_errors() {
    let mut s = cluster(1);
    let mut bad = register(0);
    assert_eq!(invalid_field(err(&mut s, bad)), "node id");
    for address in [
        "nohost",
        ":7000",
        "host:port",
        "host:99999",
        "a b:1",
        &format!("{}:1", "h".repeat(300)),
    ] {
        bad = register(3);
        if let Command::RegisterNode { address: a, .. } = &mut bad {
            *a = address.to_string();
        }
        assert_eq!(invalid_field(err(&mut s, bad)), "address", "{address}");
    }
    let many: BTreeMap<String, String> = (0..=NODE_LABELS_MAX)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    for labels in [
        NodeLabels {
            zone: None,
            other: many,
        },
        NodeLabels {
            zone: Some(String::new()),
            other: BTreeMap::new(),
        },
        NodeLabels {
            zone: Some("z".repeat(64)),
            other: BTreeMap::new(),
        },
    ] {
        bad = register(3);
        if let Command::RegisterNode { labels: l, .. } = &mut bad {
            *l = labels;
        }
        let field = invalid_field(err(&mut s, bad));
        assert!(field == "labels" || field == "label");
    }
    for weight in [0, CAPACITY_WEIGHT_MAX + 1] {
        bad = register(3);
        if let Command::RegisterNode {
            capacity_weight, ..
        } = &mut bad
        {
            *capacity_weight = weight;
        }
        assert_eq!(invalid_field(err(&mut s, bad)), "capacity_weight");
    }
    assert!(matches!(
        err(&mut s, heartbeat(9, vec![])),
        MetaError::NotFound { kind: "node", .. }
    ));
    assert!(matches!(
        err(
            &mut s,
            Command::MarkDown {
                node: n(9),
                now_ms: T
            }
        ),
        MetaError::NotFound { .. }
    ));
    assert!(matches!(
        err(&mut s, Command::DrainNode { node: n(9) }),
        MetaError::NotFound { .. }
    ));
    assert!(matches!(
        err(&mut s, Command::RemoveNode { node: n(9) }),
        MetaError::NotFound { .. }
    ));
    // A node with replicas must be drained (or down) before it is removed.
    let shards = create(&mut s, "s", 1, 1);
    place(
        &mut s,
        vec![Action::InitialPlacement {
            shard: shards[0],
            voters: vec![n(1)],
            leader: n(1),
        }],
    );
    assert!(
        precondition(err(&mut s, Command::RemoveNode { node: n(1) })).contains("drain it first")
    );
    ok(
        &mut s,
        Command::MarkDown {
            node: n(1),
            now_ms: T,
        },
    );
    ok(&mut s, Command::RemoveNode { node: n(1) });
    // A removed node stays removed.
    assert_eq!(
        err(&mut s, register(1)),
        MetaError::NodeRemoved { node: n(1) }
    );
    assert_eq!(
        err(&mut s, heartbeat(1, vec![])),
        MetaError::NodeRemoved { node: n(1) }
    );
    assert_eq!(
        err(
            &mut s,
            Command::MarkDown {
                node: n(1),
                now_ms: T
            }
        ),
        MetaError::NodeRemoved { node: n(1) }
    );
    assert_eq!(
        err(&mut s, Command::DrainNode { node: n(1) }),
        MetaError::NodeRemoved { node: n(1) }
    );
}

#[test]
fn heartbeats_record_leaders_by_term() {
    let mut s = cluster(3);
    let shard = create(&mut s, "s", 1, 3)[0];
    place(
        &mut s,
        vec![Action::InitialPlacement {
            shard,
            voters: vec![n(1), n(2), n(3)],
            leader: n(1),
        }],
    );
    ok(
        &mut s,
        heartbeat(
            2,
            vec![LeaderReport {
                shard,
                term: Term(5),
            }],
        ),
    );
    ok(
        &mut s,
        heartbeat(
            1,
            vec![LeaderReport {
                shard,
                term: Term(4),
            }],
        ),
    );
    assert_eq!(
        s.shards[&shard].leader.map(|l| l.node),
        Some(n(2)),
        "an older term does not win"
    );
    ok(
        &mut s,
        heartbeat(
            1,
            vec![
                LeaderReport {
                    shard,
                    term: Term(6),
                },
                LeaderReport {
                    shard: ShardId(99),
                    term: Term(1),
                },
            ],
        ),
    );
    assert_eq!(
        s.shards[&shard].leader.map(|l| (l.node, l.term)),
        Some((n(1), Term(6)))
    );
}

#[test]
fn stream_lifecycle() {
    let mut s = cluster(3);
    let shards = create(&mut s, "orders", 4, 3);
    assert_eq!(shards, vec![ShardId(1), ShardId(2), ShardId(3), ShardId(4)]);
    let ranges: Vec<_> = shards.iter().map(|id| s.shards[id].hash_range).collect();
    assert!(runnel_types::hash::check_tiling(&ranges).is_ok());
    assert_eq!(s.streams[&name("orders")].status, StreamStatus::Creating);
    let precondition_text = precondition(err(
        &mut s,
        Command::MarkStreamActive {
            name: name("orders"),
        },
    ));
    assert!(
        precondition_text.contains("no leader"),
        "{precondition_text}"
    );
    for id in &shards {
        place(
            &mut s,
            vec![Action::InitialPlacement {
                shard: *id,
                voters: vec![n(1), n(2), n(3)],
                leader: n(1),
            }],
        );
    }
    let leaders = shards
        .iter()
        .map(|id| LeaderReport {
            shard: *id,
            term: Term(1),
        })
        .collect();
    ok(&mut s, heartbeat(1, leaders));
    ok(
        &mut s,
        Command::MarkStreamActive {
            name: name("orders"),
        },
    );
    ok(
        &mut s,
        Command::MarkStreamActive {
            name: name("orders"),
        },
    );
    assert_eq!(s.streams[&name("orders")].status, StreamStatus::Active);
    ok(
        &mut s,
        Command::UpdateRetention {
            name: name("orders"),
            retention_ms: 7_200_000,
        },
    );
    assert_eq!(s.streams[&name("orders")].retention_ms, 7_200_000);
    ok(
        &mut s,
        Command::DeleteStream {
            name: name("orders"),
        },
    );
    ok(
        &mut s,
        Command::DeleteStream {
            name: name("orders"),
        },
    );
    let e = err(
        &mut s,
        Command::CreateStream {
            name: name("orders"),
            shard_count: 1,
            replication_factor: 1,
            retention_ms: 1,
            now_ms: T,
        },
    );
    assert!(e.to_string().contains("being deleted"), "{e}");
    for id in &shards {
        for node in 1..=3 {
            ok(
                &mut s,
                Command::ShardReclaimed {
                    shard: *id,
                    node: n(node),
                },
            );
        }
    }
    assert!(s.streams.is_empty() && s.shards.is_empty());
    // The name is free again; shard ids are never reused.
    assert_eq!(create(&mut s, "orders", 1, 1), vec![ShardId(5)]);
}

#[test]
fn stream_errors() {
    let mut s = cluster(2);
    create(&mut s, "s", 1, 1);
    let c = |shard_count, replication_factor, retention_ms| Command::CreateStream {
        name: name("t"),
        shard_count,
        replication_factor,
        retention_ms,
        now_ms: T,
    };
    let e = err(
        &mut s,
        Command::CreateStream {
            name: name("s"),
            shard_count: 1,
            replication_factor: 1,
            retention_ms: 1,
            now_ms: T,
        },
    );
    assert!(matches!(e, MetaError::AlreadyExists { kind: "stream", .. }));
    assert_eq!(invalid_field(err(&mut s, c(0, 1, 1))), "shard_count");
    assert_eq!(
        invalid_field(err(&mut s, c(SHARDS_PER_STREAM_MAX + 1, 1, 1))),
        "shard_count"
    );
    assert_eq!(invalid_field(err(&mut s, c(1, 0, 1))), "replication_factor");
    assert_eq!(
        invalid_field(err(&mut s, c(1, REPLICATION_FACTOR_MAX + 1, 1))),
        "replication_factor"
    );
    let e = err(&mut s, c(1, 3, 1));
    assert!(e.to_string().contains("2 are"), "{e}");
    assert_eq!(invalid_field(err(&mut s, c(1, 1, 0))), "retention_ms");
    assert_eq!(
        invalid_field(err(&mut s, c(1, 1, RETENTION_MS_MAX + 1))),
        "retention_ms"
    );
    s.settings.retention_ms_min = 10;
    assert_eq!(invalid_field(err(&mut s, c(1, 1, 9))), "retention_ms");
    let unknown = name("nope");
    for cmd in [
        Command::DeleteStream {
            name: unknown.clone(),
        },
        Command::UpdateRetention {
            name: unknown.clone(),
            retention_ms: 100,
        },
        Command::MarkStreamActive {
            name: unknown.clone(),
        },
    ] {
        assert!(matches!(
            err(&mut s, cmd),
            MetaError::NotFound { kind: "stream", .. }
        ));
    }
    assert_eq!(
        invalid_field(err(
            &mut s,
            Command::UpdateRetention {
                name: name("s"),
                retention_ms: 1
            }
        )),
        "retention_ms"
    );
    assert!(matches!(
        err(
            &mut s,
            Command::ShardReclaimed {
                shard: ShardId(77),
                node: n(1)
            }
        ),
        MetaError::NotFound { .. }
    ));
    precondition(err(
        &mut s,
        Command::ShardReclaimed {
            shard: ShardId(1),
            node: n(1),
        },
    ));
    place(
        &mut s,
        vec![Action::InitialPlacement {
            shard: ShardId(1),
            voters: vec![n(1)],
            leader: n(1),
        }],
    );
    ok(&mut s, Command::DeleteStream { name: name("s") });
    precondition(err(
        &mut s,
        Command::UpdateRetention {
            name: name("s"),
            retention_ms: 100,
        },
    ));
    precondition(err(&mut s, Command::MarkStreamActive { name: name("s") }));
    let reason = rejected(
        &mut s,
        Action::TransferLeader {
            shard: ShardId(1),
            from: None,
            to: n(1),
        },
    );
    assert!(reason.contains("being deleted"), "{reason}");
}

/// Drives one full move of shard 1 from node 1 to node 4.
#[test]
fn move_lifecycle_and_report_errors() {
    let mut s = cluster(4);
    let shard = create(&mut s, "s", 1, 3)[0];
    place(
        &mut s,
        vec![Action::InitialPlacement {
            shard,
            voters: vec![n(1), n(2), n(3)],
            leader: n(1),
        }],
    );
    let report = |node, step| Command::ReportMove {
        shard,
        node: n(node),
        step,
        now_ms: T,
    };
    assert!(matches!(
        err(&mut s, report(4, MoveStep::CaughtUp)),
        MetaError::StaleReport { .. }
    ));
    assert!(matches!(
        err(
            &mut s,
            Command::ReportMove {
                shard: ShardId(9),
                node: n(4),
                step: MoveStep::CaughtUp,
                now_ms: T
            }
        ),
        MetaError::NotFound { .. }
    ));
    let add = Action::AddLearner {
        shard,
        node: n(4),
        replaces: Some(n(1)),
        reason: MoveReason::Balance,
    };
    assert_eq!(place(&mut s, vec![add]), (1, 0));
    assert_eq!(s.shards[&shard].role_of(n(4)), Some(ReplicaRole::Learner));
    assert!(matches!(
        err(&mut s, report(2, MoveStep::CaughtUp)),
        MetaError::StaleReport { .. }
    ));
    assert!(matches!(
        err(&mut s, report(4, MoveStep::Promoted)),
        MetaError::StaleReport { .. }
    ));
    assert!(matches!(
        err(&mut s, report(1, MoveStep::Removed)),
        MetaError::StaleReport { .. }
    ));
    assert!(rejected(&mut s, Action::PromoteReplica { shard, node: n(4) }).contains("caught up"));
    ok(&mut s, report(4, MoveStep::CaughtUp));
    ok(&mut s, report(4, MoveStep::CaughtUp));
    assert!(
        matches!(
            err(&mut s, report(4, MoveStep::Promoted)),
            MetaError::StaleReport { .. }
        ),
        "not ordered yet"
    );
    assert!(rejected(&mut s, Action::RemoveReplica { shard, node: n(1) }).contains("promoted"));
    place(&mut s, vec![Action::PromoteReplica { shard, node: n(4) }]);
    assert_eq!(s.shards[&shard].voters().count(), 4);
    assert!(
        rejected(&mut s, Action::CancelMove { shard, node: n(4) })
            .contains("promoted replica stays")
    );
    ok(&mut s, report(4, MoveStep::Promoted));
    ok(&mut s, report(4, MoveStep::Promoted));
    assert_eq!(
        s.shards[&shard].pending_move.as_ref().map(|m| m.phase),
        Some(MovePhase::Removing)
    );
    assert!(matches!(
        err(&mut s, report(2, MoveStep::Removed)),
        MetaError::StaleReport { .. }
    ));
    assert!(
        matches!(
            err(&mut s, report(1, MoveStep::Removed)),
            MetaError::StaleReport { .. }
        ),
        "not ordered yet"
    );
    place(&mut s, vec![Action::RemoveReplica { shard, node: n(1) }]);
    assert_eq!(
        s.shards[&shard].preferred_leader, None,
        "the removed preferred leader is forgotten"
    );
    ok(&mut s, report(1, MoveStep::Removed));
    assert!(s.shards[&shard].pending_move.is_none());
    assert_eq!(
        s.shards[&shard].voters().collect::<Vec<_>>(),
        vec![n(2), n(3), n(4)]
    );
}

#[test]
fn placement_rejections() {
    let mut s = cluster(4);
    ok(&mut s, register(5));
    let shard = create(&mut s, "s", 1, 3)[0];
    let ip = |voters: Vec<u64>, leader| Action::InitialPlacement {
        shard,
        voters: voters.into_iter().map(n).collect(),
        leader: n(leader),
    };
    assert!(rejected(&mut s, ip(vec![], 1)).contains("voters"));
    assert!(rejected(&mut s, ip(vec![1, 2, 3, 4], 1)).contains("voters"));
    assert!(rejected(&mut s, ip(vec![1, 1], 1)).contains("at most once"));
    assert!(rejected(&mut s, ip(vec![1, 2], 3)).contains("leader"));
    assert!(rejected(&mut s, ip(vec![1, 5], 1)).contains("Joining"));
    assert!(rejected(&mut s, ip(vec![1, 9], 1)).contains("unknown"));
    assert!(matches!(
        err(
            &mut s,
            Command::ApplyPlacement {
                now_ms: T,
                actions: vec![ip(vec![1], 1); PLACEMENT_ACTIONS_MAX + 1]
            }
        ),
        MetaError::InvalidArgument {
            field: "actions",
            ..
        }
    ));
    assert_eq!(
        place(&mut s, vec![ip(vec![1, 2, 3], 1), ip(vec![1, 2, 3], 1)]),
        (1, 1),
        "each action on its own"
    );
    let add = |node, replaces: Option<u64>| Action::AddLearner {
        shard,
        node: n(node),
        replaces: replaces.map(n),
        reason: MoveReason::Balance,
    };
    assert!(rejected(&mut s, add(1, None)).contains("already"));
    assert!(rejected(&mut s, add(4, Some(5))).contains("not a voter"));
    assert!(rejected(&mut s, add(5, None)).contains("not Up"));
    assert!(
        rejected(
            &mut s,
            Action::AddLearner {
                shard: ShardId(42),
                node: n(4),
                replaces: None,
                reason: MoveReason::Repair
            }
        )
        .contains("not found")
    );
    place(&mut s, vec![add(4, Some(1))]);
    assert!(rejected(&mut s, add(4, None)).contains("in progress"));
    assert!(rejected(&mut s, Action::CancelMove { shard, node: n(2) }).contains("no move adds"));
    place(&mut s, vec![Action::CancelMove { shard, node: n(4) }]);
    assert!(s.shards[&shard].pending_move.is_none() && !s.shards[&shard].has_replica(n(4)));
    let tl = |from: Option<u64>, to| Action::TransferLeader {
        shard,
        from: from.map(n),
        to: n(to),
    };
    assert!(rejected(&mut s, tl(Some(2), 3)).contains("preferred leader is"));
    assert!(rejected(&mut s, tl(Some(1), 4)).contains("not a voter"));
    ok(
        &mut s,
        Command::MarkDown {
            node: n(3),
            now_ms: T,
        },
    );
    assert!(rejected(&mut s, tl(Some(1), 3)).contains("not Up"));
    place(&mut s, vec![tl(Some(1), 2)]);
    assert_eq!(s.shards[&shard].preferred_leader, Some(n(2)));
    assert!(rejected(&mut s, Action::CompleteDrain { node: n(1) }).contains("not draining"));
    ok(&mut s, Command::DrainNode { node: n(1) });
    assert!(rejected(&mut s, Action::CompleteDrain { node: n(1) }).contains("still holds"));
    assert!(rejected(&mut s, Action::ActivateStream { stream: name("s") }).contains("no leader"));
    assert!(rejected(&mut s, Action::MarkNodeDown { node: n(9) }).contains("not found"));
}

#[test]
fn removal_needs_a_live_majority() {
    let mut s = cluster(4);
    let shard = create(&mut s, "s", 1, 3)[0];
    place(
        &mut s,
        vec![Action::InitialPlacement {
            shard,
            voters: vec![n(1), n(2), n(3)],
            leader: n(1),
        }],
    );
    place(
        &mut s,
        vec![Action::AddLearner {
            shard,
            node: n(4),
            replaces: Some(n(1)),
            reason: MoveReason::Drain,
        }],
    );
    ok(
        &mut s,
        Command::ReportMove {
            shard,
            node: n(4),
            step: MoveStep::CaughtUp,
            now_ms: T,
        },
    );
    place(&mut s, vec![Action::PromoteReplica { shard, node: n(4) }]);
    ok(
        &mut s,
        Command::ReportMove {
            shard,
            node: n(4),
            step: MoveStep::Promoted,
            now_ms: T,
        },
    );
    ok(
        &mut s,
        Command::MarkDown {
            node: n(2),
            now_ms: T,
        },
    );
    ok(
        &mut s,
        Command::MarkDown {
            node: n(3),
            now_ms: T,
        },
    );
    assert!(
        rejected(&mut s, Action::RemoveReplica { shard, node: n(1) }).contains("not a majority")
    );
}

fn group_setup() -> (MetaState, GroupName, StreamName, MemberId) {
    let mut s = cluster(1);
    let shards = create(&mut s, "s", 2, 1);
    for id in shards {
        place(
            &mut s,
            vec![Action::InitialPlacement {
                shard: id,
                voters: vec![n(1)],
                leader: n(1),
            }],
        );
    }
    (
        s,
        GroupName::new("app").unwrap(),
        name("s"),
        MemberId::new("m1").unwrap(),
    )
}

#[test]
fn consumer_group_flow_and_errors() {
    let (mut s, g, st, m) = group_setup();
    let join = |member: &MemberId, timeout, now| Command::JoinGroup {
        group: g.clone(),
        stream: st.clone(),
        member: member.clone(),
        session_timeout_ms: timeout,
        now_ms: now,
    };
    assert_eq!(
        invalid_field(err(&mut s, join(&m, SESSION_TIMEOUT_MS_MIN - 1, T))),
        "session_timeout_ms"
    );
    let leases = match ok(&mut s, join(&m, 10_000, T)) {
        CommandResult::Leases { leases } => leases,
        other => panic!("{other:?}"),
    };
    assert_eq!(leases.len(), 2);
    let m2 = MemberId::new("m2").unwrap();
    ok(&mut s, join(&m2, 10_000, T + 1));
    let held = |s: &MetaState, m: &MemberId| {
        s.groups[&g][&st]
            .leases
            .values()
            .filter(|l| l.member.as_ref() == Some(m))
            .count()
    };
    assert_eq!((held(&s, &m), held(&s, &m2)), (1, 1));
    let (shard, lease) = s.groups[&g][&st]
        .leases
        .iter()
        .find(|(_, l)| l.member.as_ref() == Some(&m))
        .map(|(k, v)| (*k, v.clone()))
        .unwrap();
    let cp = |member: &MemberId, counter, position, now| Command::Checkpoint {
        group: g.clone(),
        stream: st.clone(),
        member: member.clone(),
        shard,
        lease_counter: counter,
        position,
        now_ms: now,
    };
    ok(
        &mut s,
        cp(&m, lease.counter, Checkpoint::At(SeqNo(100)), T + 2),
    );
    assert!(matches!(
        err(
            &mut s,
            cp(&m, lease.counter + 1, Checkpoint::At(SeqNo(200)), T + 2)
        ),
        MetaError::LeaseNotHeld { .. }
    ));
    assert!(matches!(
        err(
            &mut s,
            cp(&m2, lease.counter, Checkpoint::At(SeqNo(200)), T + 2)
        ),
        MetaError::LeaseNotHeld { .. }
    ));
    assert!(matches!(
        err(
            &mut s,
            cp(&m, lease.counter, Checkpoint::At(SeqNo(50)), T + 2)
        ),
        MetaError::CheckpointRegression { .. }
    ));
    assert_eq!(
        invalid_field(err(
            &mut s,
            cp(&m, lease.counter, Checkpoint::ShardEnd, T + 2)
        )),
        "checkpoint"
    );
    // m2 heartbeats; m falls silent and expires: m2 takes over m's lease with a new counter.
    let hb = |member: &MemberId, now| Command::GroupHeartbeat {
        group: g.clone(),
        stream: st.clone(),
        member: member.clone(),
        now_ms: now,
    };
    ok(&mut s, hb(&m2, T + 9_000));
    assert!(matches!(
        err(&mut s, hb(&m, T + 10_000)),
        MetaError::NotFound {
            kind: "consumer group member",
            ..
        }
    ));
    ok(&mut s, hb(&m2, T + 12_000));
    let taken = &s.groups[&g][&st].leases[&shard];
    assert_eq!(taken.member.as_ref(), Some(&m2));
    assert_eq!(taken.counter, lease.counter + 1);
    assert!(!s.groups[&g][&st].members.contains_key(&m));
    let leave = |member: &MemberId| Command::LeaveGroup {
        group: g.clone(),
        stream: st.clone(),
        member: member.clone(),
        now_ms: T + 12_000,
    };
    assert!(matches!(err(&mut s, leave(&m)), MetaError::NotFound { .. }));
    ok(&mut s, leave(&m2));
    assert!(
        s.groups[&g][&st]
            .leases
            .values()
            .all(|l| l.member.is_none())
    );
    assert_eq!(
        s.groups[&g][&st].checkpoints[&shard],
        Checkpoint::At(SeqNo(100)),
        "checkpoints outlive members"
    );
    let other = GroupName::new("other").unwrap();
    let e = err(
        &mut s,
        Command::GroupHeartbeat {
            group: other,
            stream: st.clone(),
            member: m2.clone(),
            now_ms: T,
        },
    );
    assert!(matches!(
        e,
        MetaError::NotFound {
            kind: "consumer group",
            ..
        }
    ));
    let e = err(
        &mut s,
        Command::JoinGroup {
            group: g.clone(),
            stream: name("nope"),
            member: m2.clone(),
            session_timeout_ms: 10_000,
            now_ms: T,
        },
    );
    assert!(matches!(e, MetaError::NotFound { kind: "stream", .. }));
    ok(&mut s, Command::DeleteStream { name: st.clone() });
    assert!(s.groups.is_empty(), "a deleted stream's groups go with it");
    precondition(err(&mut s, join(&m, 10_000, T)));
}

#[test]
fn shard_end_needs_a_closed_shard() {
    let (mut s, g, st, m) = group_setup();
    ok(
        &mut s,
        Command::JoinGroup {
            group: g.clone(),
            stream: st.clone(),
            member: m.clone(),
            session_timeout_ms: 10_000,
            now_ms: T,
        },
    );
    let shard = ShardId(1);
    s.shards.get_mut(&shard).unwrap().state = ShardState::Closed;
    let counter = s.groups[&g][&st].leases[&shard].counter;
    ok(
        &mut s,
        Command::Checkpoint {
            group: g.clone(),
            stream: st.clone(),
            member: m.clone(),
            shard,
            lease_counter: counter,
            position: Checkpoint::ShardEnd,
            now_ms: T,
        },
    );
    assert!(
        s.groups[&g][&st].leases[&shard].member.is_none(),
        "a finished shard's lease is released"
    );
}

#[test]
fn init_cluster_takes_effect_once() {
    let mut s = MetaState::default();
    let first = Command::InitCluster {
        cluster_id: "c1".into(),
        iterator_key: [1; 16],
        retention_ms_min: Some(5_000),
    };
    let second = Command::InitCluster {
        cluster_id: "c2".into(),
        iterator_key: [2; 16],
        retention_ms_min: Some(60_000),
    };
    assert_eq!(apply(&mut s, first), Ok(CommandResult::Done));
    assert_eq!(apply(&mut s, second), Ok(CommandResult::Done));
    let id = s.identity.as_ref().expect("set by the first command");
    assert_eq!((id.cluster_id.as_str(), id.iterator_key), ("c1", [1; 16]));
    assert_eq!(
        s.settings.retention_ms_min, 5_000,
        "the first command's floor stays"
    );
    let empty = Command::InitCluster {
        cluster_id: String::new(),
        iterator_key: [3; 16],
        retention_ms_min: None,
    };
    assert!(apply(&mut s, empty).is_err());
}

#[test]
fn init_cluster_checks_the_retention_floor_and_keeps_the_default_without_one() {
    let mut s = MetaState::default();
    let init = |min| Command::InitCluster {
        cluster_id: "c".into(),
        iterator_key: [0; 16],
        retention_ms_min: min,
    };
    assert!(apply(&mut s, init(Some(999))).is_err());
    assert!(apply(&mut s, init(Some(3_600_001))).is_err());
    assert!(s.identity.is_none(), "a refused command sets nothing");
    assert_eq!(apply(&mut s, init(None)), Ok(CommandResult::Done));
    assert_eq!(s.settings.retention_ms_min, 3_600_000);
    // A command from before the field existed still decodes.
    let old: Command = serde_json::from_str(
        r#"{"InitCluster":{"cluster_id":"c","iterator_key":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}}"#,
    )
    .expect("decodes");
    assert_eq!(old, init(None));
}
