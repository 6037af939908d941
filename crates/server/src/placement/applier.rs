//! The applier: on every node, follows the meta group's commit point and applies the
//! committed commands to this node's [`MetaState`](runnel_meta::MetaState), in log
//! order, one record (one command) at a time.
//!
//! A record that does not decode is skipped with an error log on every node alike (the
//! state stays identical everywhere, since every node skips the same record); it can
//! only come from a node of a newer version, which the upgrade procedure must avoid.

use std::sync::Arc;

use runnel_raft::Group;
use runnel_types::LogIndex;
use runnel_types::record::decode_batch;
use tracing::{Instrument, error, info, info_span};

use super::{Placement, decode_command};

/// Bytes of meta log read per step.
pub const APPLY_READ_BYTES_MAX: usize = 1 << 20;

/// Runs until the meta group shuts down.
pub async fn run(placement: Arc<Placement>, group: Arc<Group>) {
    let span = info_span!("meta_applier", node_id = %placement.node_id());
    async move {
        let mut watch = group.watch_commit();
        let mut next = placement.applied_index().next();
        loop {
            if watch.wait_for(next).await.is_err() {
                info!("meta group stopped; applier ends");
                return;
            }
            match apply_available(&placement, &group, next).await {
                Ok(n) => next = n,
                Err(e) => {
                    error!(error = %e, next = %next, "reading the meta log failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Applies every committed entry from `from` on; returns the next index to read.
async fn apply_available(
    placement: &Placement,
    group: &Group,
    mut from: LogIndex,
) -> Result<LogIndex, runnel_raft::Error> {
    loop {
        let read = group.read_committed(from, APPLY_READ_BYTES_MAX).await?;
        if read.next <= from {
            return Ok(from);
        }
        for batch in read.batches {
            apply_batch(placement, batch.index, &batch.batch);
        }
        from = read.next;
        if let Some(done) = from.prev() {
            placement.advance(done);
        }
    }
}

fn apply_batch(placement: &Placement, index: LogIndex, batch: &bytes::Bytes) {
    let records = match decode_batch(batch) {
        Ok(r) => r,
        Err(e) => {
            error!(index = %index, error = %e, "meta log entry does not decode; skipped");
            return;
        }
    };
    for (slot, record) in records.into_iter().enumerate() {
        match decode_command(&record.data) {
            Ok(cmd) => placement.apply_one(index, slot as u32, cmd),
            Err(e) => {
                error!(index = %index, slot, error = %e, "meta command does not decode; skipped")
            }
        }
    }
}
