//! The placement service's pure heart: the meta state machine and the planner.
//!
//! - [`state`]: [`MetaState`], what the meta Raft group agrees on: nodes, streams,
//!   shards (with desired replica sets and moves in progress), consumer groups.
//! - [`command`]: [`Command`], the entries of the meta Raft log, and [`apply`], the
//!   deterministic state machine step (handlers per operation in `handlers/`).
//! - [`action`]: [`Action`], the planner's decisions as data.
//! - [`planner`]: [`plan`], state → actions; scoring in [`allocator`], hard rules in
//!   [`constraints`], leader balance in `leaders`.
//! - [`liveness`]: [`nodes_to_mark_down`]; [`leases`]: [`assign_leases`] for
//!   consumer groups.
//! - [`error`]: [`MetaError`]; [`limits`]: every bound of the meta state; [`names`]:
//!   consumer group names and member ids.
//!
//! *Architecture invariant*: pure. No I/O, no clock, no randomness, no async, no Raft.
//! Time arrives in commands (`now_ms`); maps are `BTreeMap`s, so iteration order (and
//! with it every result) is the same on every replica. The glue crate drives it: the
//! meta group's state machine calls [`apply`] on each committed [`Command`]; the meta
//! leader calls [`plan`] on a timer and proposes `Command::ApplyPlacement` with the
//! actions; nodes read the desired state and report back through commands.
//!
//! *Architecture invariant*: an `apply` that returns `Err` has changed nothing.
//!
//! *Safety of moves*: a replica move is add-learner, catch-up (reported by the shard
//! leader), promote (reported), remove (reported); one move per shard at a time, so a
//! voter leaves only after its replacement votes and a shard never drops below a
//! majority of its voters. A voter that leads is removed only after it has handed its
//! leadership over, so the shard always has a leader that can finish the move.

pub mod action;
pub mod allocator;
pub mod command;
pub mod constraints;
pub mod error;
mod handlers;
mod leaders;
pub mod leases;
pub mod limits;
pub mod liveness;
pub mod names;
pub mod planner;
pub mod state;

pub use action::Action;
pub use command::{
    Command, CommandResult, LeaderReport, LeaseGrant, MoveStep, RejectedAction, apply,
};
pub use error::MetaError;
pub use leases::assign_leases;
pub use liveness::nodes_to_mark_down;
pub use names::{GroupName, MemberId};
pub use planner::{PlannerConfig, plan};
pub use state::{
    Checkpoint, ClusterIdentity, ClusterSettings, ConsumerGroup, GroupMember, Lease, MetaState,
    MovePhase, MoveReason, NodeInfo, NodeLabels, NodeLoad, NodeStatus, PendingMove, Replica,
    ReplicaRole, ReportedLeader, ShardInfo, ShardState, StreamInfo, StreamStatus,
};
