//! runneld: one node of a Runnel cluster.
//!
//! What is where:
//! - [`config`]: flags, `RUNNEL_*` variables and the TOML file, resolved into a `Config`.
//! - [`error`]: [`ServerError`](error::ServerError) and its one conversion to a gRPC status.
//! - [`iterator`]: shard iterator tokens (self-contained, tagged, expiring).
//! - [`metrics`]: the Prometheus metrics; [`gauges`]: the task that keeps the gauges and
//!   the election counter current; [`admin_http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`api`]: the public gRPC services (`runnel.v1`), validation and routing at the edge,
//!   and the retention task.
//! - [`telemetry`]: tracing setup.
//!
//! *Architecture invariant*: request handlers validate at the edge, route with pure
//! functions, and do I/O only through the replication layer (`runnel-raft`).

pub mod api;
pub mod config;
pub mod context;
pub mod error;
pub mod gauges;
pub mod health;
pub mod iterator;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod shard_manager;
pub mod telemetry;

#[cfg(not(madsim))]
pub mod admin_http;
