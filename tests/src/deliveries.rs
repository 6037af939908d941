//! What consumer-group members were given, and the check of the group's contract
//! against the shards' true contents: every record delivered at least once, and
//! exactly once *counting checkpoints*.
//!
//! A member's tenure on a shard is a *session*: it starts when the member learns it
//! holds the lease (reading after the group's checkpoint, `resume_after`) and ends when
//! it learns the lease is gone, or dies. Sessions of one shard may overlap in time: a
//! member keeps reading on a lease that moved until its next heartbeat tells it so, and
//! the checkpoints it then tries are refused (fenced by the lease counter). So what a
//! session *counts* is what it checkpointed: the records in `(resume_after, last
//! checkpoint stored]`. The contract is then:
//! - each session delivers the shard's records in order from just after `resume_after`,
//!   with no gap and no repeat, and covers what it checkpointed;
//! - the counted intervals of all sessions tile the shard end to end: every record
//!   processed-and-checkpointed exactly once (a checkpoint whose answer was lost counts
//!   if a later session resumed from it);
//! - every record was delivered at least once.
//!
//! [`DeliveryLog::verify`] is pure; the truth it checks against is what
//! [`crate::ledger::read_stream`] read (itself checked against the ledger).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use runnel_client::{ConsumedRecord, RecordBatch};
use runnel_types::SeqNo;

use crate::ledger::{Report, ShardReads};

#[derive(Clone, Debug)]
struct Session {
    member: String,
    /// When the lease was noted, from the log's creation (for failure messages).
    began: std::time::Duration,
    /// When the session ended, if it did.
    ended: Option<std::time::Duration>,
    resume_after: Option<SeqNo>,
    records: Vec<ConsumedRecord>,
    /// Checkpoints this session sent, with what became of each.
    checkpoints: Vec<(SeqNo, Stored)>,
}

/// What became of a checkpoint call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Yes,
    /// Refused (lease lost, member unknown, ...): it changed nothing.
    No,
    /// The answer was lost: it may have been stored.
    Unknown,
}

impl Stored {
    /// Classifies a checkpoint call's result. Every error leaves the outcome unknown:
    /// the SDK retries a call whose attempt timed out and reports the *last* attempt's
    /// error, so a refusal (say LEASE_LOST, once the session lapsed) can follow an
    /// attempt that was stored.
    pub fn of(result: &Result<(), runnel_client::ClientError>) -> Stored {
        match result {
            Ok(()) => Stored::Yes,
            Err(_) => Stored::Unknown,
        }
    }
}

struct State {
    created: std::time::Instant,
    /// Sessions per shard, in the order they began.
    sessions: BTreeMap<String, Vec<Session>>,
    /// The open session of each (member, shard): its index in `sessions[shard]`.
    open: BTreeMap<(String, String), usize>,
    /// Events that name no open session (a bug in the test's consumer loop).
    orphans: Vec<String>,
}

impl Default for State {
    fn default() -> State {
        State {
            created: std::time::Instant::now(),
            sessions: BTreeMap::new(),
            open: BTreeMap::new(),
            orphans: Vec::new(),
        }
    }
}

impl Session {
    fn last_stored(&self) -> Option<SeqNo> {
        self.checkpoints
            .iter()
            .rev()
            .find(|(_, st)| *st == Stored::Yes)
            .map(|(q, _)| *q)
    }

    /// One line for a failure message.
    fn summary(&self, i: usize) -> String {
        format!(
            "    session {i}: {} from {:?} to {:?}, after {:?}: {} records ({:?}..{:?}), checkpoints {} (last stored {:?})",
            self.member,
            self.began,
            self.ended,
            self.resume_after,
            self.records.len(),
            self.records.first().map(|r| r.sequence_number),
            self.records.last().map(|r| r.sequence_number),
            self.checkpoints.len(),
            self.last_stored()
        )
    }
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
        let began = st.created.elapsed();
        self.end_open(&mut st, member, shard);
        let list = st.sessions.entry(shard.to_string()).or_default();
        list.push(Session {
            member: member.to_string(),
            began,
            ended: None,
            resume_after,
            records: Vec::new(),
            checkpoints: Vec::new(),
        });
        let i = list.len() - 1;
        st.open.insert((member.to_string(), shard.to_string()), i);
    }

    fn end_open(&self, st: &mut State, member: &str, shard: &str) {
        let now = st.created.elapsed();
        if let Some(i) = st.open.remove(&(member.to_string(), shard.to_string()))
            && let Some(s) = st.sessions.get_mut(shard).and_then(|l| l.get_mut(i))
        {
            s.ended = Some(now);
        }
    }

    /// `member`'s session on `shard` ended (lease lost, reader failed, member killed).
    pub fn session_ended(&self, member: &str, shard: &str) {
        let mut st = self.lock();
        self.end_open(&mut st, member, shard);
    }

    /// Every open session of `member` ended (the member was killed).
    pub fn member_gone(&self, member: &str) {
        let mut st = self.lock();
        let shards: Vec<String> = st
            .open
            .keys()
            .filter(|(m, _)| m == member)
            .map(|(_, s)| s.clone())
            .collect();
        for shard in shards {
            self.end_open(&mut st, member, &shard);
        }
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

    /// `member` is about to store `seq` as the checkpoint of `shard`: until
    /// [`DeliveryLog::checkpointed`] says otherwise (a member killed mid-call never
    /// does), it may have been stored.
    pub fn checkpointing(&self, member: &str, shard: &str, seq: SeqNo) {
        self.with_session(member, shard, |s| {
            s.checkpoints.push((seq, Stored::Unknown))
        });
    }

    /// What became of `member`'s checkpoint `seq` of `shard` (noted before with
    /// [`DeliveryLog::checkpointing`], else noted now).
    pub fn checkpointed(&self, member: &str, shard: &str, seq: SeqNo, outcome: Stored) {
        self.with_session(member, shard, |s| {
            match s.checkpoints.iter_mut().rev().find(|(q, _)| *q == seq) {
                Some(entry) => entry.1 = outcome,
                None => s.checkpoints.push((seq, outcome)),
            }
        });
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
    let before = report.violations.len();
    check_sessions(shard, truth, sessions, report);
    if report.violations.len() > before {
        let lines: Vec<String> = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| s.summary(i))
            .collect();
        report
            .violations
            .push(format!("{shard}: its sessions:\n{}", lines.join("\n")));
    }
}

fn check_sessions(
    shard: &str,
    truth: &[ConsumedRecord],
    sessions: &[Session],
    report: &mut Report,
) {
    report.acked += truth.len();
    let v = &mut report.violations;
    if sessions.is_empty() && !truth.is_empty() {
        v.push(format!("{shard}: {} records, never leased", truth.len()));
        return;
    }
    for (i, s) in sessions.iter().enumerate() {
        report.read += s.records.len();
        check_contiguous(shard, truth, i, s, v);
    }
    check_tiling(shard, truth, sessions, v);
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

/// Session `i` delivered the shard's records in order from just after `resume_after`,
/// and everything it stored a checkpoint for.
fn check_contiguous(
    shard: &str,
    truth: &[ConsumedRecord],
    i: usize,
    s: &Session,
    v: &mut Vec<String>,
) {
    let from = start_of(truth, s.resume_after);
    for (k, r) in s.records.iter().enumerate() {
        match truth.get(from + k) {
            Some(t) if same(t, r) => {}
            Some(t) => {
                v.push(format!(
                    "{shard}: {}'s session {i} (after {:?}) delivered seq {} where seq {} comes: gap, repeat or other bytes",
                    s.member, s.resume_after, r.sequence_number, t.sequence_number
                ));
                return;
            }
            None => {
                v.push(format!(
                    "{shard}: {}'s session {i} delivered seq {}, which the shard does not hold",
                    s.member, r.sequence_number
                ));
                return;
            }
        }
    }
    let last = s.records.last().map(|r| r.sequence_number);
    if let Some(c) = s.last_stored().filter(|c| Some(*c) > last) {
        v.push(format!(
            "{shard}: {}'s session {i} stored checkpoint {c} past its last delivered record {last:?}",
            s.member
        ));
    }
}

/// The intervals `(resume_after, last stored checkpoint]` of the sessions tile the
/// shard from its start to its last record, without overlap or gap. A checkpoint whose
/// answer was lost (or whose member was killed mid-call) may or may not have been
/// stored, so a session's interval may end at several places, or be empty.
fn check_tiling(shard: &str, truth: &[ConsumedRecord], sessions: &[Session], v: &mut Vec<String>) {
    // Each session that may have stored something: where it started and where it may end.
    let mut spans: Vec<(Option<SeqNo>, BTreeSet<Option<SeqNo>>)> = sessions
        .iter()
        .map(|s| (s.resume_after, possible_ends(s)))
        .filter(|(start, ends)| ends.iter().any(|e| e != start))
        .collect();
    // Spans that may be empty first among equal starts, then the shorter ones.
    spans.sort_by_key(|(start, ends)| (*start, !ends.contains(start), ends.last().copied()));
    let mut at: BTreeSet<Option<SeqNo>> = BTreeSet::from([None]);
    for (start, ends) in spans {
        if !at.contains(&start) {
            let past = at.last().is_some_and(|a| start > *a);
            v.push(format!(
                "{shard}: checkpoints stored up to one of {at:?}, but a session resumed after {start:?}: {}",
                if past { "records skipped" } else { "records counted twice" }
            ));
        }
        if ends.contains(&start) {
            at.extend(ends);
        } else {
            at = ends;
        }
    }
    let tip = truth.last().map(|r| r.sequence_number);
    if !at.contains(&tip) {
        v.push(format!(
            "{shard}: checkpoints stored up to one of {at:?}, but the shard ends at {tip:?}"
        ));
    }
}

/// Where a session's stored progress may end: its last stored checkpoint (or its start,
/// if none), or any later checkpoint whose outcome is unknown.
fn possible_ends(s: &Session) -> BTreeSet<Option<SeqNo>> {
    let stored = s.last_stored();
    let mut ends = BTreeSet::from([stored.or(s.resume_after)]);
    ends.extend(
        s.checkpoints
            .iter()
            .filter(|(q, st)| *st == Stored::Unknown && Some(*q) > stored)
            .map(|(q, _)| Some(*q)),
    );
    ends
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
        log.checkpointed("a", "s", SeqNo(2), Stored::Yes);
        log.checkpointed("a", "s", SeqNo(4), Stored::No);
        log.delivered("a", &batch(&[3, 4]));
        log.member_gone("a");
        log.lease_acquired("b", "s", Some(SeqNo(b_resumes_after)));
        log.delivered("b", &batch(b_reads));
        if let Some(last) = b_reads.last() {
            log.checkpointed("b", "s", SeqNo(*last), Stored::Yes);
        }
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
            r.violations.iter().any(|v| v.contains("records skipped")),
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

    /// b believes for a moment it holds a's lease (a stale answer) and reads 1-3.
    fn stale_holder(b_stored: Stored) -> DeliveryLog {
        let log = DeliveryLog::new();
        log.lease_acquired("a", "s", None);
        log.lease_acquired("b", "s", None);
        log.delivered("b", &batch(&[1, 2, 3]));
        log.checkpointed("b", "s", SeqNo(3), b_stored);
        log.session_ended("b", "s");
        log.delivered("a", &batch(&[1, 2, 3, 4, 5, 6]));
        log.checkpointed("a", "s", SeqNo(6), Stored::Yes);
        log
    }

    #[test]
    fn a_fenced_stale_holder_counts_nothing() {
        stale_holder(Stored::No).verify(&truth()).assert_ok();
        // Had its checkpoint been stored, records 1-3 would count twice.
        let r = stale_holder(Stored::Yes).verify(&truth());
        assert!(
            r.violations.iter().any(|v| v.contains("counted twice")),
            "{r}"
        );
    }

    #[test]
    fn a_checkpoint_cut_off_by_a_kill_may_have_been_stored() {
        let log = DeliveryLog::new();
        log.lease_acquired("a", "s", None);
        log.delivered("a", &batch(&[1, 2, 3]));
        log.checkpointing("a", "s", SeqNo(3));
        log.member_gone("a");
        log.lease_acquired("b", "s", Some(SeqNo(3)));
        log.delivered("b", &batch(&[4, 5, 6]));
        log.checkpointed("b", "s", SeqNo(6), Stored::Yes);
        // a's only checkpoint may have been stored, and b resumed at it.
        log.verify(&truth()).assert_ok();
        // Had b resumed anywhere else, records would be skipped.
        log.lease_acquired("c", "s", Some(SeqNo(5)));
        log.delivered("c", &batch(&[6]));
        log.checkpointed("c", "s", SeqNo(6), Stored::Yes);
        let r = log.verify(&truth());
        assert!(
            r.violations.iter().any(|v| v.contains("counted twice")),
            "{r}"
        );
    }
}
