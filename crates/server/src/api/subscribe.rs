//! `Subscribe`: a server-streaming push of a shard's records as they commit.
//!
//! Each subscription is one task on the shard's leader. It reads pages of committed
//! records from the start position and sends each as an event through a channel of
//! [`EVENTS_BUFFERED`] slot; the gRPC stream takes from that channel only as fast as
//! HTTP/2 flow control lets it send, so a slow subscriber holds at most one event in
//! the channel and one in flight, and the task waits (never buffers more). Once caught
//! up, the task parks on the group's commit watch until the next entry commits.
//!
//! The stream ends:
//! - with the closed shard's children in a last event, once a closed shard is drained;
//! - with `NOT_LEADER` (and the new leader's address) when this node stops leading the
//!   shard: the client subscribes there again, `AFTER_SEQUENCE_NUMBER` its last event's
//!   `continuation_sequence_number`;
//! - with `NOT_FOUND` / `STREAM_NOT_ACTIVE` when the stream goes away, `UNAVAILABLE`
//!   when the replica shuts down;
//! - with `UNAVAILABLE` when the node shuts down ([`super::SubscriptionsStop`]), so that
//!   the server's graceful drain does not wait on streams that never end;
//! - silently when the client goes away (the task notices a closed channel at once,
//!   even while parked).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use runnel_proto::v1::{SubscribeEvent, SubscribeRequest};
use runnel_raft::Group;
use runnel_raft::detwatch::DetReceiver;
use runnel_types::{SeqNo, ShardId, StreamName};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::Status;
use tracing::{Instrument, debug, info_span};

use super::read::{self, PageLimits};
use super::records::{ShardFacts, leading_group, shard_ended, shard_facts};
use super::{record_shard, router, validate};
use crate::context::{NodeContext, now_ms};
use crate::error::{RETRY_AFTER_MS_NO_LEADER, ServerError};

/// Events waiting in a subscription's channel at most: back-pressure comes from HTTP/2.
pub const EVENTS_BUFFERED: usize = 1;
/// One event holds at most this many records and bytes (below tonic's default 4 MiB
/// message limit on the client, with room for a 1 MiB record over the budget).
pub const EVENT_RECORDS_MAX: usize = 1_000;
pub const EVENT_BYTES_MAX: usize = 2 * 1024 * 1024;
/// A parked subscription checks its leadership and its stream this often even when
/// nothing commits.
pub const PARK_CHECK: Duration = Duration::from_millis(1_000);

/// The stream of events a subscriber receives.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SubscribeEvent, Status>> + Send + 'static>>;

/// Validates the request, finds the start position on the leader, and starts the
/// subscription's task.
/// `slot` is held for the subscription's life (the node's bound on subscriptions).
pub async fn start(
    ctx: Arc<NodeContext>,
    req: SubscribeRequest,
    slot: OwnedSemaphorePermit,
    stop: DetReceiver<bool>,
) -> Result<EventStream, ServerError> {
    let now = now_ms();
    let stream = validate::stream_name("stream_name", &req.stream_name)?;
    let shard = router::parse_shard_id("shard_id", &req.shard_id)?;
    let start = validate::start_at(
        "starting_position",
        req.starting_position,
        &req.starting_sequence_number,
        req.timestamp_ms,
        now,
    )?;
    record_shard(stream.as_str(), Some(shard));
    shard_facts(&ctx, &stream, shard)?;
    let group = leading_group(&ctx, shard)?;
    let position = read::start_position(&group, start).await?;
    let (tx, rx) = mpsc::channel(EVENTS_BUFFERED);
    let span =
        info_span!("subscription", node_id = %ctx.node_id, stream = %stream, shard_id = %shard);
    let sub = Subscription {
        ctx,
        group,
        stream,
        shard,
        position,
        last_delivered: None,
        tx,
        _slot: slot,
        stop,
        stopped: false,
    };
    tokio::spawn(sub.run().instrument(span));
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (event, rx))
    })))
}

struct Subscription {
    ctx: Arc<NodeContext>,
    group: Arc<Group>,
    stream: StreamName,
    shard: ShardId,
    position: SeqNo,
    last_delivered: Option<SeqNo>,
    tx: mpsc::Sender<Result<SubscribeEvent, Status>>,
    _slot: OwnedSemaphorePermit,
    /// Set to `true` when the node shuts down (see [`super::SubscriptionsStop`]).
    stop: DetReceiver<bool>,
    stopped: bool,
}

/// What one step of a subscription decided.
enum Step {
    Continue,
    /// Wait for the commit point to pass the position; `stalled`: a read at the
    /// position made no progress although it may be committed, so wait for an entry
    /// committed after now instead (the commit point alone would wake it at once and
    /// the task would spin).
    Park {
        stalled: bool,
    },
    Stop,
}

impl Subscription {
    async fn run(mut self) {
        debug!(position = %self.position, "subscription started");
        let mut watch = self.group.watch_commit();
        loop {
            let step = match self.step().await {
                Ok(step) => step,
                Err(e) => return self.fail(e).await,
            };
            match step {
                Step::Continue => {}
                Step::Stop => return,
                Step::Park { stalled } => {
                    let mut next = self.position.log_index();
                    if stalled {
                        next = next.max(self.group.committed().next());
                    }
                    let wait = tokio::time::timeout(PARK_CHECK, watch.wait_for(next));
                    tokio::select! {
                        biased;
                        _ = self.tx.closed() => {
                            debug!("subscriber went away");
                            return;
                        }
                        changed = self.stop.wait_changed() => {
                            // Stopped, or the services are gone: `step` says so next.
                            self.stopped |= changed.is_err();
                        }
                        woke = wait => {
                            if let Ok(Err(_)) = woke {
                                return self.fail(self.unavailable("its replica on this node is shutting down")).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Ends the subscription with `e`; gives up on a subscriber that does not read.
    async fn fail(&self, e: ServerError) {
        debug!(error = %e, "subscription ends with an error");
        let _ = tokio::time::timeout(PARK_CHECK, self.tx.send(Err(e.into()))).await;
    }

    fn unavailable(&self, reason: &str) -> ServerError {
        ServerError::Unavailable {
            what: format!("shard {}", self.shard.kinesis_name()),
            reason: reason.into(),
            retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
        }
    }

    fn check_not_stopped(&self) -> Result<(), ServerError> {
        if self.stopped || *self.stop.borrow() {
            return Err(self
                .unavailable("this node is shutting down; subscribe again at the shard's leader"));
        }
        Ok(())
    }

    /// Sends one event unless the node stops meanwhile; `false` when the subscriber is
    /// gone.
    async fn deliver(&mut self, event: SubscribeEvent) -> Result<bool, ServerError> {
        let permit = tokio::select! {
            biased;
            changed = self.stop.wait_changed() => {
                self.stopped |= changed.is_err();
                self.check_not_stopped()?;
                // A change that is not a stop: wait for room as usual.
                self.tx.reserve().await
            }
            permit = self.tx.reserve() => permit,
        };
        match permit {
            Ok(permit) => {
                permit.send(Ok(event));
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Reads one page and sends it; says whether to go on, park or stop.
    async fn step(&mut self) -> Result<Step, ServerError> {
        self.check_not_stopped()?;
        let facts: ShardFacts = shard_facts(&self.ctx, &self.stream, self.shard)?;
        // Still the leader? Otherwise the client moves to the one that is.
        leading_group(&self.ctx, self.shard)?;
        let limits = PageLimits {
            records: EVENT_RECORDS_MAX,
            bytes: EVENT_BYTES_MAX,
        };
        let now = now_ms();
        let before = self.position;
        let expired_before = now.saturating_sub(facts.retention_ms);
        let page = read::read_page(
            &self.group,
            self.shard,
            self.position,
            &limits,
            expired_before,
        )
        .await?;
        self.position = page.next;
        let ended = shard_ended(facts.closed, facts.ending_seq, page.next, page.caught_up);
        if !page.records.is_empty() || ended {
            let tip = if page.caught_up {
                None
            } else {
                read::tip_timestamp(&self.group).await
            };
            if let Some(last) = page.records.last() {
                self.last_delivered = last.sequence_number.parse().ok();
            }
            let event = SubscribeEvent {
                millis_behind_latest: read::millis_behind(
                    page.caught_up,
                    page.last_timestamp_ms,
                    tip,
                    now,
                ),
                records: page.records,
                continuation_sequence_number: self
                    .last_delivered
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                child_shard_ids: if ended {
                    facts.children.iter().map(|c| c.kinesis_name()).collect()
                } else {
                    Vec::new()
                },
            };
            if !self.deliver(event).await? {
                debug!("subscriber went away");
                return Ok(Step::Stop);
            }
        }
        if ended {
            debug!("closed shard delivered to its end");
            return Ok(Step::Stop);
        }
        // Park when caught up, and also when no progress was possible (nothing to
        // read at the position yet), so that a subscription never spins.
        Ok(if page.caught_up {
            Step::Park { stalled: false }
        } else if self.position == before {
            Step::Park { stalled: true }
        } else {
            Step::Continue
        })
    }
}
