//! Seeds: which to run, in what parallelism, what to print, and madsim's determinism
//! check.
//!
//! Environment (madsim's names, so that its documented replay works):
//! - `MADSIM_TEST_SEED=N`: run seeds N.. (else the fixed default set of the test);
//! - `MADSIM_TEST_NUM=K`: that many seeds from N (default 1 with a seed);
//! - `MADSIM_TEST_JOBS=J`: seeds run J at a time, each in its own thread (default 1);
//! - `MADSIM_TEST_CHECK_DETERMINISM=1`: run each seed twice in this process and fail
//!   on the first difference in the simulation's random stream;
//! - `RUNNEL_SIM_QUIET=1`: print failures only (sweeps);
//! - `RUST_LOG`: server and SDK logs (off by default).

use std::ops::Range;
use std::sync::mpsc;
use std::time::Instant;

use madsim::Config;
use madsim::runtime::Runtime;

use crate::scenario::{self, Outcome};

/// A guard against a hang, in simulated time.
const SIMULATED_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(900);

/// Which seeds to run: from the environment, else `default`.
pub fn seeds(default: Range<u64>) -> Range<u64> {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    match env("MADSIM_TEST_SEED") {
        Some(s) => s..s + env("MADSIM_TEST_NUM").unwrap_or(1),
        None => default,
    }
}

pub fn replay_command(test: &str, seed: u64) -> String {
    format!(
        "MADSIM_TEST_SEED={seed} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/madsim \
         cargo test -p runnel-simulation --test {test} -- --nocapture"
    )
}

/// Server and SDK logs per `RUST_LOG` (off by default); calling it again is harmless.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Runs one seed in a fresh runtime (in this thread); a panic is a failed outcome.
pub fn run_seed(seed: u64) -> Outcome {
    let result = std::panic::catch_unwind(|| {
        if std::env::var("MADSIM_TEST_CHECK_DETERMINISM").is_ok() {
            return Runtime::check_determinism(seed, Config::default(), scenario::run);
        }
        let mut rt = Runtime::with_seed_and_config(seed, Config::default());
        rt.set_time_limit(SIMULATED_TIME_LIMIT);
        rt.block_on(scenario::run())
    });
    result.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Outcome {
            seed,
            failed: true,
            text: format!("PANIC: {msg}"),
            simulated: std::time::Duration::ZERO,
            faults: 0,
            violated: vec!["panic"],
        }
    })
}

/// Totals of a batch of seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub failed: Vec<u64>,
    pub simulated_secs: f64,
    pub faults: usize,
    pub wall_secs: f64,
}

/// Runs `seeds` (`jobs` at a time), printing a line per seed (failures only when
/// quiet) with the replay command of each failure; stops early after `stop_after`
/// failures.
pub fn run_seeds(test: &str, seeds: Range<u64>, stop_after: usize) -> Summary {
    init_logs();
    let quiet = std::env::var("RUNNEL_SIM_QUIET").is_ok();
    let jobs = std::env::var("MADSIM_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut next = seeds.start;
    let (tx, rx) = mpsc::channel::<(Outcome, f64)>();
    let mut running = 0;
    loop {
        while running < jobs && next < seeds.end && summary.failed.len() < stop_after {
            let (tx, seed) = (tx.clone(), next);
            std::thread::spawn(move || {
                let t = Instant::now();
                let o = run_seed(seed);
                let _ = tx.send((o, t.elapsed().as_secs_f64()));
            });
            next += 1;
            running += 1;
        }
        if running == 0 {
            break;
        }
        let Ok((o, wall)) = rx.recv() else { break };
        running -= 1;
        summary.seeds += 1;
        summary.simulated_secs += o.simulated.as_secs_f64();
        summary.faults += o.faults;
        if o.failed {
            summary.failed.push(o.seed);
            println!(
                "seed {} FAILED ({wall:.1} s): {}\n  replay: {}",
                o.seed,
                o.text,
                replay_command(test, o.seed)
            );
        } else if !quiet {
            println!(
                "seed {} ok ({wall:.1} s): {}\n  replay: {}",
                o.seed,
                o.text,
                replay_command(test, o.seed)
            );
        }
    }
    summary.wall_secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds in {:.0} s ({:.1} seeds/min), {:.0} simulated s/seed, {:.1} faults/seed; failed: {:?}",
        summary.seeds,
        summary.wall_secs,
        summary.seeds as f64 * 60.0 / summary.wall_secs.max(0.001),
        summary.simulated_secs / summary.seeds.max(1) as f64,
        summary.faults as f64 / summary.seeds.max(1) as f64,
        summary.failed
    );
    summary
}
