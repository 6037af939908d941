//! The ledger of what producers sent and what the cluster acknowledged, and the checker
//! of the durability contract against it (DESIGN §2): after the faults, every
//! acknowledged record is read back once, at its sequence number, in sequence order per
//! shard, byte-identical; and nothing appears that no producer ever sent.
//!
//! Producers call [`Ledger::sent`] before queueing a record and [`Ledger::acked`] once
//! its result arrives. A record whose outcome stayed unknown (a timeout, a killed
//! leader) may or may not be stored, and may even be stored twice (the SDK resends
//! what it cannot know was stored): the checker allows that, which is why it needs the
//! set of everything sent, not only what was acknowledged. Give every record distinct
//! data (a producer id and a counter) so that "sent" identifies one record.
//!
//! [`Ledger::verify`] is pure (tests feed it reads made up by hand); [`read_stream`]
//! is the I/O half that reads every shard from `TRIM_HORIZON` through the SDK.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use runnel_client::{Client, ConsumedRecord, ConsumerConfig, PutResult, StartPosition};
use runnel_types::SeqNo;

/// What every shard held when it was read: its records in the order they came.
pub type ShardReads = BTreeMap<String, Vec<ConsumedRecord>>;

/// Violations listed in a failure message at most (the count is always given).
const VIOLATIONS_SHOWN_MAX: usize = 30;

/// One acknowledged record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedRecord {
    pub shard_id: String,
    pub sequence_number: SeqNo,
    pub partition_key: String,
    pub data: Bytes,
}

#[derive(Default)]
struct State {
    /// `(partition key, data)` of every record a producer tried to send.
    sent: HashSet<(String, Bytes)>,
    /// Acknowledged records by shard, then sequence number.
    acked: BTreeMap<String, BTreeMap<SeqNo, AckedRecord>>,
    /// Two different records acknowledged at the same place: a violation on its own.
    conflicts: Vec<String>,
}

/// Sent and acknowledged records, shared by every producer task (cheap to clone).
#[derive(Clone, Default)]
pub struct Ledger {
    state: Arc<Mutex<State>>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A producer task that panicked leaves the sets consistent (each call is one
        // insert), so the poison can be ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a record about to be sent (call it before queueing the record).
    pub fn sent(&self, partition_key: &str, data: &Bytes) {
        self.lock()
            .sent
            .insert((partition_key.to_string(), data.clone()));
    }

    /// Notes an acknowledgement: the record `(partition_key, data)` is stored at `at`.
    pub fn acked(&self, partition_key: &str, data: &Bytes, at: &PutResult) {
        let record = AckedRecord {
            shard_id: at.shard_id.clone(),
            sequence_number: at.sequence_number,
            partition_key: partition_key.to_string(),
            data: data.clone(),
        };
        let mut st = self.lock();
        st.sent.insert((partition_key.to_string(), data.clone()));
        let shard = st.acked.entry(at.shard_id.clone()).or_default();
        match shard.get(&at.sequence_number) {
            Some(prev) if *prev != record => {
                let msg = format!(
                    "{} seq {}: acknowledged for two records, key {:?} and key {:?}",
                    at.shard_id, at.sequence_number, prev.partition_key, record.partition_key
                );
                st.conflicts.push(msg);
            }
            _ => {
                shard.insert(at.sequence_number, record);
            }
        }
    }

    /// Acknowledged records in all.
    pub fn acked_count(&self) -> usize {
        self.lock().acked.values().map(BTreeMap::len).sum()
    }

    /// Records sent (acknowledged or not) in all.
    pub fn sent_count(&self) -> usize {
        self.lock().sent.len()
    }

    /// The highest acknowledged sequence number of each shard.
    pub fn max_acked(&self) -> BTreeMap<String, SeqNo> {
        self.lock()
            .acked
            .iter()
            .filter_map(|(s, m)| m.keys().next_back().map(|q| (s.clone(), *q)))
            .collect()
    }

    /// The acknowledged records of one shard, in sequence order.
    pub fn acked_in(&self, shard_id: &str) -> Vec<AckedRecord> {
        self.lock()
            .acked
            .get(shard_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `(partition_key, data)` was ever sent.
    pub fn was_sent(&self, partition_key: &str, data: &Bytes) -> bool {
        self.lock()
            .sent
            .contains(&(partition_key.to_string(), data.clone()))
    }

    /// Checks what was read against the ledger. Pure.
    pub fn verify(&self, reads: &ShardReads) -> Report {
        let st = self.lock();
        let mut report = Report {
            violations: st.conflicts.clone(),
            ..Report::default()
        };
        for (shard, records) in reads {
            let acked = st.acked.get(shard);
            verify_shard(shard, records, acked, &st.sent, &mut report);
        }
        for (shard, acked) in &st.acked {
            if !reads.contains_key(shard) {
                report.violations.push(format!(
                    "{shard}: {} acknowledged records, but the shard was not read (not in the shard map?)",
                    acked.len()
                ));
            }
        }
        report
    }
}

fn verify_shard(
    shard: &str,
    records: &[ConsumedRecord],
    acked: Option<&BTreeMap<SeqNo, AckedRecord>>,
    sent: &HashSet<(String, Bytes)>,
    report: &mut Report,
) {
    let empty = BTreeMap::new();
    let acked = acked.unwrap_or(&empty);
    let v = &mut report.violations;
    let mut prev: Option<SeqNo> = None;
    for r in records {
        report.read += 1;
        if let Some(p) = prev.filter(|p| r.sequence_number <= *p) {
            v.push(format!(
                "{shard}: seq {} read after seq {p}: not in increasing order (or twice)",
                r.sequence_number
            ));
        }
        prev = Some(r.sequence_number);
        match acked.get(&r.sequence_number) {
            Some(a) if a.partition_key == r.partition_key && a.data == r.data => {}
            Some(a) => v.push(format!(
                "{shard} seq {}: read key {:?} with {} bytes, but key {:?} with {} bytes was acknowledged there",
                r.sequence_number,
                r.partition_key,
                r.data.len(),
                a.partition_key,
                a.data.len()
            )),
            None if sent.contains(&(r.partition_key.clone(), r.data.clone())) => {
                report.unacked_but_sent += 1;
            }
            None => v.push(format!(
                "{shard} seq {}: key {:?} ({} bytes) was never sent by any producer",
                r.sequence_number,
                r.partition_key,
                r.data.len()
            )),
        }
    }
    let read: HashSet<SeqNo> = records.iter().map(|r| r.sequence_number).collect();
    for (seq, a) in acked {
        report.acked += 1;
        if !read.contains(seq) {
            v.push(format!(
                "{shard} seq {seq}: acknowledged (key {:?}) but not read back: lost",
                a.partition_key
            ));
        }
    }
}

/// What [`Ledger::verify`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Acknowledged records checked.
    pub acked: usize,
    /// Records read.
    pub read: usize,
    /// Records read that were sent but never acknowledged (allowed: outcome unknown).
    pub unacked_but_sent: usize,
    /// Everything that breaks the contract; empty when it holds.
    pub violations: Vec<String>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Panics with the violations (the first few of them) unless there are none.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "durability contract broken:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} acknowledged, {} read, {} read without an acknowledgement (sent, outcome unknown), {} violations",
            self.acked,
            self.read,
            self.unacked_but_sent,
            self.violations.len()
        )?;
        for v in self.violations.iter().take(VIOLATIONS_SHOWN_MAX) {
            writeln!(f, "  {v}")?;
        }
        if self.violations.len() > VIOLATIONS_SHOWN_MAX {
            writeln!(
                f,
                "  ... and {} more",
                self.violations.len() - VIOLATIONS_SHOWN_MAX
            )?;
        }
        Ok(())
    }
}

/// Reads every shard of `stream` (open and closed) from `TRIM_HORIZON` to its tip,
/// through the SDK, retrying transient errors until `deadline` has passed. A shard is
/// read to its tip once a read returns nothing, nothing is left behind it, and every
/// sequence number `ledger` saw acknowledged in it has been passed.
pub async fn read_stream(
    client: &Client,
    stream: &str,
    ledger: &Ledger,
    deadline: Duration,
) -> anyhow::Result<ShardReads> {
    let until = tokio::time::Instant::now() + deadline;
    let shards = loop {
        match client.admin().list_shards(stream).await {
            Ok(s) => break s,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context(format!("listing the shards of {stream}")),
        }
    };
    let max = ledger.max_acked();
    let consumer = client.consumer(stream, ConsumerConfig::default());
    let mut reads = ShardReads::new();
    for shard in shards {
        let id = shard.shard_id;
        let tip = max.get(&id).copied();
        let mut reader = consumer.read_shard(&id, StartPosition::TrimHorizon);
        let mut records = Vec::new();
        loop {
            match reader.next().await {
                Ok(None) => break,
                Ok(Some(b)) => {
                    let done = b.records.is_empty()
                        && b.millis_behind_latest == 0
                        && tip.is_none_or(|t| reader.last_sequence_number() >= Some(t));
                    records.extend(b.records);
                    if done {
                        break;
                    }
                }
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context(format!("reading {id} of {stream}")),
            }
            if tokio::time::Instant::now() >= until {
                bail!(
                    "{id} of {stream}: read up to {:?} within {deadline:?}, but {tip:?} was acknowledged there",
                    reader.last_sequence_number()
                );
            }
        }
        reads.insert(id, records);
    }
    Ok(reads)
}

/// [`read_stream`] then [`Ledger::verify`].
pub async fn check_stream(
    client: &Client,
    stream: &str,
    ledger: &Ledger,
    deadline: Duration,
) -> anyhow::Result<Report> {
    let reads = read_stream(client, stream, ledger, deadline).await?;
    Ok(ledger.verify(&reads))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u128, key: &str, data: &'static [u8]) -> ConsumedRecord {
        ConsumedRecord {
            sequence_number: SeqNo(seq),
            arrival_time_ms: 0,
            partition_key: key.to_string(),
            data: Bytes::from_static(data),
            explicit_hash_key: None,
        }
    }

    fn put(shard: &str, seq: u128) -> PutResult {
        PutResult {
            shard_id: shard.to_string(),
            sequence_number: SeqNo(seq),
        }
    }

    fn ledger() -> Ledger {
        let l = Ledger::new();
        l.acked("a", &Bytes::from_static(b"1"), &put("s0", 10));
        l.acked("b", &Bytes::from_static(b"2"), &put("s0", 11));
        l.sent("c", &Bytes::from_static(b"3"));
        l
    }

    fn reads(records: Vec<ConsumedRecord>) -> ShardReads {
        BTreeMap::from([("s0".to_string(), records)])
    }

    #[test]
    fn everything_acknowledged_read_once_in_order_passes() {
        let r = ledger().verify(&reads(vec![
            rec(10, "a", b"1"),
            rec(11, "b", b"2"),
            rec(12, "c", b"3"),
        ]));
        r.assert_ok();
        assert_eq!((r.acked, r.read, r.unacked_but_sent), (2, 3, 1));
    }

    #[test]
    fn each_breach_is_caught() {
        let cases: Vec<(Vec<ConsumedRecord>, &str)> = vec![
            (vec![rec(10, "a", b"1")], "lost"),
            (
                vec![rec(11, "b", b"2"), rec(10, "a", b"1")],
                "increasing order",
            ),
            (
                vec![rec(10, "a", b"1"), rec(10, "a", b"1"), rec(11, "b", b"2")],
                "twice",
            ),
            (
                vec![rec(10, "a", b"X"), rec(11, "b", b"2")],
                "acknowledged there",
            ),
            (
                vec![rec(10, "a", b"1"), rec(11, "b", b"2"), rec(12, "z", b"9")],
                "never sent",
            ),
        ];
        for (records, want) in cases {
            let r = ledger().verify(&reads(records));
            assert!(r.violations.iter().any(|v| v.contains(want)), "{want}: {r}");
        }
        let r = ledger().verify(&ShardReads::new());
        assert!(r.violations[0].contains("not read"), "{r}");
    }

    #[test]
    fn two_records_acknowledged_at_one_place_is_a_violation() {
        let l = ledger();
        l.acked("z", &Bytes::from_static(b"9"), &put("s0", 10));
        let r = l.verify(&reads(vec![rec(10, "a", b"1"), rec(11, "b", b"2")]));
        assert!(r.violations[0].contains("two records"), "{r}");
    }
}
