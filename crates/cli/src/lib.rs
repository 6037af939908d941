//! `runnel`, the Runnel command line: streams, records, the cluster, consumer groups,
//! benchmarks, and a local dev cluster. The binary (`main.rs`) only parses and calls
//! [`run`]; everything is here so that tests drive the same functions.
//!
//! What is where (one file per command group):
//! - this file: the command tree ([`Cli`], [`Command`]), the global flags ([`Global`]),
//!   and [`run`], which builds the [`Ctx`] (client, output format, writer) and dispatches.
//! - [`stream`]: `stream create|list|describe|delete|retention`.
//! - [`put`]: `put`; [`read`]: `get` and `tail`.
//! - [`cluster`]: `cluster status|nodes|drain|remove`; [`k8s`]: the pure decision of the
//!   Helm chart's preStop drain (`--only-if-scaled-down`).
//! - [`group`]: `group list|checkpoints`.
//! - [`bench`]: `bench produce|consume|e2e` (HDR histograms, CPU per record).
//! - [`dev`]: `dev`, a 3-node cluster in this process (real builds only).
//! - [`parse`]: durations, positions, times (pure); [`output`]: tables and the JSON shape
//!   of a record (pure); [`error`]: [`CliError`] and the hints decoded from `ClientError`.
//!
//! *API boundary*: every command but `dev` talks to the cluster through `runnel-client`
//! only, as any user program would. `dev` depends on `runnel-server` to start nodes in
//! this process, so that `cargo run -p runnel-cli -- dev` needs nothing else built: the
//! one exception to "cli → client only".

// Tests may unwrap: a panic there is a failed test, not a crash on input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bench;
pub mod cluster;
#[cfg(not(madsim))]
pub mod dev;
pub mod error;
pub mod group;
#[cfg(not(madsim))]
pub mod https;
pub mod k8s;
pub mod output;
pub mod parse;
pub mod put;
pub mod read;
pub mod stream;

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand};
use runnel_client::{Client, ClientConfig};

pub use error::CliError;
pub use output::Output;

/// The default endpoint: a local `runnel dev` or `runneld`.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7100";

/// runnel: the command line of Runnel, a clustered stream store.
///
/// Every flag can also be set with an environment variable, named in each flag's help
/// (for example RUNNEL_ENDPOINT). Start a local cluster with `runnel dev`.
#[derive(Debug, Parser)]
#[command(name = "runnel", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Node(s) to talk to, host:port, comma-separated; any node of the cluster will do.
    #[arg(
        long,
        global = true,
        env = "RUNNEL_ENDPOINT",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT
    )]
    pub endpoint: Vec<String>,

    /// Output format: `table` for people, `json` for programs (records: one JSON
    /// object per line).
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "RUNNEL_OUTPUT",
        value_enum,
        default_value_t = Output::Table
    )]
    pub output: Output,

    /// How long a call keeps retrying when a node is unreachable or busy (90s, 2m).
    #[arg(
        long,
        global = true,
        env = "RUNNEL_DEADLINE",
        default_value = "15s",
        value_parser = parse::positive_duration
    )]
    pub deadline: Duration,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local 3-node cluster in this process, show it working, serve until Ctrl-C.
    Dev(DevArgsRef),
    /// Create, list, describe and delete streams; change their retention.
    #[command(subcommand)]
    Stream(stream::StreamCmd),
    /// Write records: one per argument, or one per line of stdin.
    Put(put::PutArgs),
    /// Read records (from the oldest by default) and stop when caught up.
    Get(read::ReadArgs),
    /// Follow a stream: like `get`, from `latest` by default, and never stops.
    Tail(read::ReadArgs),
    /// The cluster's health and nodes; drain and remove nodes.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Consumer groups of a stream and their checkpoints.
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Measure produce, consume and end-to-end throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// The `dev` flags (the type lives in [`dev`], which real builds only compile).
#[cfg(not(madsim))]
pub type DevArgsRef = dev::DevArgs;
/// Under simulation `dev` takes no flags and refuses to run.
#[cfg(madsim)]
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgsRef {}

/// What every command gets: the client, the output format and where to write.
pub struct Ctx<'a> {
    /// A client for `--endpoint`.
    pub client: Client,
    /// `--output`.
    pub output: Output,
    /// Standard output (a buffer in tests).
    pub out: &'a mut dyn Write,
}

impl Ctx<'_> {
    /// Writes `text` as is.
    pub fn write(&mut self, text: &str) -> Result<(), CliError> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(error::io("writing the output"))
    }

    /// Writes a JSON document (pretty) and a newline.
    pub fn json(&mut self, v: &serde_json::Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        self.write(&format!("{text}\n"))
    }

    /// Writes one JSON object on one line (record streams).
    pub fn json_line(&mut self, v: &serde_json::Value) -> Result<(), CliError> {
        self.write(&format!("{v}\n"))
    }
}

/// A client for the global flags.
pub fn client(global: &Global) -> Result<Client, CliError> {
    let config = ClientConfig {
        retry_deadline: global.deadline,
        ..ClientConfig::default()
    };
    Client::new(global.endpoint.iter().map(|e| e.trim().to_string()), config)
        .map_err(|e| CliError::Usage(format!("--endpoint {:?}: {e}", global.endpoint.join(","))))
}

/// Runs one parsed command line, writing results to `out` (progress bars and notes go
/// to stderr).
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let client = client(&cli.global)?;
    let mut ctx = Ctx {
        client,
        output: cli.global.output,
        out,
    };
    match cli.command {
        #[cfg(not(madsim))]
        Command::Dev(args) => dev::run(&mut ctx, &cli.global, args).await,
        #[cfg(madsim)]
        Command::Dev(_) => Err(CliError::Usage(
            "`runnel dev` runs on the real runtime only".into(),
        )),
        Command::Stream(cmd) => stream::run(&mut ctx, cmd).await,
        Command::Put(args) => put::run(&mut ctx, args).await,
        Command::Get(args) => read::run(&mut ctx, args, read::Mode::Get).await,
        Command::Tail(args) => read::run(&mut ctx, args, read::Mode::Tail).await,
        Command::Cluster(cmd) => cluster::run(&mut ctx, cmd).await,
        Command::Group(cmd) => group::run(&mut ctx, cmd).await,
        Command::Bench(cmd) => bench::run(&mut ctx, cmd).await,
    }
}

/// The command line as typed, quoted for a POSIX shell (to print "rerun with").
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere_and_default() {
        let cli = Cli::try_parse_from(["runnel", "stream", "list", "-o", "json"]).expect("parses");
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.endpoint, vec![DEFAULT_ENDPOINT.to_string()]);
        let cli = Cli::try_parse_from(["runnel", "--endpoint", "a:1,b:2", "stream", "list"])
            .expect("parses");
        assert_eq!(cli.global.endpoint, vec!["a:1", "b:2"]);
    }

    #[test]
    fn bad_values_are_parse_errors_not_panics() {
        for args in [
            &[
                "runnel",
                "stream",
                "create",
                "x",
                "--shards",
                "2",
                "--retention",
                "24",
            ][..],
            &["runnel", "get", "s", "--from", "at-seq=abc"],
            &["runnel", "get", "s", "--from", "at-time=tomorrow"],
            &["runnel", "--deadline", "0s", "stream", "list"],
            &["runnel", "stream", "retention", "x", "forever"],
            &["runnel", "cluster", "drain", "x"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn command_lines_are_quoted_for_the_shell() {
        let line =
            command_line(["runnel", "bench", "--stream", "it's", "a b", "--x=1"].map(String::from));
        assert_eq!(line, r"runnel bench --stream 'it'\''s' 'a b' --x=1");
    }
}
