//! The chaos test: the whole cluster under a seed's mix of faults, then every
//! invariant checked. The default run is a fixed set of seeds sized for CI; replay one
//! with the command each line prints, sweep many with `MADSIM_TEST_SEED`,
//! `MADSIM_TEST_NUM` and `MADSIM_TEST_JOBS` (see SIMULATION.md).
#![cfg(madsim)]

use runnel_simulation::runner;

/// The CI set: seeds 1 to 8 (about 40-60 s each on one core of the CI machine).
const DEFAULT_SEEDS: std::ops::Range<u64> = 1..9;

#[test]
fn chaos() {
    let summary = runner::run_seeds("chaos", runner::seeds(DEFAULT_SEEDS), usize::MAX);
    assert!(
        summary.failed.is_empty(),
        "failed seeds: {:?} (replay commands above)",
        summary.failed
    );
}
