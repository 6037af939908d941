//! Proof of power: each planted bug (see `runnel_types::planted`) switched on in
//! turn, seeds run until one fails; a failure counts only if the same seed passes with
//! the bug switched off (else something else failed, and the catch proves nothing), and
//! only if a checker meant for that bug is among those that fired. The test fails if a
//! bug survives its bound of seeds. Only with the `planted-bugs` feature:
//!
//! ```sh
//! MADSIM_TEST_JOBS=2 RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim \
//!   cargo test -p runnel-simulation --features planted-bugs --test planted -- --nocapture
//! ```
//!
//! `RUNNEL_PLANTED=AckBeforeSync` (or another bug's name) hunts one bug only;
//! `MADSIM_TEST_JOBS=J` hunts J bugs at a time (the switches are per thread).
//! `MADSIM_TEST_SEED=N` starts the hunts at seed N. Each bug runs with the fault kinds
//! that can expose it (a seed's swarm mix would include them about one time in 2^k);
//! the seeds it took are recorded in SIMULATION.md.
#![cfg(all(madsim, feature = "planted-bugs"))]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use runnel_simulation::nemesis::{Fault, force_mix};
use runnel_simulation::runner;
use runnel_simulation::scenario::{self, Outcome};
use runnel_types::planted::{self, Bug};

/// Seeds a bug may survive before the test fails. The hunts are deterministic (the
/// same seeds catch each bug on every run; SIMULATION.md, "Planted bugs"); the margin
/// absorbs changes to the scenario that move the seeds' random streams, and the bound
/// keeps the test able to fail.
const SEEDS_MAX: u64 = 5;

/// One hunt: the bug, the fault kinds forced on, the checkers meant to catch it, and
/// the retention forced (`None`: each seed draws it).
struct Hunt {
    bug: Bug,
    faults: &'static [Fault],
    checkers: &'static [&'static str],
    retention: Option<Duration>,
}

fn hunts() -> Vec<Hunt> {
    use Fault::*;
    vec![
        Hunt {
            bug: Bug::AckBeforeSync,
            faults: &[Kill, KillMinority, KillShardLeader],
            checkers: &["durability", "no_phantoms", "convergence"],
            retention: None,
        },
        Hunt {
            bug: Bug::ReadPastCommit,
            faults: &[IsolateOne, SplitMinority, KillShardLeader],
            checkers: &["no_phantoms", "order"],
            retention: None,
        },
        Hunt {
            bug: Bug::SkipTruncate,
            faults: &[IsolateShardLeader, SplitMinority, KillShardLeader, Kill],
            checkers: &["convergence"],
            retention: None,
        },
        Hunt {
            bug: Bug::LoseTrimPoint,
            faults: &[Trim, Kill],
            checkers: &["trim_point"],
            // A short retention re-trims a restarted replica and so hides a forgotten
            // trim point by the final check (SIMULATION.md).
            retention: Some(scenario::RETENTION),
        },
    ]
}

/// Runs `seed` in this thread with `bug` on or off and the hunt's faults forced.
fn run(hunt: &Hunt, on: bool, seed: u64) -> (Outcome, f64) {
    planted::set(hunt.bug, on);
    force_mix(Some(hunt.faults.to_vec()));
    scenario::force_retention(hunt.retention);
    let started = Instant::now();
    let o = runner::run_seed(seed);
    scenario::force_retention(None);
    force_mix(None);
    planted::set(hunt.bug, false);
    (o, started.elapsed().as_secs_f64())
}

/// One seed's outcome, with (bug on) the command that replays it with that bug.
fn report(hunt: &Hunt, on: bool, o: &Outcome, wall: f64) -> String {
    let mut text = format!(
        "{:?}{} seed {}: {} ({wall:.0} s wall, {:.0} s simulated, {} faults)\n  {}",
        hunt.bug,
        if on { "" } else { " baseline (bug off)" },
        o.seed,
        if o.failed { "FAILED" } else { "ok" },
        o.simulated.as_secs_f64(),
        o.faults,
        o.text,
    );
    if on {
        text.push_str(&format!(
            "\n  replay: RUNNEL_PLANTED={:?} MADSIM_TEST_SEED={} RUSTFLAGS=\"--cfg madsim\" \
             CARGO_TARGET_DIR=target/madsim cargo test -p runnel-simulation \
             --features planted-bugs --test planted -- --nocapture",
            hunt.bug, o.seed
        ));
    }
    text
}

/// Runs seeds with the bug on until one fails through one of the hunt's checkers and
/// passes with the bug off: the catching seed. Prints as it goes.
fn hunt(h: &Hunt, first: u64) -> Result<String, String> {
    let started = Instant::now();
    for seed in first..first + SEEDS_MAX {
        let (o, wall) = run(h, true, seed);
        println!("{}", report(h, true, &o, wall));
        let meant = o.violated.iter().any(|v| h.checkers.contains(v));
        if !o.failed {
            continue;
        }
        if !meant {
            println!(
                "=== {:?}: seed {seed} failed through {:?}, none of {:?}; not counted",
                h.bug, o.violated, h.checkers
            );
            continue;
        }
        let (baseline, wall) = run(h, false, seed);
        println!("{}", report(h, false, &baseline, wall));
        if baseline.failed {
            println!(
                "=== {:?}: seed {seed} fails without the bug too; not counted",
                h.bug
            );
            continue;
        }
        return Ok(format!(
            "{:?} caught by seed {seed} ({} seeds) through {:?} in {:.0} s wall",
            h.bug,
            seed - first + 1,
            o.violated,
            started.elapsed().as_secs_f64()
        ));
    }
    Err(format!(
        "{:?} not caught within {SEEDS_MAX} seeds from {first}",
        h.bug
    ))
}

#[test]
fn planted_bugs_are_caught() {
    runner::init_logs();
    let only = std::env::var("RUNNEL_PLANTED").ok();
    let first = runner::seeds(1..2).start;
    let jobs = std::env::var("MADSIM_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let mut queue: Vec<Hunt> = hunts()
        .into_iter()
        .filter(|h| only.as_deref().is_none_or(|o| o == format!("{:?}", h.bug)))
        .collect();
    queue.reverse();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut running = 0;
    let mut results = Vec::new();
    loop {
        while running < jobs
            && let Some(h) = queue.pop()
        {
            println!("=== hunting {:?} with {:?}", h.bug, h.faults);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(hunt(&h, first));
            });
            running += 1;
        }
        if running == 0 {
            break;
        }
        let Ok(r) = rx.recv() else { break };
        running -= 1;
        println!("=== {}", r.as_ref().unwrap_or_else(|e| e));
        results.push(r);
    }
    println!(
        "=== {} hunts in {:.0} s wall",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    let problems: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(problems.is_empty(), "{problems:?}");
}
