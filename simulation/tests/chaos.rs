//! The chaos test: the whole cluster under a seed's mix of faults, then every
//! invariant checked. The default run is a fixed set of seeds sized for CI; replay one
//! with the command each line prints, sweep many with `MADSIM_TEST_SEED`,
//! `MADSIM_TEST_NUM` and `MADSIM_TEST_JOBS` (see SIMULATION.md).
#![cfg(madsim)]

use runnel_simulation::runner;

/// The CI set: seeds 1 to 9 (about 20-150 s each on one core of the CI machine), with
/// every fault kind in the swarm (the newer kinds included). Seed 6
/// found the leaderless shard after a move removed its leader (SIMULATION.md, "Server
/// bugs found").
const DEFAULT_SEEDS: std::ops::Range<u64> = 1..10;

#[test]
fn chaos() {
    // `MADSIM_TEST_SEED` (and `MADSIM_TEST_NUM`), when set, pick the seeds instead.
    let failed = runner::run_seeds("chaos", runner::seeds(DEFAULT_SEEDS), usize::MAX).failed;
    assert!(
        failed.is_empty(),
        "failed seeds: {failed:?} (replay commands above)"
    );
}
