//! Shared pieces of the end-to-end suites in `tests/tests/`: starting and killing real
//! `runneld` processes, and the ledger of acknowledged records that every suite checks
//! against at the end.
//!
//! - [`procs`]: [`procs::ProcCluster`], runneld processes on 127.0.0.1 (SIGKILL,
//!   SIGTERM, restart on the same data directory; logs printed on failure).
//! - [`ledger`]: what producers sent and what was acknowledged, and the check that
//!   every acknowledged record reads back once, in order, byte-identical.
//! - [`deliveries`]: what consumer-group members were handed, and the check of
//!   at-least-once and exactly-once-counting-checkpoints delivery.
//! - [`workload`]: the producers and group members the suites run.
//! - [`docker`]: [`docker::DockerCluster`], runneld containers on a private Docker
//!   network (image built by `deploy/docker/build.sh`; kill, stop, pause, disconnect).
//!
//! Everything here exists only in a normal build; under `--cfg madsim` the crate is
//! empty.

#![cfg(not(madsim))]

pub mod deliveries;
pub mod docker;
pub mod ledger;
pub mod procs;
pub mod workload;
