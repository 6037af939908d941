//! Deterministic simulation of a whole Runnel cluster: the real `runneld` code
//! (`runnel_server::node::Node`) on several simulated machines, the real SDK
//! (`runnel_client`) in client machines, madsim's network and clock, and the project's
//! simulated disks, all driven by one seed.
//!
//! What is where:
//! - [`cluster`]: the harness: boots N nodes, each on its own simulated IP with a
//!   `SimDisk` and a `MemStore` that the harness owns (so they outlive a kill); kill
//!   (unsynced writes lost, optionally a torn last write), restart, pause and resume,
//!   a node that joins later (`--join`), and white-box views (who leads a shard, who
//!   leads the meta group).
//! - [`oracle`]: the client oracle: every record sent, every acknowledged record
//!   (shard, sequence number, bytes), every record read, and the confirmed trim points.
//! - [`workload`]: producers (random keys and sizes), consumers (polling and push), a
//!   consumer group; each on its own client machine.
//! - [`nemesis`]: the faults; each seed picks its own mix (swarm testing).
//! - [`checkers`]: one invariant per file, named after what it protects.
//! - [`scenario`]: one run: boot, load, faults (safety phase), heal, liveness phase,
//!   final full read, checks.
//! - [`runner`]: seeds: which to run, the replay command, the determinism check.
//!
//! Everything here exists only under `RUSTFLAGS="--cfg madsim"`; a normal build
//! compiles an empty crate. See `SIMULATION.md`.

#[cfg(madsim)]
pub mod checkers;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod oracle;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod scenario;
#[cfg(madsim)]
pub mod workload;
