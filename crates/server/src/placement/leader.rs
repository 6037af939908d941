//! The meta leader's loop. Every `plan_interval_ms`, on whichever node leads the meta
//! group: fix the cluster identity if it is not yet, then run the pure planner
//! ([`runnel_meta::plan`], which also marks silent nodes down) on the applied state and
//! propose its actions in one `ApplyPlacement`. Each action is validated again when
//! applied, so a plan made from a state that changed meanwhile does no harm.

use std::sync::Arc;
use std::time::Duration;

use runnel_meta::{Command, CommandResult, plan};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Placement;
use crate::context::now_ms;
use crate::error::ServerError;

/// Runs forever (the node aborts it on shutdown).
pub async fn run(placement: Arc<Placement>) {
    let span = info_span!("meta_leader", node_id = %placement.node_id());
    async move {
        let period = Duration::from_millis(placement.config.plan_interval_ms);
        loop {
            tokio::time::sleep(period).await;
            if !placement.is_meta_leader() {
                continue;
            }
            if let Err(e) = tick(&placement).await {
                debug!(error = %e, "planning step failed; next period retries");
            }
        }
    }
    .instrument(span)
    .await
}

async fn tick(placement: &Placement) -> Result<(), ServerError> {
    if placement.read(|s| s.identity.is_none()) {
        init_cluster(placement).await?;
    }
    let now = now_ms();
    let actions = placement.read(|s| plan(s, now, &placement.config.planner));
    if actions.is_empty() {
        return Ok(());
    }
    let count = actions.len();
    debug!(count, ?actions, "proposing placement actions");
    let result = placement
        .propose(Command::ApplyPlacement {
            now_ms: now,
            actions,
        })
        .await?;
    if let CommandResult::Placement { applied, rejected } = result
        && !rejected.is_empty()
    {
        warn!(
            applied,
            ?rejected,
            "some placement actions were rejected (planned from a stale state)"
        );
    }
    Ok(())
}

/// Chooses the cluster id and iterator key (random) and proposes them; the first such
/// command in the log wins.
async fn init_cluster(placement: &Placement) -> Result<(), ServerError> {
    let id: [u8; 8] = rand::random();
    let cluster_id = id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let iterator_key: [u8; 16] = rand::random();
    placement
        .propose(Command::InitCluster {
            cluster_id: cluster_id.clone(),
            iterator_key,
        })
        .await?;
    info!(cluster_id = %placement.cluster_id(), proposed = %cluster_id, "cluster identity set");
    Ok(())
}
