//! The meta leader's loop. Every `plan_interval_ms`, on whichever node leads the meta
//! group: fix the cluster identity if it is not yet, then run the pure planner
//! ([`runnel_meta::plan`], which also marks silent nodes down, but only once this node
//! has led for a heartbeat timeout: [`planner_config`]) on the applied state and
//! propose its actions in one `ApplyPlacement`. Each action is validated again when
//! applied, so a plan made from a state that changed meanwhile does no harm.

use std::sync::Arc;
use std::time::Duration;

use runnel_meta::{Command, CommandResult, PlannerConfig, plan};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Placement;
use crate::context::now_ms;
use crate::error::ServerError;

/// Runs forever (the node aborts it on shutdown).
pub async fn run(placement: Arc<Placement>) {
    let span = info_span!("meta_leader", node_id = %placement.node_id());
    async move {
        let period = Duration::from_millis(placement.config.plan_interval_ms);
        let mut leading_since_ms = None;
        loop {
            tokio::time::sleep(period).await;
            if !placement.is_meta_leader() {
                leading_since_ms = None;
                continue;
            }
            let since = *leading_since_ms.get_or_insert_with(now_ms);
            if let Err(e) = tick(&placement, since).await {
                debug!(error = %e, "planning step failed; next period retries");
            }
        }
    }
    .instrument(span)
    .await
}

async fn tick(placement: &Placement, leading_since_ms: u64) -> Result<(), ServerError> {
    if placement.read(|s| s.identity.is_none()) {
        init_cluster(placement).await?;
    }
    snapshot_if_due(placement).await?;
    let now = now_ms();
    let config = planner_config(&placement.config.planner, leading_since_ms, now);
    let actions = placement.read(|s| plan(s, now, &config));
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

/// The planner's configuration for a leader that has led since `leading_since_ms`.
/// Until it has led for a full heartbeat timeout it marks no node down: heartbeats
/// sent while the meta group had no leader (or to the previous one) were not applied,
/// so every node looks silent right after an election. Marking them down then
/// cancelled moves and started repairs for nodes that were fine. Pure.
pub fn planner_config(base: &PlannerConfig, leading_since_ms: u64, now_ms: u64) -> PlannerConfig {
    let mut config = base.clone();
    if now_ms < leading_since_ms.saturating_add(base.heartbeat_timeout_ms) {
        config.heartbeat_timeout_ms = u64::MAX;
    }
    config
}

#[cfg(test)]
mod tests {
    use runnel_meta::{Command, MetaState, NodeLabels, NodeLoad, nodes_to_mark_down};
    use runnel_types::NodeId;

    use super::*;

    #[test]
    fn a_new_meta_leader_marks_no_node_down_for_a_heartbeat_timeout() {
        let mut s = MetaState::default();
        let register = Command::RegisterNode {
            node: NodeId(1),
            address: "n1:7100".into(),
            labels: NodeLabels::default(),
            capacity_weight: 100,
            now_ms: 1_000,
        };
        runnel_meta::apply(&mut s, register).expect("registers");
        let beat = Command::Heartbeat {
            node: NodeId(1),
            now_ms: 1_000,
            load: NodeLoad::default(),
            leaders: vec![],
        };
        runnel_meta::apply(&mut s, beat).expect("heartbeat");
        let base = PlannerConfig {
            heartbeat_timeout_ms: 2_000,
            ..PlannerConfig::default()
        };
        // Elected at 10 s: the node's last applied heartbeat (1 s) is stale, but the
        // node may well have sent newer ones while the meta group had no leader.
        let early = planner_config(&base, 10_000, 11_999);
        assert!(nodes_to_mark_down(&s, 11_999, early.heartbeat_timeout_ms).is_empty());
        let later = planner_config(&base, 10_000, 12_000);
        assert_eq!(
            nodes_to_mark_down(&s, 12_000, later.heartbeat_timeout_ms),
            vec![NodeId(1)]
        );
    }
}

/// Writes the applied state into the meta log once enough entries were applied since
/// the last snapshot, so that every node can trim its copy of the log (see
/// [`super::applier`]).
async fn snapshot_if_due(placement: &Placement) -> Result<(), ServerError> {
    let Some((up_to, state)) = placement.snapshot_due() else {
        return Ok(());
    };
    let shards = state.shards.len();
    placement
        .propose(Command::SnapshotState {
            up_to,
            state: Box::new(state),
        })
        .await?;
    info!(up_to = %up_to, shards, "meta state snapshot written");
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
            retention_ms_min: placement.proposed_retention_ms_min(),
        })
        .await?;
    info!(cluster_id = %placement.cluster_id(), proposed = %cluster_id, "cluster identity set");
    Ok(())
}
