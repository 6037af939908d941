//! The client oracle: what the producers sent and had acknowledged, what the consumers
//! read, and where the harness trimmed. The checkers judge the cluster against it.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use runnel_types::{LogIndex, SeqNo};

/// One acknowledged record: the producer got its sequence number.
#[derive(Clone, Debug)]
pub struct Acked {
    pub shard: String,
    pub seq: SeqNo,
    pub data: Bytes,
    /// When the acknowledgement arrived (simulated wall clock, ms since the epoch): the
    /// record's arrival time on the leader is at or before it.
    pub acked_ms: u64,
}

/// The simulated wall clock in ms since the epoch, as the nodes read it (madsim answers
/// `SystemTime::now` with simulated time; every machine shares one clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Slack on the expiry test, for the nodes' millisecond rounding of arrival times.
pub const EXPIRY_SLACK_MS: u64 = 1_000;

/// Everything the clients saw.
#[derive(Default)]
pub struct Oracle {
    /// Every record data ever sent (each one is unique: it names its producer and
    /// number), with when it was first sent (ms since the epoch): its arrival time on
    /// a leader is at or after it.
    pub sent: BTreeMap<Bytes, u64>,
    /// The stream's retention when short enough to expire records within the run
    /// (`None`: nothing expires).
    pub retention_ms: Option<u64>,
    pub acked: Vec<Acked>,
    /// Sends that failed (the outcome is unknown: the record may or may not be stored).
    pub failed_sends: u64,
    /// Every record read by a consumer during the run, by position.
    pub observed: BTreeMap<(String, SeqNo), Bytes>,
    /// Two reads of one position that returned different bytes.
    pub observed_conflicts: Vec<String>,
    /// Reads that went backwards or repeated within one reader.
    pub order_violations: Vec<String>,
    /// Records read by consumer-group members, by position.
    pub group_seen: BTreeSet<(String, SeqNo)>,
    /// Per shard, the highest log index the harness asked some replica to trim to
    /// (records at or below it may be gone).
    pub trim_requested: BTreeMap<String, LogIndex>,
    /// Per shard and node, the trim point a replica confirmed (it must never move back).
    pub trim_confirmed: BTreeMap<(String, u64), LogIndex>,
}

pub type SharedOracle = Arc<Mutex<Oracle>>;

pub fn lock(o: &SharedOracle) -> std::sync::MutexGuard<'_, Oracle> {
    o.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Oracle {
    /// Notes one record read by a consumer (`reader` names it for messages).
    pub fn observe(&mut self, reader: &str, shard: &str, seq: SeqNo, data: &Bytes) {
        let key = (shard.to_string(), seq);
        match self.observed.get(&key) {
            Some(before) if before != data => self.observed_conflicts.push(format!(
                "{reader} read {shard} @ {seq} as {} but it was read before as {}",
                show(data),
                show(before)
            )),
            Some(_) => {}
            None => {
                self.observed.insert(key, data.clone());
            }
        }
    }

    /// Notes a record about to be sent.
    pub fn send(&mut self, data: &Bytes) {
        self.sent.entry(data.clone()).or_insert_with(now_ms);
    }

    /// Whether retention may have removed `data` by `at_ms`: it may have arrived as
    /// early as it was sent, and expires a retention period after it arrived. A record
    /// that may not have expired must still be readable.
    pub fn may_have_expired(&self, data: &Bytes, at_ms: u64) -> bool {
        let (Some(retention), Some(sent)) = (self.retention_ms, self.sent.get(data)) else {
            return false;
        };
        sent + retention <= at_ms + EXPIRY_SLACK_MS
    }

    /// Whether `seq` of `shard` is at or below a trim point the harness asked for.
    pub fn maybe_trimmed(&self, shard: &str, seq: SeqNo) -> bool {
        self.trim_requested
            .get(shard)
            .is_some_and(|t| seq.log_index() <= *t)
    }
}

/// A record's data, short: its header (producer and number) and length.
pub fn show(data: &Bytes) -> String {
    let head = data.iter().take_while(|b| **b != b'|').count();
    format!(
        "{:?} ({} bytes)",
        String::from_utf8_lossy(&data[..head.min(40)]),
        data.len()
    )
}
