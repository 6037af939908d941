//! `runnel stream create|list|describe|delete|retention`.

use std::time::Duration;

use clap::{Args, Subcommand};
use futures::future::join_all;
use runnel_client::{CreateStream, ShardInfo, StreamDescription, StreamStatus};
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Doing};
use crate::output::{Output, fields, table};
use crate::parse::{format_duration, format_rfc3339, positive_duration};

/// Streams.
#[derive(Debug, Subcommand)]
pub enum StreamCmd {
    /// Create a stream of N shards and wait until it is ACTIVE.
    Create(CreateArgs),
    /// List the streams, with status and shard counts.
    List,
    /// Show a stream's status and every shard: hash range, parents, open or closed,
    /// leader and replicas.
    Describe {
        /// The stream's name.
        name: String,
    },
    /// Delete a stream and every record in it.
    Delete {
        /// The stream's name.
        name: String,
    },
    /// Set how long a stream keeps its records (90s, 15m, 24h, 7d).
    Retention {
        /// The stream's name.
        name: String,
        /// The new retention period.
        #[arg(value_parser = positive_duration)]
        retention: Duration,
    },
}

/// `stream create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The stream's name (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// Number of shards (1 to 4096). Each shard takes writes in parallel.
    #[arg(long, env = "RUNNEL_SHARDS")]
    pub shards: u32,
    /// Replicas per shard; the cluster's default (3, or fewer nodes) when left out.
    #[arg(long, env = "RUNNEL_REPLICATION")]
    pub replication: Option<u32>,
    /// How long records are kept (90s, 15m, 24h, 7d); 24h when left out.
    #[arg(long, env = "RUNNEL_RETENTION", value_parser = positive_duration)]
    pub retention: Option<Duration>,
    /// Return at once instead of waiting for the stream to become ACTIVE.
    #[arg(long, env = "RUNNEL_NO_WAIT")]
    pub no_wait: bool,
}

/// How long `stream create` waits for ACTIVE.
const ACTIVE_WAIT: Duration = Duration::from_secs(60);

/// Runs one `stream` command.
pub async fn run(ctx: &mut Ctx<'_>, cmd: StreamCmd) -> Result<(), CliError> {
    let admin = ctx.client.admin();
    match cmd {
        StreamCmd::Create(a) => create(ctx, a).await,
        StreamCmd::List => list(ctx).await,
        StreamCmd::Describe { name } => {
            let d = admin
                .describe_stream(&name)
                .await
                .doing(|| format!("describing stream {name}"))?;
            show(ctx, &d)
        }
        StreamCmd::Delete { name } => {
            admin
                .delete_stream(&name)
                .await
                .doing(|| format!("deleting stream {name}"))?;
            match ctx.output {
                Output::Json => ctx.json(&json!({ "deleted": name })),
                Output::Table => ctx.write(&format!("stream {name} deleted\n")),
            }
        }
        StreamCmd::Retention { name, retention } => {
            let d = admin
                .update_retention(&name, retention)
                .await
                .doing(|| format!("setting the retention of {name}"))?;
            show(ctx, &d)
        }
    }
}

async fn create(ctx: &mut Ctx<'_>, a: CreateArgs) -> Result<(), CliError> {
    let admin = ctx.client.admin();
    let options = CreateStream {
        shard_count: a.shards,
        replication_factor: a.replication,
        retention: a.retention,
    };
    let name = a.name;
    let mut d = admin
        .create_stream(&name, options)
        .await
        .doing(|| format!("creating stream {name}"))?;
    if !a.no_wait && d.status != StreamStatus::Active {
        d = wait_active(&ctx.client, &name, ACTIVE_WAIT).await?;
    }
    show(ctx, &d)
}

/// How long a just-created stream may be unknown to the node asked (its placement
/// state may lag the node that took the create by a moment).
const NOT_FOUND_GRACE: Duration = Duration::from_secs(10);

/// Waits until `name` is ACTIVE, for at most `timeout`. A NotFound in the first
/// seconds is taken as "not there yet" (another node answered before it learnt of the
/// stream), not as an error.
pub async fn wait_active(
    client: &runnel_client::Client,
    name: &str,
    timeout: Duration,
) -> Result<StreamDescription, CliError> {
    let admin = client.admin();
    let started = std::time::Instant::now();
    loop {
        match admin.wait_until_active(name, timeout).await {
            Err(runnel_client::ClientError::NotFound { .. })
                if started.elapsed() < NOT_FOUND_GRACE =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r.doing(|| format!("waiting for stream {name} to become ACTIVE")),
        }
    }
}

async fn list(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let admin = ctx.client.admin();
    let names = admin
        .list_streams()
        .await
        .doing(|| "listing streams".into())?;
    // A stream deleted between the two calls shows without details.
    let described = join_all(names.iter().map(|n| admin.describe_stream(n))).await;
    let streams: Vec<(String, Option<StreamDescription>)> = names
        .into_iter()
        .zip(described.into_iter().map(Result::ok))
        .collect();
    match ctx.output {
        Output::Json => {
            let v: Vec<Value> = streams
                .iter()
                .map(|(n, d)| {
                    d.as_ref()
                        .map_or_else(|| json!({ "name": n }), summary_json)
                })
                .collect();
            ctx.json(&Value::Array(v))
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = streams.iter().map(|(n, d)| list_row(n, d)).collect();
            ctx.write(&table(
                &["NAME", "STATUS", "SHARDS", "REPLICATION", "RETENTION"],
                &rows,
            ))
        }
    }
}

fn list_row(name: &str, d: &Option<StreamDescription>) -> Vec<String> {
    match d {
        Some(d) => vec![
            name.to_string(),
            status_name(d.status),
            format!("{} open / {} total", d.open_shard_count, d.shards.len()),
            d.replication_factor.to_string(),
            format_duration(d.retention),
        ],
        None => vec![
            name.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
    }
}

/// CREATING, ACTIVE, DELETING.
pub fn status_name(s: StreamStatus) -> String {
    match s {
        StreamStatus::Creating => "CREATING".into(),
        StreamStatus::Active => "ACTIVE".into(),
        StreamStatus::Deleting => "DELETING".into(),
        StreamStatus::Unknown(v) => format!("UNKNOWN({v})"),
    }
}

fn summary_json(d: &StreamDescription) -> Value {
    json!({
        "name": d.name,
        "status": status_name(d.status),
        "replication_factor": d.replication_factor,
        "retention": format_duration(d.retention),
        "retention_ms": d.retention.as_millis() as u64,
        "created": format_rfc3339(d.created_ms),
        "open_shard_count": d.open_shard_count,
        "shard_count": d.shards.len(),
    })
}

/// The JSON of a described stream: the summary and every shard.
pub fn description_json(d: &StreamDescription) -> Value {
    let mut v = summary_json(d);
    v["shards"] = Value::Array(d.shards.iter().map(shard_json).collect());
    v
}

fn shard_json(s: &ShardInfo) -> Value {
    json!({
        "shard_id": s.shard_id,
        "starting_hash_key": s.range.start.to_string(),
        "ending_hash_key": s.range.end.to_string(),
        "parents": s.parents,
        "open": s.open,
        "starting_sequence_number": s.starting_sequence_number,
        "ending_sequence_number": s.ending_sequence_number,
        "leader": s.leader,
        "replicas": s.replicas.iter().map(|r| json!({
            "node_id": r.node_id, "address": r.address, "role": r.role,
        })).collect::<Vec<_>>(),
    })
}

/// The table form of a described stream.
pub fn description_table(d: &StreamDescription) -> String {
    let head = fields(&[
        ("stream", d.name.clone()),
        ("status", status_name(d.status)),
        ("replication", d.replication_factor.to_string()),
        ("retention", format_duration(d.retention)),
        ("created", format_rfc3339(d.created_ms)),
        (
            "shards",
            format!("{} open, {} total", d.open_shard_count, d.shards.len()),
        ),
    ]);
    let rows: Vec<Vec<String>> = d.shards.iter().map(shard_row).collect();
    let shards = table(
        &[
            "SHARD",
            "HASH RANGE",
            "PARENTS",
            "STATE",
            "LEADER",
            "REPLICAS",
        ],
        &rows,
    );
    format!("{head}\n{shards}")
}

fn shard_row(s: &ShardInfo) -> Vec<String> {
    let replicas: Vec<String> = s
        .replicas
        .iter()
        .map(|r| {
            if r.role.is_empty() || r.role == "voter" {
                r.node_id.to_string()
            } else {
                format!("{}({})", r.node_id, r.role)
            }
        })
        .collect();
    vec![
        s.shard_id.clone(),
        s.range.to_string(),
        if s.parents.is_empty() {
            "-".into()
        } else {
            s.parents.join(",")
        },
        if s.open {
            "open".into()
        } else {
            "closed".into()
        },
        s.leader.clone().unwrap_or_else(|| "none".into()),
        if replicas.is_empty() {
            "-".into()
        } else {
            replicas.join(",")
        },
    ]
}

fn show(ctx: &mut Ctx<'_>, d: &StreamDescription) -> Result<(), CliError> {
    match ctx.output {
        Output::Json => ctx.json(&description_json(d)),
        Output::Table => ctx.write(&description_table(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::router::Replica;
    use runnel_types::HashRange;

    fn description() -> StreamDescription {
        let shard = |id: &str, start: u128, end: u128, open: bool, parents: &[&str]| ShardInfo {
            shard_id: id.into(),
            range: HashRange::new(start, end).expect("valid range"),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            open,
            starting_sequence_number: None,
            ending_sequence_number: None,
            leader: open.then(|| "127.0.0.1:7100".to_string()),
            replicas: vec![
                Replica {
                    node_id: 1,
                    address: "a".into(),
                    role: "voter".into(),
                },
                Replica {
                    node_id: 4,
                    address: "d".into(),
                    role: "learner".into(),
                },
            ],
        };
        StreamDescription {
            name: "demo".into(),
            status: StreamStatus::Active,
            replication_factor: 3,
            retention: Duration::from_secs(86_400),
            created_ms: 0,
            open_shard_count: 2,
            shards: vec![
                shard("shardId-000000000000", 0, u128::MAX, false, &[]),
                shard(
                    "shardId-000000000001",
                    0,
                    9,
                    true,
                    &["shardId-000000000000"],
                ),
                shard(
                    "shardId-000000000002",
                    10,
                    u128::MAX,
                    true,
                    &["shardId-000000000000"],
                ),
            ],
        }
    }

    #[test]
    fn describe_table_shows_status_and_every_shard() {
        let t = description_table(&description());
        assert!(t.contains("status       ACTIVE"), "{t}");
        assert!(t.contains("retention    24h"), "{t}");
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("shardId-")).collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].contains("closed") && lines[0].contains("none"));
        assert!(lines[1].contains("[0, 9]") && lines[1].contains("shardId-000000000000"));
        assert!(lines[1].contains("1,4(learner)"));
    }

    #[test]
    fn describe_json_carries_exact_hash_keys() {
        let v = description_json(&description());
        assert_eq!(v["status"], "ACTIVE");
        assert_eq!(v["retention_ms"], 86_400_000);
        assert_eq!(v["shards"][2]["ending_hash_key"], u128::MAX.to_string());
        assert_eq!(v["shards"][1]["parents"][0], "shardId-000000000000");
        assert_eq!(v["shards"][0]["leader"], Value::Null);
    }
}
