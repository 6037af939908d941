//! `bench e2e`: producers and a whole-stream reader run at once. Each payload starts
//! with a 16-byte header, the run id and the send time (µs since the Unix epoch, little
//! endian); the reader keeps the records of this run and records receive time minus
//! send time. Both ends run in this process, so one clock serves both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use runnel_client::{Client, ConsumerConfig, StartPosition};

use super::BenchArgs;
use super::stats::{Phase, histogram};
use crate::error::{CliError, Doing};

/// Bytes of the header: run id, send time.
pub const HEADER_BYTES: usize = 16;
/// How long the reader waits for the last records once the producers are done.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How often the reader looks at the clock and the producers' count while waiting.
const WAKE_EVERY: Duration = Duration::from_millis(100);
/// Pause between polls of a caught-up shard (bounds the added latency).
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A run id, distinct per run (the start time, with the pid mixed in).
pub fn run_id() -> u64 {
    now_us() ^ (u64::from(std::process::id()) << 48)
}

/// The payload: header, then the filler past its first 16 bytes.
pub fn payload(run: u64, filler: &Bytes) -> Bytes {
    let mut b = BytesMut::with_capacity(filler.len().max(HEADER_BYTES));
    b.put_u64_le(run);
    b.put_u64_le(now_us());
    if filler.len() > HEADER_BYTES {
        b.extend_from_slice(&filler[HEADER_BYTES..]);
    }
    b.freeze()
}

/// `(run id, send time µs)` of a payload, if it has a header.
pub fn header(data: &[u8]) -> Option<(u64, u64)> {
    let run = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
    Some((run, sent))
}

/// Runs the producers and the reader; returns (produce, e2e) phases.
pub async fn run(client: &Client, a: &BenchArgs) -> Result<(Phase, Phase), CliError> {
    let run = run_id();
    let since_ms = (now_us() / 1_000).saturating_sub(1_000);
    let config = ConsumerConfig {
        mode: a.read,
        idle_poll_interval: POLL_INTERVAL,
        ..ConsumerConfig::default()
    };
    let mut reader = client
        .consumer(&a.stream, config)
        .read_stream(StartPosition::AtTimestamp(since_ms))
        .await
        .doing(|| format!("reading stream {}", a.stream))?;
    // The number of acknowledged records, once the producers are done.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let expect = expected.clone();
    let reading = tokio::spawn(async move {
        let started = Instant::now();
        let mut latency_us = histogram();
        let (mut records, mut bytes, mut done_at) = (0u64, 0u64, None::<Instant>);
        let mut first_error = None;
        loop {
            let want = expect.load(Ordering::Acquire);
            if records >= want {
                break;
            }
            if want != u64::MAX && done_at.get_or_insert_with(Instant::now).elapsed() > DRAIN_GRACE
            {
                first_error = Some(format!(
                    "{} records not received within {DRAIN_GRACE:?}",
                    want - records
                ));
                break;
            }
            // Bounded, so that the drain deadline holds: a subscription sends nothing
            // while its shard is idle, and `next` would wait for ever.
            let batch = match tokio::time::timeout(WAKE_EVERY, reader.next()).await {
                Err(_) => continue,
                Ok(r) => r,
            };
            let batch = match batch {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    first_error = Some(e.to_string());
                    break;
                }
            };
            let now = now_us();
            for r in &batch.records {
                if let Some((_, sent)) = header(&r.data).filter(|(id, _)| *id == run) {
                    latency_us.saturating_record(now.saturating_sub(sent).max(1));
                    records += 1;
                    bytes += r.data.len() as u64;
                }
            }
        }
        let want = expect.load(Ordering::Acquire);
        Phase {
            name: "e2e",
            records,
            bytes,
            errors: if want == u64::MAX {
                0
            } else {
                want.saturating_sub(records)
            },
            first_error,
            elapsed: started.elapsed(),
            latency_of: "send to receive",
            latency_us,
        }
    });
    let produced = super::produce::run(client, a, Some(run)).await?;
    expected.store(produced.records, Ordering::Release);
    let received = reading
        .await
        .map_err(|e| CliError::Failed(format!("the reader task failed: {e}")))?;
    Ok((produced, received))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_header_round_trips() {
        let filler = Bytes::from(vec![7u8; 64]);
        let before = now_us();
        let p = payload(42, &filler);
        assert_eq!(p.len(), 64);
        let (run, sent) = header(&p).expect("header");
        assert_eq!(run, 42);
        assert!(sent >= before && sent <= now_us());
        assert_eq!(&p[16..], &filler[16..]);
        assert_eq!(header(b"short"), None);
    }
}
