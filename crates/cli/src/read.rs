//! `runnel get` and `runnel tail`: read records from one shard (`--shard`) or from every
//! shard (parents before children, through the SDK's `StreamReader`), from a position
//! (`--from`), until caught up (`get`) or forever (`tail`, `--follow`), at most `--limit`.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Args;
use runnel_client::{ConsumerConfig, RecordBatch, StartPosition};

use crate::Ctx;
use crate::error::{CliError, Doing};
use crate::output::{Output, record_header, record_json, record_line};
use crate::parse::position;

/// Pause between polls of a caught-up shard while following.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// `get` or `tail`: the same flags, different defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// From `trim-horizon`, stops when caught up unless `--follow`.
    Get,
    /// From `latest`, always follows.
    Tail,
}

/// `get` / `tail`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream to read.
    pub stream: String,
    /// Where to start: trim-horizon (oldest retained), latest (only new records),
    /// at-seq=N, after-seq=N (these two need --shard), or at-time=T (T as RFC 3339,
    /// 2024-05-01T12:00:00Z, or epoch milliseconds). Default: trim-horizon for `get`,
    /// latest for `tail`.
    #[arg(long, env = "RUNNEL_FROM", value_parser = position)]
    pub from: Option<StartPosition>,
    /// Read only this shard (`shardId-000000000001`, or just 1). Default: every shard,
    /// parents before children.
    #[arg(long, env = "RUNNEL_SHARD")]
    pub shard: Option<String>,
    /// Keep waiting for new records instead of stopping when caught up (`tail` always
    /// follows). Ctrl-C stops.
    #[arg(long, short = 'f', env = "RUNNEL_FOLLOW")]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n', env = "RUNNEL_LIMIT")]
    pub limit: Option<u64>,
}

/// `1` → `shardId-000000000001`; a full id is kept.
pub fn shard_id(s: &str) -> String {
    match s.trim().parse::<u64>() {
        Ok(n) => format!("shardId-{n:012}"),
        Err(_) => s.trim().to_string(),
    }
}

/// The options of one read, resolved from the flags and the mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Where to start.
    pub from: StartPosition,
    /// One shard, or all.
    pub shard: Option<String>,
    /// Whether to keep going once caught up.
    pub follow: bool,
    /// At most this many records.
    pub limit: Option<u64>,
}

/// Resolves the flags: defaults per mode, and the refusal of a sequence-number start
/// without a shard (sequence numbers are per shard).
pub fn plan(args: &ReadArgs, mode: Mode) -> Result<Plan, CliError> {
    let from = args.from.unwrap_or(match mode {
        Mode::Get => StartPosition::TrimHorizon,
        Mode::Tail => StartPosition::Latest,
    });
    let per_shard = matches!(
        from,
        StartPosition::AtSequenceNumber(_) | StartPosition::AfterSequenceNumber(_)
    );
    if per_shard && args.shard.is_none() {
        return Err(CliError::Usage(
            "--from at-seq / after-seq needs --shard: sequence numbers are per shard (both are printed by `runnel put` and `runnel get`)".into(),
        ));
    }
    if let StartPosition::AtTimestamp(ms) = from {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if ms > now {
            return Err(CliError::Usage(format!(
                "--from at-time={ms} is in the future; use --from latest to read new records"
            )));
        }
    }
    if args.limit == Some(0) {
        return Err(CliError::Usage("--limit must be at least 1".into()));
    }
    Ok(Plan {
        from,
        shard: args.shard.as_deref().map(shard_id),
        follow: args.follow || mode == Mode::Tail,
        limit: args.limit,
    })
}

/// Runs `get` or `tail`.
pub async fn run(ctx: &mut Ctx<'_>, args: ReadArgs, mode: Mode) -> Result<(), CliError> {
    let plan = plan(&args, mode)?;
    let stream = args.stream;
    let map = ctx
        .client
        .shard_map(&stream)
        .await
        .doing(|| format!("looking up stream {stream}"))?;
    if let Some(s) = &plan.shard
        && map.get(s).is_none()
    {
        let known: Vec<String> = map.shards().map(|s| s.shard_id.clone()).collect();
        return Err(CliError::Usage(format!(
            "stream {stream} has no shard {s}; its shards: {}",
            known.join(", ")
        )));
    }
    let config = ConsumerConfig {
        idle_poll_interval: FOLLOW_POLL,
        ..ConsumerConfig::default()
    };
    let consumer = ctx.client.consumer(&stream, config);
    let mut printer = Printer::new(ctx.output, plan.limit);
    match &plan.shard {
        Some(shard) => {
            let mut reader = consumer.read_shard(shard, plan.from);
            loop {
                let batch = reader
                    .next()
                    .await
                    .doing(|| format!("reading {stream}/{shard}"))?;
                let Some(batch) = batch else { return Ok(()) };
                let empty = batch.records.is_empty();
                if printer.print(ctx, &batch)? || (empty && !plan.follow) {
                    return Ok(());
                }
            }
        }
        None => {
            let mut reader = consumer
                .read_stream(plan.from)
                .await
                .doing(|| format!("reading {stream}"))?;
            let mut caught_up = BTreeSet::new();
            loop {
                let batch = reader.next().await.doing(|| format!("reading {stream}"))?;
                let Some(batch) = batch else { return Ok(()) };
                if batch.records.is_empty() {
                    caught_up.insert(batch.shard_id.clone());
                } else {
                    caught_up.remove(&batch.shard_id);
                }
                if printer.print(ctx, &batch)? {
                    return Ok(());
                }
                let active = reader.active_shards();
                if !plan.follow && active.iter().all(|s| caught_up.contains(s)) {
                    return Ok(());
                }
            }
        }
    }
}

/// Prints records as they come and counts them against the limit.
struct Printer {
    output: Output,
    limit: Option<u64>,
    printed: u64,
    header_done: bool,
}

impl Printer {
    fn new(output: Output, limit: Option<u64>) -> Printer {
        Printer {
            output,
            limit,
            printed: 0,
            header_done: false,
        }
    }

    /// Prints the batch (up to the limit); true once the limit is reached.
    fn print(&mut self, ctx: &mut Ctx<'_>, batch: &RecordBatch) -> Result<bool, CliError> {
        let mut text = String::new();
        if self.output == Output::Table && !self.header_done {
            text.push_str(&record_header());
            text.push('\n');
            self.header_done = true;
        }
        for r in &batch.records {
            if self.limit.is_some_and(|l| self.printed >= l) {
                break;
            }
            match self.output {
                Output::Json => text.push_str(&record_json(&batch.shard_id, r).to_string()),
                Output::Table => text.push_str(&record_line(&batch.shard_id, r)),
            }
            text.push('\n');
            self.printed += 1;
        }
        ctx.write(&text)?;
        Ok(self.limit.is_some_and(|l| self.printed >= l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use runnel_client::SeqNo;

    fn args(extra: &[&str]) -> ReadArgs {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ReadArgs,
        }
        let argv = std::iter::once("t")
            .chain(["s"])
            .chain(extra.iter().copied());
        T::try_parse_from(argv).expect("parses").a
    }

    #[test]
    fn defaults_differ_by_mode() {
        let g = plan(&args(&[]), Mode::Get).expect("plan");
        assert_eq!((g.from, g.follow), (StartPosition::TrimHorizon, false));
        let t = plan(&args(&[]), Mode::Tail).expect("plan");
        assert_eq!((t.from, t.follow), (StartPosition::Latest, true));
    }

    #[test]
    fn sequence_starts_need_a_shard() {
        let err = plan(&args(&["--from", "at-seq=5"]), Mode::Get).unwrap_err();
        assert!(err.to_string().contains("--shard"));
        let p = plan(&args(&["--from", "after-seq=5", "--shard", "2"]), Mode::Get).expect("plan");
        assert_eq!(p.from, StartPosition::AfterSequenceNumber(SeqNo(5)));
        assert_eq!(p.shard.as_deref(), Some("shardId-000000000002"));
    }

    #[test]
    fn future_times_and_zero_limits_are_refused() {
        assert!(plan(&args(&["--from", "at-time=99999999999999"]), Mode::Get).is_err());
        assert!(plan(&args(&["--limit", "0"]), Mode::Get).is_err());
    }

    #[test]
    fn shard_ids_expand_numbers() {
        assert_eq!(shard_id("7"), "shardId-000000000007");
        assert_eq!(shard_id("shardId-000000000007"), "shardId-000000000007");
    }
}
