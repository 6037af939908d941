//! New shards are placed in waves: at most `new_shards_in_flight_max` placed and not
//! yet led at once, the next ones as leaders are reported; shards stuck on a down node
//! do not hold the wave up.

use runnel_meta::{
    Action, Command, CommandResult, LeaderReport, MetaState, NodeLabels, NodeLoad, PlannerConfig,
    apply, plan,
};
use runnel_types::{NodeId, ShardId, StreamName, Term};

const T: u64 = 1_000_000;

fn ok(state: &mut MetaState, cmd: Command) -> CommandResult {
    let text = format!("{cmd:?}");
    apply(state, cmd).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn heartbeat(node: u64, now_ms: u64, leaders: Vec<LeaderReport>) -> Command {
    Command::Heartbeat {
        node: NodeId(node),
        now_ms,
        load: NodeLoad::default(),
        leaders,
    }
}

fn cluster(nodes: u64) -> MetaState {
    let mut s = MetaState::default();
    for i in 1..=nodes {
        let register = Command::RegisterNode {
            node: NodeId(i),
            address: format!("10.0.0.{i}:7000"),
            labels: NodeLabels::default(),
            capacity_weight: 100,
            now_ms: T,
        };
        ok(&mut s, register);
        ok(&mut s, heartbeat(i, T, vec![]));
    }
    s
}

fn create(s: &mut MetaState, stream: &str, shards: u32, rf: u32) {
    let cmd = Command::CreateStream {
        name: StreamName::new(stream).expect("valid name"),
        shard_count: shards,
        replication_factor: rf,
        retention_ms: 86_400_000,
        now_ms: T,
    };
    ok(s, cmd);
}

fn placed(actions: &[Action]) -> Vec<ShardId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::InitialPlacement { shard, .. } => Some(*shard),
            _ => None,
        })
        .collect()
}

/// Plans and applies at `now`; returns the shards placed.
fn step(s: &mut MetaState, now: u64, config: &PlannerConfig) -> Vec<ShardId> {
    let actions = plan(s, now, config);
    let shards = placed(&actions);
    ok(
        s,
        Command::ApplyPlacement {
            now_ms: now,
            actions,
        },
    );
    shards
}

/// Every node reports leading the shards it prefers to lead.
fn report_leaders(s: &mut MetaState, now: u64) {
    for node in s.nodes.keys().copied().collect::<Vec<_>>() {
        let leaders = s
            .shards
            .values()
            .filter(|sh| sh.preferred_leader == Some(node))
            .map(|sh| LeaderReport {
                shard: sh.id,
                term: Term(1),
            })
            .collect();
        ok(s, heartbeat(node.0, now, leaders));
    }
}

#[test]
fn new_shards_are_placed_in_waves_as_leaders_are_reported() {
    let config = PlannerConfig {
        new_shards_in_flight_max: 100,
        ..PlannerConfig::default()
    };
    let mut s = cluster(3);
    create(&mut s, "a", 150, 3);
    create(&mut s, "b", 100, 3);
    let first = step(&mut s, T, &config);
    assert_eq!(first.len(), 100, "the first wave is bounded");
    assert!(
        step(&mut s, T + 1, &config).is_empty(),
        "no new wave before leaders"
    );
    let mut waves = 1;
    while s.shards.values().any(|sh| sh.replicas.is_empty()) {
        report_leaders(&mut s, T + 10 * waves);
        let wave = step(&mut s, T + 10 * waves + 1, &config);
        assert!(
            !wave.is_empty() && wave.len() <= 100,
            "wave {waves}: {}",
            wave.len()
        );
        waves += 1;
    }
    assert_eq!(waves, 3, "250 shards in waves of 100");
    report_leaders(&mut s, T + 100);
    step(&mut s, T + 101, &config);
    assert!(
        s.streams
            .values()
            .all(|st| st.status == runnel_meta::StreamStatus::Active)
    );
}

#[test]
fn shards_waiting_on_a_down_node_do_not_hold_the_wave() {
    let config = PlannerConfig {
        new_shards_in_flight_max: 10,
        heartbeat_timeout_ms: 1_000,
        ..PlannerConfig::default()
    };
    let mut s = cluster(3);
    // Replication 1: a shard on a node that goes down never gets a leader.
    create(&mut s, "one", 10, 1);
    assert_eq!(step(&mut s, T, &config).len(), 10);
    let on_node_1 = s
        .shards
        .values()
        .filter(|sh| sh.replicas.iter().any(|r| r.node == NodeId(1)))
        .count();
    assert!(on_node_1 > 0);
    // Nodes 2 and 3 report their shards; node 1 falls silent and is marked down.
    let later = T + 5_000;
    for node in [2, 3] {
        let leaders = s
            .shards
            .values()
            .filter(|sh| sh.preferred_leader == Some(NodeId(node)))
            .map(|sh| LeaderReport {
                shard: sh.id,
                term: Term(1),
            })
            .collect();
        ok(&mut s, heartbeat(node, later, leaders));
    }
    step(&mut s, later, &config);
    create(&mut s, "next", 10, 2);
    let wave = step(&mut s, later + 1, &config);
    assert_eq!(
        wave.len(),
        10,
        "the shards stuck on the down node do not count"
    );
}
