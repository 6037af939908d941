//! Segment log throughput against the raw disk, on this machine.
//!
//! ```text
//! cargo run --release -p runnel-log --example log_bench -- [--dir PATH] [--seconds N]
//! ```
//!
//! For batches of 4 KiB, 64 KiB and 1 MiB: raw sequential `pwrite` + `fdatasync` through
//! `std::fs`; then the log's `append` (one entry of that size) + `sync`; then reads of
//! what the log wrote, from the page cache. Each case runs `--seconds` (default 2).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_log::{Entry, LogConfig, RealDisk, SegmentLog};
use runnel_types::{LogIndex, Term};

/// A case also stops after this many bytes, to bound disk use.
const CASE_BYTES_MAX: u64 = 4 << 30;
/// Payload bytes per read call.
const READ_MAX_BYTES: usize = 16 << 20;
const SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];

struct Rate {
    bytes: u64,
    ops: u64,
    elapsed: Duration,
}

impl Rate {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
    fn ops_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, seconds) = parse_args()?;
    let run_dir = dir.join(format!("runnel-log-bench-{}", std::process::id()));
    fs::create_dir_all(&run_dir)?;
    let budget = Duration::from_secs_f64(seconds);
    println!("dir {}  {seconds} s per case", run_dir.display());
    println!(
        "{:>8} | {:>10} {:>9} | {:>10} {:>9} | {:>7} | {:>10}",
        "batch", "raw MB/s", "raw b/s", "log MB/s", "log b/s", "log/raw", "read MB/s"
    );
    for size in SIZES {
        let raw = raw_write(&run_dir.join("raw.dat"), size, budget)?;
        let log_dir = run_dir.join(format!("log-{size}"));
        let (log, appended) = log_write(&log_dir, size, budget)?;
        let read = log_read(&log, budget)?;
        drop(log);
        fs::remove_dir_all(&log_dir)?;
        println!(
            "{:>8} | {:>10.1} {:>9.0} | {:>10.1} {:>9.0} | {:>6.1}% | {:>10.1}",
            human(size),
            raw.mb_s(),
            raw.ops_s(),
            appended.mb_s(),
            appended.ops_s(),
            100.0 * appended.mb_s() / raw.mb_s(),
            read.mb_s()
        );
    }
    fs::remove_dir_all(&run_dir)?;
    Ok(())
}

fn parse_args() -> Result<(PathBuf, f64), String> {
    let mut dir = std::env::temp_dir();
    let mut seconds = 2.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(value),
            "--seconds" => seconds = value.parse().map_err(|e| format!("--seconds: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown argument {arg}; use --dir PATH --seconds N"
                ));
            }
        }
    }
    Ok((dir, seconds))
}

fn human(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}

/// Sequential `pwrite` of `size` bytes then `fdatasync`, repeated.
fn raw_write(path: &Path, size: usize, budget: Duration) -> std::io::Result<Rate> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let buf = vec![0xabu8; size];
    let start = Instant::now();
    let mut offset = 0u64;
    let mut ops = 0;
    while start.elapsed() < budget && offset < CASE_BYTES_MAX {
        file.write_all_at(&buf, offset)?;
        file.sync_data()?;
        offset += size as u64;
        ops += 1;
    }
    let rate = Rate {
        bytes: offset,
        ops,
        elapsed: start.elapsed(),
    };
    drop(file);
    fs::remove_file(path)?;
    Ok(rate)
}

/// One entry of `size` bytes appended, then synced, repeated.
fn log_write(
    dir: &Path,
    size: usize,
    budget: Duration,
) -> Result<(SegmentLog, Rate), Box<dyn std::error::Error>> {
    let log = SegmentLog::open(RealDisk::shared(), dir, LogConfig::default())?;
    let payload = Bytes::from(vec![0xcdu8; size]);
    let start = Instant::now();
    let mut index = 1;
    let mut bytes = 0u64;
    while start.elapsed() < budget && bytes < CASE_BYTES_MAX {
        let entry = Entry {
            index: LogIndex(index),
            term: Term(1),
            timestamp_ms: index,
            payload: payload.clone(),
        };
        log.append(&[entry])?;
        log.sync()?;
        bytes += size as u64;
        index += 1;
    }
    let rate = Rate {
        bytes,
        ops: index - 1,
        elapsed: start.elapsed(),
    };
    Ok((log, rate))
}

/// Reads the whole log from the first index, `READ_MAX_BYTES` per call, repeated.
fn log_read(log: &SegmentLog, budget: Duration) -> Result<Rate, Box<dyn std::error::Error>> {
    let (first, last) = match (log.first_index(), log.last_entry()) {
        (Some(f), Some(l)) => (f, l.index),
        _ => return Err("nothing to read".into()),
    };
    let start = Instant::now();
    let (mut bytes, mut ops) = (0u64, 0u64);
    while start.elapsed() < budget {
        let mut from = first;
        while from <= last {
            let got = log.read(from, last.next(), READ_MAX_BYTES)?;
            bytes += got.iter().map(|e| e.payload.len() as u64).sum::<u64>();
            from = got.last().map_or(last.next(), |e| e.index.next());
            ops += 1;
        }
    }
    Ok(Rate {
        bytes,
        ops,
        elapsed: start.elapsed(),
    })
}
