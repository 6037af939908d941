//! Node-level liveness: whether each peer node has answered a probe lately.
//!
//! Quiesced groups (`quiesce.rs`) send no per-group heartbeats, so a follower cannot
//! tell from its group that the leader is gone. Instead every node probes each peer
//! node once per heartbeat interval (an empty `BatchAppend` over the shared channel:
//! one RPC per peer, whatever the number of groups) and remembers when it last
//! answered; a quiesced follower wakes its group (and so may elect) once its leader's
//! node has been silent for an election timeout.
//!
//! A node that has never answered counts as heard from when this node started
//! watching, so that a restart does not wake every group at once before the first
//! probes return.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::network::client::Router;

/// The shortest deadline of a probe. A probe bounded by one heartbeat interval
/// (100 ms) failed whenever the node's runtime was CPU-starved for a moment, though
/// the peer was fine; after an election timeout of such failures every quiesced
/// follower of that peer woke and campaigned at once, which starved the runtime
/// further (placement_scale: 1,000 new shards, then hundreds of elections and a meta
/// group without a leader). A late answer is still an answer.
pub(crate) const PROBE_TIMEOUT_MIN: Duration = Duration::from_millis(500);

/// When each peer node last answered.
pub(crate) struct Liveness {
    started: Instant,
    last_ok: Mutex<BTreeMap<u64, Instant>>,
}

impl Liveness {
    pub(crate) fn new() -> Liveness {
        Liveness {
            started: Instant::now(),
            last_ok: Mutex::new(BTreeMap::new()),
        }
    }

    /// Probes every known peer at once, each bounded by `within` (at least
    /// [`PROBE_TIMEOUT_MIN`]).
    pub(crate) async fn probe_all(&self, router: &Router, within: Duration) {
        let within = within.max(PROBE_TIMEOUT_MIN);
        let peers = router.peers();
        let probes = peers
            .iter()
            .map(|p| async move { (p.node_id, p.probe(within).await) });
        let results = futures::future::join_all(probes).await;
        let now = Instant::now();
        let mut last = self.last_ok.lock().unwrap_or_else(PoisonError::into_inner);
        for (node, ok) in results {
            if ok {
                last.insert(node, now);
            }
        }
    }

    /// How long `node` has not answered (since this node started watching, if ever).
    pub(crate) fn silent_for(&self, node: u64) -> Duration {
        let last = self.last_ok.lock().unwrap_or_else(PoisonError::into_inner);
        let since = last.get(&node).copied().unwrap_or(self.started);
        Instant::now().saturating_duration_since(since)
    }
}
