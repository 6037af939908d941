//! `runnel cluster status|nodes|drain|remove`.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use runnel_client::{ClusterStatus, NodeInfo, NodeStatus};
use runnel_types::NodeId;
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Doing};
use crate::k8s::{Decision, decide, fetch_replicas};
use crate::output::{Output, fields, table};
use crate::parse::{format_duration, format_rfc3339, ordinal_from_hostname, positive_duration};

/// How often `drain --wait` looks at the node.
const DRAIN_POLL: Duration = Duration::from_secs(2);

/// The cluster.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The cluster at a glance: nodes, placement health, moves in progress.
    Status,
    /// Every node with its status and load.
    Nodes,
    /// Move every replica and leadership off a node (before retiring it).
    Drain(DrainArgs),
    /// Forget a node that is drained (or dead and replaced).
    Remove {
        /// The node's id (`runnel cluster nodes` lists them).
        node_id: u64,
    },
}

/// `cluster drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node's id. Leave it out with --node-id-from-hostname.
    #[arg(required_unless_present = "node_id_from_hostname")]
    pub node_id: Option<u64>,
    /// Take the node id from this pod's hostname: ordinal + 1 (`runnel-2` is node 3).
    #[arg(long, env = "RUNNEL_NODE_ID_FROM_HOSTNAME", conflicts_with = "node_id")]
    pub node_id_from_hostname: bool,
    /// Wait until the node reports drained.
    #[arg(long, env = "RUNNEL_DRAIN_WAIT")]
    pub wait: bool,
    /// With --wait: give up (exit 1) after this long.
    #[arg(long, env = "RUNNEL_DRAIN_TIMEOUT", default_value = "3600s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// For the Helm chart's preStop hook: drain only if this StatefulSet was scaled
    /// down below this pod (its ordinal >= spec.replicas); else exit 0 at once. Needs
    /// --node-id-from-hostname.
    #[arg(long, env = "RUNNEL_ONLY_IF_SCALED_DOWN")]
    pub only_if_scaled_down: Option<String>,
}

/// Runs one `cluster` command.
pub async fn run(ctx: &mut Ctx<'_>, cmd: ClusterCmd) -> Result<(), CliError> {
    let admin = ctx.client.admin();
    match cmd {
        ClusterCmd::Status => {
            let s = admin
                .cluster_status()
                .await
                .doing(|| "reading the cluster status".into())?;
            match ctx.output {
                Output::Json => ctx.json(&status_json(&s)),
                Output::Table => ctx.write(&status_table(&s)),
            }
        }
        ClusterCmd::Nodes => {
            let nodes = admin.list_nodes().await.doing(|| "listing nodes".into())?;
            match ctx.output {
                Output::Json => ctx.json(&Value::Array(nodes.iter().map(node_json).collect())),
                Output::Table => ctx.write(&nodes_table(&nodes)),
            }
        }
        ClusterCmd::Drain(a) => drain(ctx, a).await,
        ClusterCmd::Remove { node_id } => {
            admin
                .remove_node(NodeId(node_id))
                .await
                .doing(|| format!("removing node {node_id}"))?;
            match ctx.output {
                Output::Json => ctx.json(&json!({ "removed": node_id })),
                Output::Table => ctx.write(&format!("node {node_id} removed\n")),
            }
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Refuses flag combinations clap cannot express.
pub fn validate(a: &DrainArgs) -> Result<(), CliError> {
    if a.only_if_scaled_down.is_some() && !a.node_id_from_hostname {
        return Err(CliError::Usage(
            "--only-if-scaled-down needs --node-id-from-hostname: it decides for this pod".into(),
        ));
    }
    Ok(())
}

async fn drain(ctx: &mut Ctx<'_>, a: DrainArgs) -> Result<(), CliError> {
    validate(&a)?;
    let node_id = match (a.node_id, a.node_id_from_hostname) {
        (Some(id), _) => id,
        (None, _) => {
            let host = hostname();
            let ordinal = ordinal_from_hostname(&host).map_err(CliError::Usage)?;
            if let Some(sts) = &a.only_if_scaled_down
                && let Decision::Skip(why) = decide(ordinal, sts, &fetch_replicas(sts))
            {
                eprintln!("runnel: {why}");
                return Ok(());
            }
            ordinal + 1
        }
    };
    if node_id == 0 {
        return Err(CliError::Usage("node ids start at 1".into()));
    }
    let admin = ctx.client.admin();
    let node = admin
        .drain_node(NodeId(node_id))
        .await
        .doing(|| format!("draining node {node_id}"))?;
    let node = if a.wait {
        wait_drained(ctx, node_id, a.timeout).await?
    } else {
        node
    };
    match ctx.output {
        Output::Json => ctx.json(&node_json(&node)),
        Output::Table => ctx.write(&format!(
            "node {node_id} is {} ({} replicas, {} leaderships left){}\n",
            status_name(node.status),
            node.replicas,
            node.leaders,
            if a.wait {
                ""
            } else {
                "; follow with `runnel cluster nodes`"
            }
        )),
    }
}

async fn wait_drained(
    ctx: &mut Ctx<'_>,
    node_id: u64,
    timeout: Duration,
) -> Result<NodeInfo, CliError> {
    let admin = ctx.client.admin();
    let started = Instant::now();
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    loop {
        let nodes = admin
            .list_nodes()
            .await
            .doing(|| format!("watching node {node_id} drain"))?;
        let node = nodes
            .into_iter()
            .find(|n| n.node_id == NodeId(node_id))
            .ok_or_else(|| CliError::Failed(format!("node {node_id} is no longer listed")))?;
        bar.set_message(format!(
            "node {node_id}: {}, {} replicas and {} leaderships left",
            status_name(node.status),
            node.replicas,
            node.leaders
        ));
        if matches!(node.status, NodeStatus::Drained | NodeStatus::Removed) {
            bar.finish_and_clear();
            return Ok(node);
        }
        if started.elapsed() >= timeout {
            bar.abandon();
            return Err(CliError::Failed(format!(
                "node {node_id} still holds {} replicas after {}: see `runnel cluster status` for stuck moves (a drain needs replication-factor other nodes with room)",
                node.replicas,
                format_duration(timeout)
            )));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// `up`, `draining`, ...
pub fn status_name(s: NodeStatus) -> String {
    match s {
        NodeStatus::Joining => "joining".into(),
        NodeStatus::Up => "up".into(),
        NodeStatus::Draining => "draining".into(),
        NodeStatus::Drained => "drained".into(),
        NodeStatus::Down => "down".into(),
        NodeStatus::Removed => "removed".into(),
        NodeStatus::Unknown(v) => format!("unknown({v})"),
    }
}

fn labels(n: &NodeInfo) -> String {
    let l: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if l.is_empty() {
        "-".into()
    } else {
        l.join(",")
    }
}

fn node_json(n: &NodeInfo) -> Value {
    json!({
        "node_id": n.node_id.0,
        "address": n.address,
        "status": status_name(n.status),
        "labels": n.labels,
        "replicas": n.replicas,
        "leaders": n.leaders,
        "meta_voter": n.meta_voter,
        "last_heartbeat": format_rfc3339(n.last_heartbeat_ms),
    })
}

/// The node table.
pub fn nodes_table(nodes: &[NodeInfo]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.0.to_string(),
                n.address.clone(),
                status_name(n.status),
                n.replicas.to_string(),
                n.leaders.to_string(),
                if n.meta_voter {
                    "yes".into()
                } else {
                    "no".into()
                },
                labels(n),
                format_rfc3339(n.last_heartbeat_ms),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ADDRESS",
            "STATUS",
            "REPLICAS",
            "LEADERS",
            "META VOTER",
            "LABELS",
            "LAST HEARTBEAT",
        ],
        &rows,
    )
}

fn status_json(s: &ClusterStatus) -> Value {
    json!({
        "cluster_id": s.cluster_id,
        "meta_leader": s.meta_leader.as_ref().map(|(id, a)| json!({"node_id": id.0, "address": a})),
        "streams": s.streams,
        "shards": s.shards,
        "under_replicated_shards": s.under_replicated_shards,
        "leaderless_shards": s.leaderless_shards,
        "nodes": s.nodes.iter().map(node_json).collect::<Vec<_>>(),
        "moves_in_progress": s.moves_in_progress.iter().map(|m| json!({
            "shard_id": m.shard_id,
            "add_node_id": m.add_node_id.0,
            "remove_node_id": m.remove_node_id.map(|n| n.0),
            "phase": m.phase,
            "started": format_rfc3339(m.started_ms),
        })).collect::<Vec<_>>(),
    })
}

/// The status page: a summary, the nodes, the moves.
pub fn status_table(s: &ClusterStatus) -> String {
    let leader = s.meta_leader.as_ref().map_or_else(
        || "none (electing?)".into(),
        |(id, a)| format!("node {} ({a})", id.0),
    );
    let up = s
        .nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Up)
        .count();
    let mut out = fields(&[
        ("cluster", s.cluster_id.clone()),
        ("meta leader", leader),
        ("nodes", format!("{} ({up} up)", s.nodes.len())),
        ("streams", s.streams.to_string()),
        ("shards", s.shards.to_string()),
        ("under-replicated", s.under_replicated_shards.to_string()),
        ("leaderless", s.leaderless_shards.to_string()),
        ("moves", s.moves_in_progress.len().to_string()),
    ]);
    out.push('\n');
    out.push_str(&nodes_table(&s.nodes));
    if !s.moves_in_progress.is_empty() {
        let rows: Vec<Vec<String>> = s
            .moves_in_progress
            .iter()
            .map(|m| {
                vec![
                    m.shard_id.clone(),
                    m.add_node_id.0.to_string(),
                    m.remove_node_id
                        .map_or_else(|| "-".into(), |n| n.0.to_string()),
                    m.phase.clone(),
                    format_rfc3339(m.started_ms),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["SHARD", "ADD", "REMOVE", "PHASE", "STARTED"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::Parser;

    #[test]
    fn drain_flags_of_the_helm_hook_parse() {
        let cli = Cli::try_parse_from([
            "runnel",
            "cluster",
            "drain",
            "--node-id-from-hostname",
            "--endpoint=127.0.0.1:7100",
            "--wait",
            "--timeout=3540s",
            "--only-if-scaled-down=runnel",
        ])
        .expect("the chart's command line parses");
        let crate::Command::Cluster(ClusterCmd::Drain(d)) = cli.command else {
            panic!("not a drain");
        };
        assert_eq!(d.timeout, Duration::from_secs(3540));
        assert_eq!(d.only_if_scaled_down.as_deref(), Some("runnel"));
        assert!(d.wait && d.node_id.is_none());
    }

    #[test]
    fn drain_needs_a_node() {
        assert!(Cli::try_parse_from(["runnel", "cluster", "drain"]).is_err());
        assert!(
            Cli::try_parse_from(["runnel", "cluster", "drain", "3", "--node-id-from-hostname"])
                .is_err()
        );
        let cli =
            Cli::try_parse_from(["runnel", "cluster", "drain", "3", "--only-if-scaled-down=x"])
                .expect("parses");
        let crate::Command::Cluster(ClusterCmd::Drain(d)) = cli.command else {
            panic!("not a drain");
        };
        assert!(validate(&d).is_err());
    }

    #[test]
    fn status_table_has_summary_and_nodes() {
        let s = ClusterStatus {
            cluster_id: "c1".into(),
            meta_leader: Some((NodeId(1), "h:1".into())),
            nodes: vec![NodeInfo {
                node_id: NodeId(1),
                address: "h:1".into(),
                status: NodeStatus::Up,
                labels: Default::default(),
                replicas: 4,
                leaders: 2,
                last_heartbeat_ms: 0,
                meta_voter: true,
            }],
            streams: 1,
            shards: 4,
            under_replicated_shards: 0,
            leaderless_shards: 0,
            moves_in_progress: vec![],
        };
        let t = status_table(&s);
        assert!(t.contains("meta leader       node 1 (h:1)"), "{t}");
        assert!(t.contains("1 (1 up)"), "{t}");
        assert!(t.lines().any(|l| l.starts_with("1   h:1")), "{t}");
        assert_eq!(status_json(&s)["nodes"][0]["status"], "up");
    }
}
