//! Property tests of the planner: a deterministic world (tests/world) runs random node
//! joins, kills, revivals, drains, stream creations and deletions; after every step the
//! safety invariants (tests/invariants) hold; once the events stop and the planner has
//! nothing left to do, the placement is complete, spread and balanced.

mod invariants;
mod world;

use proptest::prelude::*;
use runnel_meta::plan;

use crate::world::World;

#[derive(Clone, Debug)]
enum Event {
    AddNode(u8),
    Kill(u8),
    Revive,
    Drain(u8),
    RemoveDrained,
    CreateStream(u8, u8),
    DeleteStream(u8),
    Wait,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => any::<u8>().prop_map(Event::AddNode),
        2 => any::<u8>().prop_map(Event::Kill),
        2 => Just(Event::Revive),
        1 => any::<u8>().prop_map(Event::Drain),
        1 => Just(Event::RemoveDrained),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Event::CreateStream(a, b)),
        1 => any::<u8>().prop_map(Event::DeleteStream),
        4 => Just(Event::Wait),
    ]
}

fn run(w: &mut World, events: &[Event], keep_dead: bool) {
    for e in events {
        match e {
            Event::AddNode(seed) => {
                w.add_node(*seed);
            }
            Event::Kill(pick) => w.kill(*pick),
            Event::Revive => w.revive(),
            Event::Drain(pick) => w.drain(*pick),
            Event::RemoveDrained => w.remove_drained(),
            Event::CreateStream(shards, rf) => w.create_stream(*shards, *rf),
            Event::DeleteStream(pick) => w.delete_stream(*pick),
            Event::Wait => {}
        }
        w.step();
    }
    // Quiet phase: a dead node stays dead only if every shard on it keeps a majority
    // without it (replication factor 3); otherwise it comes back.
    let dead = w.dead();
    let survivable = dead.iter().all(|d| {
        w.state
            .placed_shards()
            .filter(|(s, _)| s.has_replica(*d))
            .all(|(_, st)| st.replication_factor >= 3)
    });
    if !(keep_dead && survivable) {
        w.revive();
    }
    w.converge(400);
    invariants::check_converged(w);
    // Minimal movement: a converged state plans nothing, and keeps planning nothing.
    for _ in 0..3 {
        let actions = w.step();
        assert!(actions.is_empty(), "a converged state planned {actions:?}");
    }
    assert!(plan(&w.state, w.now_ms, &w.config).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn planner_keeps_shards_safe_and_converges(
        nodes in 3u8..6,
        zones in prop_oneof![Just(0u8), 2u8..4],
        weighted in any::<bool>(),
        moves in 1usize..4,
        keep_dead in any::<bool>(),
        events in prop::collection::vec(event(), 1..40),
    ) {
        let mut w = World::new(nodes, zones, weighted, moves);
        run(&mut w, &events, keep_dead);
    }
}
