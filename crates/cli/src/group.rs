//! `runnel group list|checkpoints`: read-only views of consumer groups.

use clap::Subcommand;
use runnel_client::ShardCheckpoint;
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Doing};
use crate::output::{Output, table};
use crate::parse::format_rfc3339;

/// Consumer groups.
#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// The consumer groups of a stream.
    List {
        /// The stream.
        stream: String,
    },
    /// A group's checkpoint and lease on every shard.
    Checkpoints {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
}

/// Runs one `group` command.
pub async fn run(ctx: &mut Ctx<'_>, cmd: GroupCmd) -> Result<(), CliError> {
    let admin = ctx.client.admin();
    match cmd {
        GroupCmd::List { stream } => {
            let groups = admin
                .list_groups(&stream)
                .await
                .doing(|| format!("listing the groups of {stream}"))?;
            match ctx.output {
                Output::Json => ctx.json(&json!(groups)),
                Output::Table => {
                    let rows: Vec<Vec<String>> = groups.into_iter().map(|g| vec![g]).collect();
                    ctx.write(&table(&["GROUP"], &rows))
                }
            }
        }
        GroupCmd::Checkpoints { stream, group } => {
            let cps = admin
                .get_checkpoints(&stream, &group)
                .await
                .doing(|| format!("reading the checkpoints of group {group} on {stream}"))?;
            match ctx.output {
                Output::Json => ctx.json(&Value::Array(cps.iter().map(checkpoint_json).collect())),
                Output::Table => ctx.write(&checkpoints_table(&cps)),
            }
        }
    }
}

fn checkpoint_json(c: &ShardCheckpoint) -> Value {
    json!({
        "shard_id": c.shard_id,
        "sequence_number": c.sequence_number,
        "owner_member_id": Some(&c.owner_member_id).filter(|o| !o.is_empty()),
        "lease_expires": (c.lease_expires_ms > 0).then(|| format_rfc3339(c.lease_expires_ms)),
        "shard_end": c.shard_end,
    })
}

/// One row per shard: checkpoint, owner, lease expiry, whether read to its end.
pub fn checkpoints_table(cps: &[ShardCheckpoint]) -> String {
    let rows: Vec<Vec<String>> = cps
        .iter()
        .map(|c| {
            vec![
                c.shard_id.clone(),
                c.sequence_number.clone().unwrap_or_else(|| "-".into()),
                Some(c.owner_member_id.clone())
                    .filter(|o| !o.is_empty())
                    .unwrap_or_else(|| "-".into()),
                if c.lease_expires_ms > 0 {
                    format_rfc3339(c.lease_expires_ms)
                } else {
                    "-".into()
                },
                if c.shard_end {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    table(
        &["SHARD", "CHECKPOINT", "OWNER", "LEASE EXPIRES", "SHARD END"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_show_dashes_for_nothing() {
        let t = checkpoints_table(&[ShardCheckpoint {
            shard_id: "shardId-000000000000".into(),
            sequence_number: None,
            owner_member_id: String::new(),
            lease_expires_ms: 0,
            shard_end: false,
        }]);
        let row: Vec<&str> = t
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(row, ["shardId-000000000000", "-", "-", "-", "no"], "{t}");
    }
}
