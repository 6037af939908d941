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
//! - `RUNNEL_SIM_WALL_LIMIT_SECS=S`: a seed still running after S seconds of wall
//!   time fails (default [`WALL_LIMIT_DEFAULT`]);
//! - `RUST_LOG`: server and SDK logs (off by default).
//!
//! Limits: a seed fails, with its replay command like any failure, when it passes
//! [`SIMULATED_TIME_LIMIT`] of simulated time or its wall-clock limit. A livelock (tasks
//! that keep waking each other) barely moves madsim's clock (50-100 ns per poll) and
//! never lets madsim's own time-limit check run (it runs only once no task is ready), so
//! a watchdog task inside the simulation checks both limits every
//! [`WATCHDOG_PERIOD`] of simulated time and panics the seed's runtime. The wall clock
//! cannot be read inside the simulation (madsim answers `clock_gettime` with simulated
//! time), so a timer thread outside it raises a flag the watchdog reads. A seed whose
//! thread still does not return (one poll that never ends) is reported as failed and
//! left behind after a further [`ABANDON_GRACE`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use madsim::Config;
use madsim::runtime::Runtime;

use crate::scenario::{self, Outcome};

/// A guard against a hang, in simulated time (a seed normally takes 30-150 s).
pub const SIMULATED_TIME_LIMIT: Duration = Duration::from_secs(900);
/// A guard against a hang, in wall time: generous, since a debug seed took up to about
/// 700 s on a heavily loaded 2-core machine.
pub const WALL_LIMIT_DEFAULT: Duration = Duration::from_secs(1_800);
/// How often (simulated) the watchdog looks at the limits.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(100);
/// How long past its wall limit a seed's thread may take to unwind before the sweep
/// gives up on it.
const ABANDON_GRACE: Duration = Duration::from_secs(120);
/// What a seed stopped by a limit reports (and the planted test matches).
pub const LIMIT_PANIC: &str = "seed did not finish";

/// Per running seed, the flag its timer thread raises at the wall limit.
static WALL_EXPIRED: Mutex<BTreeMap<u64, Arc<AtomicBool>>> = Mutex::new(BTreeMap::new());

/// The wall-clock limit per seed: `RUNNEL_SIM_WALL_LIMIT_SECS`, else the default.
pub fn wall_limit() -> Duration {
    std::env::var("RUNNEL_SIM_WALL_LIMIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(WALL_LIMIT_DEFAULT, Duration::from_secs)
}

/// The watchdog of the running seed: panics the runtime once the seed passes its
/// simulated-time limit or its wall-clock flag is up. Spawned by the scenario first.
pub async fn watchdog() {
    let seed = madsim::runtime::Handle::current().seed();
    let expired = lock(&WALL_EXPIRED).get(&seed).cloned();
    let started = madsim::time::Instant::now();
    loop {
        madsim::time::sleep(WATCHDOG_PERIOD).await;
        let simulated = started.elapsed();
        if expired.as_ref().is_some_and(|e| e.load(Ordering::SeqCst)) {
            panic!(
                "{LIMIT_PANIC} within its wall-clock limit of {:?} ({:.1} s simulated so far)",
                wall_limit(),
                simulated.as_secs_f64()
            );
        }
        if simulated > SIMULATED_TIME_LIMIT {
            panic!("{LIMIT_PANIC} within {SIMULATED_TIME_LIMIT:?} of simulated time");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Raises `seed`'s wall-clock flag after `limit` unless the returned sender is
/// dropped first (the seed finished).
fn start_wall_timer(seed: u64, limit: Duration) -> mpsc::Sender<()> {
    let flag = Arc::new(AtomicBool::new(false));
    lock(&WALL_EXPIRED).insert(seed, flag.clone());
    let (done, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            flag.store(true, Ordering::SeqCst);
        }
    });
    done
}

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

/// Runs one seed in a fresh runtime (in this thread); a panic is a failed outcome, and
/// so is a seed stopped by a limit (see the module's doc).
pub fn run_seed(seed: u64) -> Outcome {
    let timer = start_wall_timer(seed, wall_limit());
    let result = std::panic::catch_unwind(|| {
        if std::env::var("MADSIM_TEST_CHECK_DETERMINISM").is_ok() {
            return Runtime::check_determinism(seed, Config::default(), scenario::run);
        }
        let mut rt = Runtime::with_seed_and_config(seed, Config::default());
        rt.set_time_limit(SIMULATED_TIME_LIMIT);
        rt.block_on(scenario::run())
    });
    drop(timer);
    lock(&WALL_EXPIRED).remove(&seed);
    result.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        let limit = msg.contains(LIMIT_PANIC) || msg.contains("time limit exceeded");
        Outcome {
            seed,
            failed: true,
            text: format!("PANIC: {msg}"),
            simulated: Duration::ZERO,
            faults: 0,
            violated: vec![if limit { "limit" } else { "panic" }],
        }
    })
}

/// The outcome of a seed whose thread did not return, even after its limit.
fn abandoned(seed: u64, wall: f64) -> Outcome {
    Outcome {
        seed,
        failed: true,
        text: format!(
            "{LIMIT_PANIC}: its thread still runs {wall:.0} s after it started (its wall \
             limit was {:?}); abandoned",
            wall_limit()
        ),
        simulated: Duration::ZERO,
        faults: 0,
        violated: vec!["limit"],
    }
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
    // Seeds running, with when they started.
    let mut running: BTreeMap<u64, Instant> = BTreeMap::new();
    let give_up = wall_limit() + ABANDON_GRACE;
    loop {
        while running.len() < jobs && next < seeds.end && summary.failed.len() < stop_after {
            let (tx, seed) = (tx.clone(), next);
            std::thread::spawn(move || {
                let t = Instant::now();
                let o = run_seed(seed);
                let _ = tx.send((o, t.elapsed().as_secs_f64()));
            });
            running.insert(seed, Instant::now());
            next += 1;
        }
        if running.is_empty() {
            break;
        }
        let (o, wall) = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(done) => done,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let Some((&seed, t)) = running.iter().find(|(_, t)| t.elapsed() > give_up) else {
                    continue;
                };
                let wall = t.elapsed().as_secs_f64();
                (abandoned(seed, wall), wall)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if running.remove(&o.seed).is_none() {
            continue; // an abandoned seed that came back after all
        }
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
