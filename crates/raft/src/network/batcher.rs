//! One task per peer that gathers the AppendEntries of many groups into one
//! `BatchAppend` RPC and fans the responses back.
//!
//! Why: every group's leader sends a heartbeat to each follower every heartbeat
//! interval. With 1,000 idle groups that would be 1,000 RPCs per interval per peer;
//! batched, it is a handful. Heartbeats (no entries) wait up to
//! [`TransportConfig::batch_window`] for company; an item carrying entries flushes the
//! batch at once, so batching adds no latency to writes. Several batches may be in
//! flight (`inflight_batches_max`); under load, items queue while they are and batches
//! grow by themselves.
//!
//! The peer's server processes one group's items in order and different groups
//! concurrently (see `server.rs`).
//!
//! Deadlines: openraft gives every AppendEntries, heartbeat or not, one heartbeat
//! interval (`RPCOption::hard_ttl`). A round trip crosses about six task hand-offs
//! (heartbeat worker, batcher, two HTTP/2 connection tasks, the server's task, the
//! group's RaftCore), so when the runtime is CPU-bound and each wake-up comes tens of
//! milliseconds late, every heartbeat misses its deadline however fast the peer
//! handles the batch: the sender's "batch answered" and the server's "batch handled"
//! traces (debug level) tell the two apart. Items whose sender gave up are still sent:
//! a late heartbeat still resets the follower's election timer.

use std::sync::Arc;
use std::time::Duration;

use runnel_proto::internal::v1 as pb;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{Instrument, debug};

use crate::network::TransportConfig;
use crate::network::client::PeerConn;

/// Longest wait for a `BatchAppend` answer; items' own deadlines are shorter.
const BATCH_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// What a batch item's sender gets back: the peer's response, or why there is none.
pub type ItemResult = Result<pb::AppendEntriesResponse, String>;

/// One group's AppendEntries waiting to be sent.
pub struct BatchItem {
    pub request: pb::AppendEntriesRequest,
    pub reply: oneshot::Sender<ItemResult>,
}

/// Starts the batcher of one peer; it ends when every sender of `rx` is gone.
pub fn spawn(peer: Arc<PeerConn>, rx: mpsc::Receiver<BatchItem>, config: TransportConfig) {
    let span = tracing::info_span!("batcher", peer = peer.node_id);
    tokio::spawn(run(peer, rx, config).instrument(span));
}

async fn run(peer: Arc<PeerConn>, mut rx: mpsc::Receiver<BatchItem>, config: TransportConfig) {
    let inflight = Arc::new(Semaphore::new(config.inflight_batches_max.max(1)));
    while let Some(first) = rx.recv().await {
        let batch = gather(first, &mut rx, &config).await;
        // A batch's response waits for its slowest item, and an item with entries
        // waits for an fsync: heartbeats travel in their own batch so that they are
        // never held up behind another group's disk write.
        let (writes, heartbeats): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|i| !i.request.entries.is_empty());
        for part in [writes, heartbeats] {
            if part.is_empty() {
                continue;
            }
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                return;
            };
            let peer = peer.clone();
            tokio::spawn(
                async move {
                    send(&peer, part).await;
                    drop(permit);
                }
                .in_current_span(),
            );
        }
    }
}

/// The first item plus whatever arrives within the window (none for writes), up to
/// the item limit.
async fn gather(
    first: BatchItem,
    rx: &mut mpsc::Receiver<BatchItem>,
    config: &TransportConfig,
) -> Vec<BatchItem> {
    let mut urgent = !first.request.entries.is_empty();
    let mut bytes = payload_bytes(&first);
    let mut batch = vec![first];
    let started = std::time::Instant::now();
    while batch.len() < config.batch_items_max && bytes < config.batch_bytes_max {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                let left = config.batch_window.saturating_sub(started.elapsed());
                if urgent || left == Duration::ZERO {
                    break;
                }
                match crate::runtime::timeout(left, rx.recv()).await {
                    Ok(Some(item)) => item,
                    Ok(None) | Err(_) => break,
                }
            }
        };
        urgent |= !item.request.entries.is_empty();
        bytes += payload_bytes(&item);
        batch.push(item);
    }
    batch
}

/// The entry payload bytes an item carries (what dominates its encoded size).
fn payload_bytes(item: &BatchItem) -> usize {
    item.request.entries.iter().map(|e| e.payload.len()).sum()
}

async fn send(peer: &PeerConn, batch: Vec<BatchItem>) {
    // Items whose sender already gave up are sent all the same (dropping them was
    // tried: the followers, hearing nothing, started elections and the load grew).
    let (requests, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|i| (i.request, i.reply)).unzip();
    let n = requests.len();
    debug!(items = n, "sending batch");
    let started = std::time::Instant::now();
    // Bounded: a batch that never returns must not hold an in-flight slot forever.
    let rpc = peer.batch_append(pb::BatchAppendRequest { requests });
    let result = match crate::runtime::timeout(BATCH_RPC_TIMEOUT, rpc).await {
        Ok(r) => r,
        Err(_) => Err(format!("BatchAppend to node {}: timed out", peer.node_id)),
    };
    debug!(
        items = n,
        elapsed_us = started.elapsed().as_micros() as u64,
        ok = result.is_ok(),
        "batch answered"
    );
    match result {
        Ok(resp) if resp.responses.len() == n => {
            for (reply, r) in replies.into_iter().zip(resp.responses) {
                let _ = reply.send(Ok(r));
            }
        }
        Ok(resp) => {
            let msg = format!(
                "peer answered {} items to a batch of {n}",
                resp.responses.len()
            );
            for reply in replies {
                let _ = reply.send(Err(msg.clone()));
            }
        }
        Err(msg) => {
            for reply in replies {
                let _ = reply.send(Err(msg.clone()));
            }
        }
    }
}
