//! `runnel put STREAM [DATA...]`: a record per argument, or one per line of stdin when
//! there are none. Records go through the SDK's [`Producer`](runnel_client::Producer)
//! (batched, retried); each result is printed in input order as soon as it is known.

use std::collections::VecDeque;
use std::io::BufRead;

use bytes::Bytes;
use clap::Args;
use runnel_client::{HashKey, ProducerConfig, PutHandle, PutResult, Record};
use serde_json::json;
use tokio::sync::mpsc;

use crate::Ctx;
use crate::error::{CliError, Doing};
use crate::output::Output;

/// Records whose results are awaited at once; more wait for buffer space.
const IN_FLIGHT_MAX: usize = 1_000;
/// Lines read ahead of the producer from stdin.
const STDIN_LINES_AHEAD: usize = 1_000;

/// `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The stream to write to.
    pub stream: String,
    /// The records' data, one record each; when none is given, each line of stdin is
    /// a record (without its line ending).
    pub data: Vec<String>,
    /// Partition key of every record (it picks the shard: records of one key keep their
    /// order). Default: a random key per record.
    #[arg(long, short = 'k', env = "RUNNEL_PUT_KEY")]
    pub key: Option<String>,
    /// Route by this hash key (a decimal number below 2^128) instead of the partition
    /// key's MD5.
    #[arg(long, env = "RUNNEL_PUT_EXPLICIT_HASH_KEY", value_parser = hash_key)]
    pub explicit_hash_key: Option<HashKey>,
}

fn hash_key(s: &str) -> Result<HashKey, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a hash key: a decimal number from 0 to 2^128-1"))
}

/// A small xorshift generator for random partition keys: no dependency, not for secrets.
pub struct KeyGen(u64);

impl KeyGen {
    /// Seeded from the clock and the process id.
    pub fn from_clock() -> KeyGen {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        KeyGen::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// Seeded (0 is replaced: xorshift never leaves it).
    pub fn new(seed: u64) -> KeyGen {
        KeyGen(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random partition key, 16 hex digits.
    pub fn key(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }
}

/// Runs `put`.
pub async fn run(ctx: &mut Ctx<'_>, args: PutArgs) -> Result<(), CliError> {
    let stream = args.stream.clone();
    // Fails early, with a clear message, when the stream does not exist.
    ctx.client
        .shard_map(&stream)
        .await
        .doing(|| format!("looking up stream {stream}"))?;
    let producer = ctx
        .client
        .producer(&stream, ProducerConfig::default())
        .doing(|| "starting a producer".into())?;
    let mut lines = input(args.data);
    let mut keys = KeyGen::from_clock();
    let mut pending: VecDeque<(String, PutHandle)> = VecDeque::new();
    let mut failed = 0usize;
    if ctx.output == Output::Table {
        ctx.write(&format!("{:<20}  {:>20}  KEY\n", "SHARD", "SEQUENCE"))?;
    }
    while let Some(line) = lines.recv().await {
        let data = line?;
        let key = args.key.clone().unwrap_or_else(|| keys.key());
        let mut record = Record::new(key.clone(), Bytes::from(data));
        record.explicit_hash_key = args.explicit_hash_key;
        let handle = producer
            .enqueue(record)
            .await
            .doing(|| format!("writing to stream {stream}"))?;
        pending.push_back((key, handle));
        if pending.len() >= IN_FLIGHT_MAX {
            failed += report_next(ctx, &mut pending).await?;
        }
    }
    while !pending.is_empty() {
        failed += report_next(ctx, &mut pending).await?;
    }
    let _ = producer.close().await;
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} record(s) were not stored (see above); the others were"
        )));
    }
    Ok(())
}

/// Awaits the oldest pending record and prints its result; 1 when it failed.
async fn report_next(
    ctx: &mut Ctx<'_>,
    pending: &mut VecDeque<(String, PutHandle)>,
) -> Result<usize, CliError> {
    let Some((key, handle)) = pending.pop_front() else {
        return Ok(0);
    };
    let result = handle.await;
    ctx.write(&result_line(ctx.output, &key, &result))?;
    Ok(usize::from(result.is_err()))
}

/// One line of output for one record.
pub fn result_line(
    output: Output,
    key: &str,
    result: &Result<PutResult, runnel_client::ClientError>,
) -> String {
    match (output, result) {
        (Output::Json, Ok(r)) => format!(
            "{}\n",
            json!({
                "shard_id": r.shard_id,
                "sequence_number": r.sequence_number.to_string(),
                "partition_key": key,
            })
        ),
        (Output::Json, Err(e)) => {
            format!(
                "{}\n",
                json!({ "partition_key": key, "error": e.to_string() })
            )
        }
        (Output::Table, Ok(r)) => {
            format!("{:<20}  {:>20}  {key}\n", r.shard_id, r.sequence_number)
        }
        (Output::Table, Err(e)) => format!("{:<20}  {:>20}  {key}  error: {e}\n", "-", "-"),
    }
}

/// The records' data: the arguments, or stdin's lines read on a thread (stdin blocks)
/// through a bounded channel.
fn input(data: Vec<String>) -> mpsc::Receiver<Result<Vec<u8>, CliError>> {
    let (tx, rx) = mpsc::channel(STDIN_LINES_AHEAD);
    if !data.is_empty() {
        tokio::spawn(async move {
            for d in data {
                if tx.send(Ok(d.into_bytes())).await.is_err() {
                    return;
                }
            }
        });
        return rx;
    }
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            let item = match lock.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => Ok(strip_line_end(line)),
                Err(e) => Err(crate::error::io("reading stdin")(e)),
            };
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// A line without its `\n` or `\r\n`.
pub fn strip_line_end(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::SeqNo;

    #[test]
    fn random_keys_differ() {
        let mut g = KeyGen::new(0);
        let a = g.key();
        let b = g.key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn line_ends_are_stripped() {
        assert_eq!(strip_line_end(b"a\r\n".to_vec()), b"a");
        assert_eq!(strip_line_end(b"a\n".to_vec()), b"a");
        assert_eq!(strip_line_end(b"a".to_vec()), b"a");
        assert_eq!(strip_line_end(b"\n".to_vec()), b"");
    }

    #[test]
    fn result_lines_in_both_formats() {
        let ok = Ok(PutResult {
            shard_id: "shardId-000000000003".into(),
            sequence_number: SeqNo(65_536),
        });
        let j: serde_json::Value =
            serde_json::from_str(&result_line(Output::Json, "k", &ok)).expect("json");
        assert_eq!(j["sequence_number"], "65536");
        assert_eq!(j["shard_id"], "shardId-000000000003");
        let t = result_line(Output::Table, "k", &ok);
        assert!(t.starts_with("shardId-000000000003") && t.ends_with("65536  k\n"));
        let err = Err(runnel_client::ClientError::Closed);
        assert!(result_line(Output::Table, "k", &err).contains("error: closed"));
    }
}
