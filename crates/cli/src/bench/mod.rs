//! `runnel bench produce|consume|e2e`: benchmarks are programs that print figures
//! (records/s, MB/s, p50/p99/p999 latency from an HDR histogram, CPU per 1,000 records)
//! and the exact command that reruns them.
//!
//! - [`produce`]: N producers (the SDK's `Producer`), each a task; latency = send to ack.
//! - [`consume`]: one reader per shard from the oldest record; latency = one
//!   `GetRecords` call.
//! - [`e2e`]: producers and a stream reader at once; the payload carries the send time,
//!   latency = send to receive.
//! - [`stats`]: the figures and how they print.

pub mod consume;
pub mod e2e;
pub mod produce;
pub mod stats;

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use runnel_client::{Client, ClientError, CreateStream, ReadMode};

use crate::Ctx;
use crate::error::{CliError, Doing};
use crate::output::Output;
use crate::parse::{format_duration, positive_duration};
use stats::Report;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Write records as fast as acknowledgements allow (or at --rate).
    Produce(BenchArgs),
    /// Read a stream from its oldest record to its tip (catch-up reading).
    Consume(BenchArgs),
    /// Write and read at once: latency from send to receive.
    E2e(BenchArgs),
}

/// Flags of every benchmark.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// The stream; created with --shards when it does not exist.
    #[arg(long, env = "RUNNEL_BENCH_STREAM", default_value = "bench")]
    pub stream: String,
    /// Shards of the stream when it is created.
    #[arg(long, env = "RUNNEL_BENCH_SHARDS", default_value_t = 4)]
    pub shards: u32,
    /// Replication factor when the stream is created (the cluster's default if left out).
    #[arg(long, env = "RUNNEL_BENCH_REPLICATION")]
    pub replication: Option<u32>,
    /// Stop after this many records (produce, e2e: default 100000 unless --duration;
    /// consume: default every record of the stream).
    #[arg(long, env = "RUNNEL_BENCH_RECORDS")]
    pub records: Option<u64>,
    /// Stop after this long (30s, 5m), whichever of --records and --duration comes first.
    #[arg(long, env = "RUNNEL_BENCH_DURATION", value_parser = positive_duration)]
    pub duration: Option<Duration>,
    /// Bytes of data per record.
    #[arg(long, env = "RUNNEL_BENCH_RECORD_SIZE", default_value_t = 1024)]
    pub record_size: usize,
    /// Concurrent producers, each with its own SDK producer (batching and connections).
    /// One is how an application uses the SDK (one producer batches for all its tasks);
    /// more split the same load into more, smaller calls.
    #[arg(long, env = "RUNNEL_BENCH_PRODUCERS", default_value_t = 1)]
    pub producers: usize,
    /// Records per second over all producers, 0 for as fast as possible. Half of the
    /// full-load rate gives the "half load" latency.
    #[arg(long, env = "RUNNEL_BENCH_RATE", default_value_t = 0)]
    pub rate: u64,
    /// Records awaiting their acknowledgement per producer.
    #[arg(long, env = "RUNNEL_BENCH_IN_FLIGHT", default_value_t = 10_000)]
    pub in_flight: usize,
    /// How long the SDK producer waits to fill a batch (0s for none).
    #[arg(long, env = "RUNNEL_BENCH_LINGER", default_value = "5ms", value_parser = crate::parse::duration)]
    pub linger: Duration,
    /// e2e: how the reader gets records: `subscribe` (pushed by the shard leaders as
    /// they commit, the low-latency way) or `poll` (`GetRecords` every 2 ms per
    /// caught-up shard).
    #[arg(long, env = "RUNNEL_BENCH_READ", default_value = "subscribe", value_parser = crate::parse::read_mode)]
    pub read: ReadMode,
}

/// Records written when neither --records nor --duration is given.
const DEFAULT_RECORDS: u64 = 100_000;
/// Largest record a benchmark writes (the server's default record limit).
const RECORD_SIZE_MAX: usize = 1024 * 1024;

impl BenchArgs {
    /// Checks the flags, naming the wrong one.
    pub fn validate(&self, min_record_size: usize) -> Result<(), CliError> {
        let bad = |m: String| Err(CliError::Usage(m));
        if !(min_record_size..=RECORD_SIZE_MAX).contains(&self.record_size) {
            return bad(format!(
                "--record-size {} must be {min_record_size} to {RECORD_SIZE_MAX} bytes",
                self.record_size
            ));
        }
        if self.producers == 0 || self.producers > 1024 {
            return bad(format!("--producers {} must be 1 to 1024", self.producers));
        }
        if self.in_flight == 0 {
            return bad("--in-flight must be at least 1".into());
        }
        if self.records == Some(0) {
            return bad("--records must be at least 1".into());
        }
        Ok(())
    }

    /// The record bound of a writing benchmark.
    pub fn write_records(&self) -> Option<u64> {
        match (self.records, self.duration) {
            (None, None) => Some(DEFAULT_RECORDS),
            (r, _) => r,
        }
    }

    /// The header lines of a report.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "stream",
                format!("{} ({} shards if created)", self.stream, self.shards),
            ),
            ("record size", format!("{} bytes", self.record_size)),
            ("producers", self.producers.to_string()),
            (
                "read",
                match self.read {
                    ReadMode::Subscribe => "subscribe (e2e)".into(),
                    ReadMode::Poll => "poll (e2e)".into(),
                },
            ),
            (
                "rate",
                if self.rate == 0 {
                    "unlimited".into()
                } else {
                    format!("{} records/s", self.rate)
                },
            ),
            (
                "bound",
                match (self.records, self.duration) {
                    (Some(r), Some(d)) => format!("{r} records or {}", format_duration(d)),
                    (Some(r), None) => format!("{r} records"),
                    (None, Some(d)) => format_duration(d),
                    (None, None) => "default".into(),
                },
            ),
        ]
    }
}

/// Runs one benchmark.
pub async fn run(ctx: &mut Ctx<'_>, cmd: BenchCmd) -> Result<(), CliError> {
    let command = crate::command_line(std::env::args());
    let cpu_start = stats::cpu_seconds();
    let (args, phases) = match cmd {
        BenchCmd::Produce(a) => {
            a.validate(1)?;
            ensure_stream(&ctx.client, &a).await?;
            let p = produce::run(&ctx.client, &a, None).await?;
            (a, vec![p])
        }
        BenchCmd::Consume(a) => {
            a.validate(1)?;
            let p = consume::run(&ctx.client, &a).await?;
            (a, vec![p])
        }
        BenchCmd::E2e(a) => {
            a.validate(e2e::HEADER_BYTES)?;
            ensure_stream(&ctx.client, &a).await?;
            let (p, e) = e2e::run(&ctx.client, &a).await?;
            (a, vec![p, e])
        }
    };
    let cpu_seconds = cpu_start.zip(stats::cpu_seconds()).map(|(a, b)| b - a);
    let report = Report {
        phases,
        cpu_seconds,
        settings: args.settings(),
        command,
    };
    match ctx.output {
        Output::Json => ctx.json(&report.json()),
        Output::Table => ctx.write(&report.text()),
    }
}

/// Creates the benchmark stream unless it exists, and waits until it is ACTIVE.
pub async fn ensure_stream(client: &Client, a: &BenchArgs) -> Result<(), CliError> {
    let admin = client.admin();
    let options = CreateStream {
        shard_count: a.shards,
        replication_factor: a.replication,
        retention: None,
    };
    match admin.create_stream(&a.stream, options).await {
        Ok(_) | Err(ClientError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e).doing(|| format!("creating the bench stream {}", a.stream)),
    }
    crate::stream::wait_active(client, &a.stream, Duration::from_secs(60)).await?;
    Ok(())
}

/// A progress bar over `records`, or a counting spinner when there is no record bound. Hidden when stderr is not a terminal.
pub fn progress(records: Option<u64>, what: &str) -> ProgressBar {
    let (len, template) = match records {
        Some(r) => (
            r,
            "{msg} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})",
        ),
        None => (0, "{msg} {spinner} {pos} records in {elapsed} ({per_sec})"),
    };
    let bar = if len == 0 {
        let b = ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        ProgressBar::new(len)
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::Parser;

    fn bench(args: &[&str]) -> BenchArgs {
        let argv = ["runnel", "bench", "produce"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(crate::Command::Bench(BenchCmd::Produce(a))) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_bounds() {
        let a = bench(&[]);
        assert_eq!((a.record_size, a.producers, a.shards), (1024, 1, 4));
        assert_eq!(a.read, ReadMode::Subscribe);
        assert_eq!(bench(&["--read", "poll"]).read, ReadMode::Poll);
        assert!(Cli::try_parse_from(["runnel", "bench", "e2e", "--read", "push"]).is_err());
        assert_eq!(a.write_records(), Some(DEFAULT_RECORDS));
        assert_eq!(bench(&["--duration", "10s"]).write_records(), None);
        assert_eq!(
            bench(&["--records", "5", "--duration", "10s"]).write_records(),
            Some(5)
        );
    }

    #[test]
    fn bad_flags_are_named() {
        for (args, flag) in [
            (&["--record-size", "0"][..], "--record-size"),
            (&["--producers", "0"], "--producers"),
            (&["--records", "0"], "--records"),
            (&["--in-flight", "0"], "--in-flight"),
        ] {
            let e = bench(args).validate(1).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
        assert!(
            bench(&["--record-size", "8"])
                .validate(e2e::HEADER_BYTES)
                .is_err()
        );
        assert!(Cli::try_parse_from(["runnel", "bench", "produce", "--duration", "10"]).is_err());
    }
}
