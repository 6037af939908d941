//! Proof of power: each planted bug (see `runnel_types::planted`) switched on in
//! turn, seeds run until a checker fails; the test fails if a bug survives its bound.
//! Only with the `planted-bugs` feature:
//!
//! ```sh
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim \
//!   cargo test -p runnel-simulation --features planted-bugs --test planted -- --nocapture
//! ```
//!
//! `RUNNEL_PLANTED=AckBeforeSync` (or another bug's name) hunts one bug only. Each bug
//! runs with the fault kinds that can expose it (a seed's swarm mix would include them
//! about one time in 2^k); the seeds it took are recorded in SIMULATION.md.
#![cfg(all(madsim, feature = "planted-bugs"))]

use std::ops::Range;

use runnel_simulation::nemesis::{FORCED, Fault};
use runnel_simulation::runner;
use runnel_types::planted::{self, Bug};

/// Seeds a bug may survive before the test fails.
const SEEDS_MAX: u64 = 20;

fn hunt(bug: Bug, faults: &[Fault], seeds: Range<u64>) -> Option<(u64, u64)> {
    planted::set(bug, true);
    *FORCED.lock().expect("not poisoned") = Some(faults.to_vec());
    let summary = runner::run_seeds("planted", seeds, 1);
    *FORCED.lock().expect("not poisoned") = None;
    planted::set(bug, false);
    summary.failed.first().map(|seed| (*seed, summary.seeds))
}

#[test]
fn planted_bugs_are_caught() {
    use Fault::*;
    let only = std::env::var("RUNNEL_PLANTED").ok();
    let hunts: [(Bug, &[Fault]); 4] = [
        (Bug::AckBeforeSync, &[Kill, KillMinority, KillShardLeader]),
        (
            Bug::ReadPastCommit,
            &[IsolateOne, SplitMinority, KillShardLeader],
        ),
        (
            Bug::SkipTruncate,
            &[IsolateOne, SplitMinority, KillShardLeader, Kill],
        ),
        (Bug::LoseTrimPoint, &[Trim, Kill]),
    ];
    let mut survivors = Vec::new();
    for (bug, faults) in hunts {
        if only.as_deref().is_some_and(|o| o != format!("{bug:?}")) {
            continue;
        }
        println!("=== hunting {bug:?} with {faults:?}");
        match hunt(bug, faults, 1..1 + SEEDS_MAX) {
            Some((seed, tried)) => {
                println!("=== {bug:?} caught by seed {seed} ({tried} seeds run)")
            }
            None => survivors.push(bug),
        }
    }
    assert!(
        survivors.is_empty(),
        "planted bugs not caught within {SEEDS_MAX} seeds: {survivors:?}"
    );
}
