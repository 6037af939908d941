//! Writes on a leader whose lease has lapsed while its group was quiesced.
//!
//! openraft (0.10) refuses a write on a leader that has not heard from a quorum within
//! its lease (`election_timeout_max`), answering `ForwardToLeader` with no leader and
//! the reason `LeaseExpired`. A quiesced leader sends no heartbeats (`quiesce.rs`), so
//! after a few idle seconds its lease has always lapsed, and the first write to an idle
//! shard was refused: the client got `NOT_LEADER` with no hint, backed off and retried,
//! 20-70 ms added to the first write after every idle spell (measured; BENCHMARKS.md).
//!
//! [`client_write`] answers that one case here: it sends a heartbeat at once, waits for
//! a quorum to acknowledge one sent after the refusal (at most an election timeout),
//! and proposes again. Safety is openraft's: the retried write goes through the same
//! checks, and a leader that has really been replaced fails it with the new leader.

use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, ForwardReason, RaftError};
use openraft::raft::ClientWriteResponse;

use crate::types::{Command, Raft, TypeConfig};

type WriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>;

/// `raft.client_write(command)`, renewing a lapsed leader lease once (see above).
pub(crate) async fn client_write(raft: &Raft, command: Command) -> WriteResult {
    let retry = command.clone();
    let first = raft.client_write(command).await;
    match &first {
        Err(e) if lease_expired(e) && renew(raft).await => raft.client_write(retry).await,
        _ => first,
    }
}

fn lease_expired(e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> bool {
    e.forward_to_leader()
        .is_some_and(|f| f.reason == ForwardReason::LeaseExpired)
}

/// Heartbeats now and waits until a quorum has acknowledged one sent since; false if
/// that does not happen within an election timeout (the write then fails as openraft
/// answered it).
async fn renew(raft: &Raft) -> bool {
    let since = Instant::now();
    if raft.trigger().heartbeat().await.is_err() {
        return false;
    }
    let wait = Duration::from_millis(raft.config().election_timeout_max);
    raft.wait(Some(wait))
        .metrics(
            |m| m.last_quorum_acked.as_ref().is_some_and(|t| **t >= since),
            "leader lease renewed",
        )
        .await
        .is_ok()
}
