//! The applier: on every node, follows the meta group's commit point and applies the
//! committed commands to this node's [`MetaState`](runnel_meta::MetaState), in log
//! order, one record (one command) at a time.
//!
//! A record that does not decode is skipped with an error log on every node alike (the
//! state stays identical everywhere, since every node skips the same record); it can
//! only come from a node of a newer version, which the upgrade procedure must avoid.
//!
//! Trimming: after applying a `SnapshotState { up_to, .. }` the applier trims this
//! node's copy of the meta log up to `up_to` (in the background, one trim at a time).
//! When the log starts after what this node has applied (`Trimmed`), it rebuilds: it
//! reads from the log's first entry, holding the commands back, until a snapshot with
//! `up_to` at or after the entry before the first; it loads that state and applies the
//! held-back commands after `up_to` (the snapshot was written a little after the state
//! it holds, so a few entries in between are in both the log and not the snapshot).

use std::sync::Arc;

use runnel_meta::Command;
use runnel_raft::Group;
use runnel_types::LogIndex;
use runnel_types::record::decode_batch;
use tracing::{Instrument, error, info, info_span, warn};

use super::{Placement, decode_command};

/// Bytes of meta log read per step.
pub const APPLY_READ_BYTES_MAX: usize = 1 << 20;
/// Commands held back while rebuilding from a snapshot. Only the entries written while
/// the snapshot was being proposed lie between its `up_to` and itself, so this is far
/// more than needed; past it the held-back commands are dropped and a later snapshot
/// must cover them.
pub const REBUILD_HELD_COMMANDS_MAX: usize = 100_000;

/// Where the applier is: the next entry to read, and, while rebuilding from a
/// snapshot, the first entry of the log and the commands read since.
struct Cursor {
    next: LogIndex,
    rebuilding: Option<Rebuild>,
}

struct Rebuild {
    /// The log's first entry when the rebuild started (or after held commands were
    /// dropped): a usable snapshot covers everything before it.
    from: LogIndex,
    held: Vec<(LogIndex, u32, Command)>,
}

/// Runs until the meta group shuts down.
pub async fn run(placement: Arc<Placement>, group: Arc<Group>) {
    let span = info_span!("meta_applier", node_id = %placement.node_id());
    async move {
        let mut watch = group.watch_commit();
        let mut cursor = Cursor {
            next: placement.applied_index().next(),
            rebuilding: None,
        };
        loop {
            if watch.wait_for(cursor.next).await.is_err() {
                info!("meta group stopped; applier ends");
                return;
            }
            if let Err(e) = apply_available(&placement, &group, &mut cursor).await {
                error!(error = %e, next = %cursor.next, "reading the meta log failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Applies every committed entry from `cursor.next` on.
async fn apply_available(
    placement: &Arc<Placement>,
    group: &Arc<Group>,
    cursor: &mut Cursor,
) -> Result<(), runnel_raft::Error> {
    loop {
        // Sampled before the read, which then reads at least this far (it only grows).
        let committed = group.committed();
        let read = match group
            .read_committed(cursor.next, APPLY_READ_BYTES_MAX)
            .await
        {
            Err(runnel_raft::Error::Trimmed { first, .. }) => {
                warn!(applied = %placement.applied_index(), first = %first,
                    "the meta log starts after the applied state; rebuilding from a snapshot in it");
                cursor.next = first;
                cursor.rebuilding = Some(Rebuild {
                    from: first,
                    held: Vec::new(),
                });
                continue;
            }
            other => other?,
        };
        if read.next <= cursor.next {
            if committed >= cursor.next {
                // Committed here but not in the log: only a log that lost committed
                // entries gets here. Returning Ok would spin (`run` waits for an index
                // that is already committed), taking the runtime thread for good; an
                // error is logged and retried after a pause.
                return Err(runnel_raft::Error::Corrupt {
                    what: "meta log",
                    detail: format!(
                        "entry {} is committed (commit point {committed}) but not in the log",
                        cursor.next
                    ),
                });
            }
            return Ok(());
        }
        for batch in read.batches {
            apply_batch(placement, group, cursor, batch.index, &batch.batch);
        }
        cursor.next = read.next;
        if cursor.rebuilding.is_none()
            && let Some(done) = cursor.next.prev()
        {
            placement.advance(done);
        }
    }
}

fn apply_batch(
    placement: &Arc<Placement>,
    group: &Arc<Group>,
    cursor: &mut Cursor,
    index: LogIndex,
    batch: &bytes::Bytes,
) {
    let records = match decode_batch(batch) {
        Ok(r) => r,
        Err(e) => {
            error!(index = %index, error = %e, "meta log entry does not decode; skipped");
            return;
        }
    };
    for (slot, record) in records.into_iter().enumerate() {
        let slot = slot as u32;
        match decode_command(&record.data) {
            Ok(cmd) => step(placement, group, cursor, index, slot, cmd),
            Err(e) => {
                error!(index = %index, slot, error = %e, "meta command does not decode; skipped")
            }
        }
    }
}

/// One command: applied, or held back (or loaded) while rebuilding.
fn step(
    placement: &Arc<Placement>,
    group: &Arc<Group>,
    cursor: &mut Cursor,
    index: LogIndex,
    slot: u32,
    cmd: Command,
) {
    let snapshot_up_to = match &cmd {
        Command::SnapshotState { up_to, .. } => Some(*up_to),
        _ => None,
    };
    if let Some(rebuild) = &mut cursor.rebuilding {
        let covers = snapshot_up_to.is_some_and(|up_to| up_to.next() >= rebuild.from);
        if !covers {
            if rebuild.held.len() >= REBUILD_HELD_COMMANDS_MAX {
                // A snapshot that covers this entry will do instead.
                warn!(index = %index, "too many commands held back before a snapshot; dropping them");
                rebuild.held.clear();
                rebuild.from = index.next();
                return;
            }
            rebuild.held.push((index, slot, cmd));
            return;
        }
        let held = std::mem::take(&mut rebuild.held);
        cursor.rebuilding = None;
        let Command::SnapshotState { up_to, state } = cmd else {
            unreachable!("`covers` holds only for a snapshot");
        };
        info!(up_to = %up_to, at = %index, "meta state loaded from a snapshot");
        placement.load_snapshot(up_to, *state);
        for (i, s, c) in held.into_iter().filter(|(i, _, _)| *i > up_to) {
            placement.apply_one(i, s, c);
        }
        // The snapshot entry itself applies as usual (it changes nothing).
        placement.apply_one(
            index,
            slot,
            Command::SnapshotState {
                up_to,
                state: Box::default(),
            },
        );
        return;
    }
    placement.apply_one(index, slot, cmd);
    if let Some(up_to) = snapshot_up_to {
        placement.snapshot_applied(up_to);
        trim(placement, group, up_to);
    }
}

/// Trims this node's copy of the meta log up to `up_to`, in the background.
fn trim(placement: &Arc<Placement>, group: &Arc<Group>, up_to: LogIndex) {
    if group.first_index().is_some_and(|first| first > up_to) || !placement.start_trim() {
        return;
    }
    let (placement, group) = (placement.clone(), group.clone());
    let span = info_span!("meta_trim", node_id = %placement.node_id(), up_to = %up_to);
    tokio::spawn(
        async move {
            match group.trim(up_to).await {
                Ok(()) => info!(first = ?group.first_index(), "meta log trimmed"),
                Err(e) => {
                    warn!(error = %e, "trimming the meta log failed; the next snapshot retries")
                }
            }
            placement.end_trim();
        }
        .instrument(span),
    );
}
