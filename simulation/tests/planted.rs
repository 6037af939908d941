//! Proof of power: each planted bug (see `runnel_types::planted`) switched on in
//! turn, seeds run until one fails; a failure counts only if the same seed passes with
//! the bug switched off (else something else failed, and the catch proves nothing). The
//! test fails if a bug survives its bound of seeds. Only with the `planted-bugs`
//! feature:
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

use runnel_simulation::nemesis::{FORCED, Fault};
use runnel_simulation::runner;
use runnel_simulation::scenario::Outcome;
use runnel_types::planted::{self, Bug};

/// Seeds a bug may survive before the test fails. The slowest catch measured took 3
/// seeds (SIMULATION.md, "Planted bugs"); the margin absorbs changes to the scenario
/// that move the seeds' random streams, and the bound keeps the test able to fail.
const SEEDS_MAX: u64 = 5;

fn with_bug<T>(bug: Bug, on: bool, faults: &[Fault], f: impl FnOnce() -> T) -> T {
    planted::set(bug, on);
    *FORCED.lock().expect("not poisoned") = Some(faults.to_vec());
    let out = f();
    *FORCED.lock().expect("not poisoned") = None;
    planted::set(bug, false);
    out
}

/// Prints one seed's outcome; with `bug`, the command that replays it with that bug.
fn report(bug: Option<Bug>, what: &str, o: &Outcome, wall: f64) {
    println!(
        "{what} seed {}: {} ({wall:.0} s wall, {:.0} s simulated, {} faults)\n  {}",
        o.seed,
        if o.failed { "FAILED" } else { "ok" },
        o.simulated.as_secs_f64(),
        o.faults,
        o.text,
    );
    if let Some(bug) = bug {
        println!(
            "  replay: RUNNEL_PLANTED={bug:?} MADSIM_TEST_SEED={} RUSTFLAGS=\"--cfg madsim\" \
             CARGO_TARGET_DIR=target/madsim cargo test -p runnel-simulation \
             --features planted-bugs --test planted -- --nocapture",
            o.seed
        );
    }
}

/// Runs seeds 1.. with `bug` on until one fails whose run with the bug off passes:
/// the catching seed. A seed that fails either way proves nothing and is skipped.
fn hunt(bug: Bug, faults: &[Fault]) -> Result<u64, String> {
    // `MADSIM_TEST_SEED` (and `MADSIM_TEST_NUM`) replay or move the hunt.
    for seed in runner::seeds(1..SEEDS_MAX + 1) {
        let started = std::time::Instant::now();
        let o = with_bug(bug, true, faults, || runner::run_seed(seed));
        let wall = started.elapsed().as_secs_f64();
        report(Some(bug), &format!("{bug:?}"), &o, wall);
        if !o.failed {
            continue;
        }
        let started = std::time::Instant::now();
        let baseline = with_bug(bug, false, faults, || runner::run_seed(seed));
        let wall = started.elapsed().as_secs_f64();
        report(
            None,
            &format!("{bug:?} baseline (bug off)"),
            &baseline,
            wall,
        );
        if baseline.failed {
            println!("=== {bug:?}: seed {seed} fails without the bug too; not counted");
            continue;
        }
        println!("=== {bug:?} caught by seed {seed} through {:?}", o.violated);
        return Ok(seed);
    }
    Err(format!("{bug:?} not caught within {SEEDS_MAX} seeds"))
}

#[test]
fn planted_bugs_are_caught() {
    use Fault::*;
    runner::init_logs();
    let only = std::env::var("RUNNEL_PLANTED").ok();
    let hunts: [(Bug, &[Fault]); 4] = [
        (Bug::AckBeforeSync, &[Kill, KillMinority, KillShardLeader]),
        (
            Bug::ReadPastCommit,
            &[IsolateOne, SplitMinority, KillShardLeader],
        ),
        (
            Bug::SkipTruncate,
            &[IsolateShardLeader, SplitMinority, KillShardLeader, Kill],
        ),
        (Bug::LoseTrimPoint, &[Trim, Kill]),
    ];
    let mut problems = Vec::new();
    for (bug, faults) in hunts {
        if only.as_deref().is_some_and(|o| o != format!("{bug:?}")) {
            continue;
        }
        println!("=== hunting {bug:?} with {faults:?}");
        if let Err(e) = hunt(bug, faults) {
            problems.push(e);
        }
    }
    assert!(problems.is_empty(), "{problems:?}");
}
