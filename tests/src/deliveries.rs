//! What consumer-group members were given, and the check of the group's contract
//! against the shards' true contents: every record delivered at least once, and
//! exactly once *counting checkpoints*.
//!
//! A member's tenure on a shard is a *session*: it starts when the member acquires the
//! lease (reading after the group's checkpoint, `resume_after`) and ends when the lease
//! goes or the member dies. Sessions of one shard follow each other in time. A session's
//! records count up to where the next session resumed (the checkpoint it stored last);
//! records after that were processed but not checkpointed, and come again in the next
//! session, which is the at-least-once part. So the contract is:
//! - each session delivers the shard's records in order from just after `resume_after`,
//!   with no gap and no repeat;
//! - the counted parts, end to end, are the shard's records exactly once each;
//! - a session resumes where the previous one checkpointed (at one of the checkpoints
//!   it sent: an answer lost in transit leaves the outcome unknown).
//!
//! [`DeliveryLog::verify`] is pure; the truth it checks against is what
//! [`crate::ledger::read_stream`] read (itself checked against the ledger).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use runnel_client::{ConsumedRecord, RecordBatch};
use runnel_types::SeqNo;

use crate::ledger::{Report, ShardReads};

#[derive(Clone, Debug)]
struct Session {
    member: String,
    resume_after: Option<SeqNo>,
    records: Vec<ConsumedRecord>,
    /// Checkpoints this session sent (acknowledged or not).
    checkpoints: Vec<SeqNo>,
}

#[derive(Default)]
struct State {
    /// Sessions per shard, in the order they began.
    sessions: BTreeMap<String, Vec<Session>>,
    /// The open session of each (member, shard): its index in `sessions[shard]`.
    open: BTreeMap<(String, String), usize>,
    /// Events that name no open session (a bug in the test's consumer loop).
    orphans: Vec<String>,
}

/// Shared by every member task (cheap to clone).
#[derive(Clone, Default)]
pub struct DeliveryLog {
    state: Arc<Mutex<State>>,
}

impl DeliveryLog {
    pub fn new() -> DeliveryLog {
        DeliveryLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `member` got the lease on `shard` and reads after `resume_after`.
    pub fn lease_acquired(&self, member: &str, shard: &str, resume_after: Option<SeqNo>) {
        let mut st = self.lock();
        let list = st.sessions.entry(shard.to_string()).or_default();
        list.push(Session {
            member: member.to_string(),
            resume_after,
            records: Vec::new(),
            checkpoints: Vec::new(),
        });
        let i = list.len() - 1;
        st.open.insert((member.to_string(), shard.to_string()), i);
    }

    /// `member`'s session on `shard` ended (lease lost, reader failed, member killed).
    pub fn session_ended(&self, member: &str, shard: &str) {
        self.lock()
            .open
            .remove(&(member.to_string(), shard.to_string()));
    }

    /// Every open session of `member` ended (the member was killed).
    pub fn member_gone(&self, member: &str) {
        self.lock().open.retain(|(m, _), _| m != member);
    }

    fn with_session(&self, member: &str, shard: &str, f: impl FnOnce(&mut Session)) {
        let mut st = self.lock();
        let key = (member.to_string(), shard.to_string());
        let Some(i) = st.open.get(&key).copied() else {
            st.orphans
                .push(format!("{member} on {shard}: event without a lease"));
            return;
        };
        if let Some(s) = st.sessions.get_mut(shard).and_then(|l| l.get_mut(i)) {
            f(s);
        }
    }

    /// `member` was handed `batch`.
    pub fn delivered(&self, member: &str, batch: &RecordBatch) {
        self.with_session(member, &batch.shard_id, |s| {
            s.records.extend(batch.records.iter().cloned())
        });
    }

    /// `member` is about to store `seq` as the checkpoint of `shard`.
    pub fn checkpointing(&self, member: &str, shard: &str, seq: SeqNo) {
        self.with_session(member, shard, |s| s.checkpoints.push(seq));
    }

    /// Records delivered in all, counting repeats.
    pub fn delivered_count(&self) -> usize {
        self.lock()
            .sessions
            .values()
            .flatten()
            .map(|s| s.records.len())
            .sum()
    }

    /// Sessions in all (lease acquisitions).
    pub fn session_count(&self) -> usize {
        self.lock().sessions.values().map(Vec::len).sum()
    }

    /// Checks the deliveries against `truth`, every shard's records. Pure.
    pub fn verify(&self, truth: &ShardReads) -> Report {
        let st = self.lock();
        let mut report = Report {
            violations: st.orphans.clone(),
            ..Report::default()
        };
        for (shard, records) in truth {
            let sessions = st.sessions.get(shard).map(Vec::as_slice).unwrap_or(&[]);
            verify_shard(shard, records, sessions, &mut report);
        }
        report
    }
}

/// Index of the first record after `after` in `truth` (sorted by sequence number).
fn start_of(truth: &[ConsumedRecord], after: Option<SeqNo>) -> usize {
    after.map_or(0, |a| truth.partition_point(|r| r.sequence_number <= a))
}

fn same(a: &ConsumedRecord, b: &ConsumedRecord) -> bool {
    a.sequence_number == b.sequence_number && a.partition_key == b.partition_key && a.data == b.data
}

fn verify_shard(shard: &str, truth: &[ConsumedRecord], sessions: &[Session], report: &mut Report) {
    report.acked += truth.len();
    let v = &mut report.violations;
    if sessions.is_empty() && !truth.is_empty() {
        v.push(format!("{shard}: {} records, never leased", truth.len()));
        return;
    }
    let mut counted: Vec<&ConsumedRecord> = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        report.read += s.records.len();
        let from = start_of(truth, s.resume_after);
        for (k, r) in s.records.iter().enumerate() {
            match truth.get(from + k) {
                Some(t) if same(t, r) => {}
                Some(t) => {
                    v.push(format!(
                        "{shard}: {}'s session {i} (after {:?}) delivered seq {} where seq {} comes: gap, repeat or other bytes",
                        s.member, s.resume_after, r.sequence_number, t.sequence_number
                    ));
                    break;
                }
                None => {
                    v.push(format!(
                        "{shard}: {}'s session {i} delivered seq {}, which the shard does not hold",
                        s.member, r.sequence_number
                    ));
                    break;
                }
            }
        }
        let next = sessions.get(i + 1);
        if let Some(n) = next {
            let resumable = n.resume_after == s.resume_after
                || n.resume_after.is_some_and(|a| s.checkpoints.contains(&a));
            if !resumable {
                v.push(format!(
                    "{shard}: session {} ({}) resumed after {:?}, which session {i} ({}) never checkpointed (it resumed after {:?}, checkpointed {:?})",
                    i + 1,
                    n.member,
                    n.resume_after,
                    s.member,
                    s.resume_after,
                    s.checkpoints.last()
                ));
            }
        }
        let upto = next.map(|n| n.resume_after);
        counted.extend(
            s.records
                .iter()
                .filter(|r| upto.is_none_or(|u| u.is_some_and(|u| r.sequence_number <= u))),
        );
    }
    let ok = counted.len() == truth.len() && counted.iter().zip(truth).all(|(c, t)| same(c, t));
    if !ok {
        let first_bad = counted
            .iter()
            .zip(truth)
            .position(|(c, t)| !same(c, t))
            .unwrap_or(counted.len().min(truth.len()));
        v.push(format!(
            "{shard}: counting checkpoints, {} records were processed where the shard holds {}; first difference at position {first_bad} (seq {:?} processed, seq {:?} held)",
            counted.len(),
            truth.len(),
            counted.get(first_bad).map(|r| r.sequence_number),
            truth.get(first_bad).map(|r| r.sequence_number)
        ));
    }
    let delivered: std::collections::HashSet<SeqNo> = sessions
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.sequence_number))
        .collect();
    let missing = truth
        .iter()
        .filter(|t| !delivered.contains(&t.sequence_number))
        .count();
    if missing > 0 {
        v.push(format!("{shard}: {missing} records never delivered"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(seq: u128) -> ConsumedRecord {
        ConsumedRecord {
            sequence_number: SeqNo(seq),
            arrival_time_ms: 0,
            partition_key: format!("k{seq}"),
            data: Bytes::from(format!("d{seq}")),
            explicit_hash_key: None,
        }
    }

    fn batch(seqs: &[u128]) -> RecordBatch {
        RecordBatch {
            shard_id: "s".into(),
            records: seqs.iter().map(|s| rec(*s)).collect(),
            millis_behind_latest: 0,
        }
    }

    fn truth() -> ShardReads {
        BTreeMap::from([("s".to_string(), (1..=6).map(rec).collect())])
    }

    /// Member a reads 1-4 and checkpoints 2, dies; b resumes after 2 and reads 3-6.
    fn handover(b_resumes_after: u128, b_reads: &[u128]) -> DeliveryLog {
        let log = DeliveryLog::new();
        log.lease_acquired("a", "s", None);
        log.delivered("a", &batch(&[1, 2]));
        log.checkpointing("a", "s", SeqNo(2));
        log.delivered("a", &batch(&[3, 4]));
        log.member_gone("a");
        log.lease_acquired("b", "s", Some(SeqNo(b_resumes_after)));
        log.delivered("b", &batch(b_reads));
        log
    }

    #[test]
    fn a_handover_at_the_checkpoint_is_exactly_once() {
        let r = handover(2, &[3, 4, 5, 6]).verify(&truth());
        r.assert_ok();
    }

    #[test]
    fn a_lost_or_repeated_record_is_caught() {
        // b skips 5.
        let r = handover(2, &[3, 4, 6]).verify(&truth());
        assert!(!r.is_ok(), "{r}");
        // b resumes after a checkpoint nobody stored (records 3-4 never counted).
        let r = handover(4, &[5, 6]).verify(&truth());
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("never checkpointed")),
            "{r}"
        );
        // The last record was never delivered.
        let r = handover(2, &[3, 4, 5]).verify(&truth());
        assert!(
            r.violations.iter().any(|v| v.contains("never delivered")),
            "{r}"
        );
        // Data without a lease.
        let log = handover(2, &[3, 4, 5, 6]);
        log.delivered("c", &batch(&[1]));
        assert!(!log.verify(&truth()).is_ok());
    }
}
