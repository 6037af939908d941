//! Retention: every hosted shard replica drops the prefix of its log older than its
//! stream's retention period.
//!
//! [`run_retention`] wakes every [`RETENTION_CHECK_INTERVAL`]; for each shard replica
//! this node hosts, it finds the first entry whose arrival time is within the retention
//! period ([`read::index_at_time`], a binary search) and calls `Group::trim` up to the
//! entry before it ([`trim_up_to`], pure). Each replica trims its own copy (leaders and
//! followers alike: the arrival times are in the replicated entries, so they agree); a
//! replica that later needs trimmed entries receives a snapshot. The segment log frees
//! whole segments; reads skip expired batches still on disk (see [`read`]), so an
//! expired record is never served, whatever the segment size.

use std::sync::Arc;
use std::time::Duration;

use runnel_meta::StreamStatus;
use runnel_raft::Group;
use runnel_types::{GroupId, LogIndex, ShardId};
use tracing::{Instrument, debug, info, info_span, warn};

use super::read;
use crate::context::{NodeContext, now_ms};
use crate::error::ServerError;

/// How often retention runs.
pub const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The last index to trim: everything before `first_kept` that is committed and still on
/// disk; `None` when nothing is to trim.
pub fn trim_up_to(
    first_on_disk: Option<LogIndex>,
    committed: LogIndex,
    first_kept: LogIndex,
) -> Option<LogIndex> {
    let first = first_on_disk?;
    let up_to = first_kept.prev()?.min(committed);
    (up_to >= first).then_some(up_to)
}

/// Runs retention forever, every [`RETENTION_CHECK_INTERVAL`] (the node aborts it on
/// shutdown).
pub async fn run_retention(ctx: Arc<NodeContext>) {
    run_retention_every(ctx, RETENTION_CHECK_INTERVAL).await
}

/// [`run_retention`] with another period (tests shorten it).
pub async fn run_retention_every(ctx: Arc<NodeContext>, period: Duration) {
    let span = info_span!("retention", node_id = %ctx.node_id);
    async move {
        loop {
            // A cluster bootstrapped with a short minimum retention (`--min-retention`)
            // checks as often as a quarter of it, so records outlive their retention
            // by at most about that much; otherwise every `period`.
            let floor = ctx.placement.read(|st| st.settings.retention_ms_min);
            let pass = period.min(Duration::from_millis((floor / 4).max(250)));
            tokio::time::sleep(pass).await;
            retain_once(&ctx).await;
        }
    }
    .instrument(span)
    .await
}

/// One pass over every hosted shard replica.
pub async fn retain_once(ctx: &NodeContext) {
    let now = now_ms();
    // Retention of each hosted shard of a stream that is not going away.
    let shards: Vec<(ShardId, u64)> = ctx.placement.read(|st| {
        st.shards
            .values()
            .filter_map(|s| {
                let stream = st.stream_of(s)?;
                (stream.status != StreamStatus::Deleting).then_some((s.id, stream.retention_ms))
            })
            .collect()
    });
    for (shard, retention_ms) in shards {
        let Ok(group) = ctx.registry.group(GroupId::from(shard)) else {
            continue;
        };
        let span = info_span!("retention_shard", shard_id = %shard);
        if let Err(e) = retain_shard(&group, now.saturating_sub(retention_ms))
            .instrument(span)
            .await
        {
            warn!(shard_id = %shard, error = %e, "retention failed; the next pass retries");
        }
    }
}

/// Trims `group`'s entries that arrived before `expired_before_ms`.
pub async fn retain_shard(
    group: &Group,
    expired_before_ms: u64,
) -> Result<Option<LogIndex>, ServerError> {
    let first = group.first_index();
    if first.is_none() {
        return Ok(None);
    }
    let first_kept = read::index_at_time(group, expired_before_ms).await?;
    let Some(up_to) = trim_up_to(first, group.committed(), first_kept) else {
        debug!("nothing older than the retention period");
        return Ok(None);
    };
    group.trim(up_to).await?;
    info!(up_to = %up_to, "trimmed entries older than the retention period");
    Ok(Some(up_to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_committed_expired_entries_still_on_disk() {
        let i = LogIndex;
        assert_eq!(trim_up_to(Some(i(1)), i(100), i(40)), Some(i(39)));
        assert_eq!(
            trim_up_to(Some(i(1)), i(100), i(1)),
            None,
            "nothing expired"
        );
        assert_eq!(
            trim_up_to(Some(i(40)), i(100), i(40)),
            None,
            "already trimmed"
        );
        assert_eq!(trim_up_to(Some(i(30)), i(100), i(31)), Some(i(30)));
        assert_eq!(
            trim_up_to(Some(i(1)), i(100), i(101)),
            Some(i(100)),
            "all expired"
        );
        assert_eq!(
            trim_up_to(Some(i(1)), i(50), i(101)),
            Some(i(50)),
            "never past the commit point"
        );
        assert_eq!(trim_up_to(None, i(100), i(50)), None, "empty log");
        assert_eq!(trim_up_to(Some(i(1)), i(0), i(0)), None);
    }
}
