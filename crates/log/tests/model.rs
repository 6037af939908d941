//! The segment log against a `Vec` model: random sequences of append, truncate, purge,
//! sync, crash (with and without torn writes) and reopen, on the simulated disk; the
//! same without crashes on real files. Small segments, so they roll often.

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use runnel_log::{Disk, Entry, EntryId, RealDisk, SegmentLog, SimDisk};
use runnel_types::{LogIndex, Term};

#[derive(Clone, Debug)]
enum Op {
    /// `lens.len()` entries with these payload lengths; a new term if `new_term`;
    /// timestamps move by the deltas (which may go back).
    Append {
        lens: Vec<usize>,
        new_term: bool,
        ts_deltas: Vec<i64>,
    },
    Sync,
    /// Truncate at `first + pick % (len + 1)`.
    Truncate {
        pick: usize,
    },
    /// Purge up to `purged + 1 + pick % (len + 3)`: sometimes past the end.
    Purge {
        pick: usize,
    },
    Crash,
    CrashTear {
        seed: u64,
    },
    Reopen,
    /// A read with a byte budget, and timestamp lookups, checked against the model.
    Probe {
        from: usize,
        len: usize,
        max_bytes: usize,
        ts: u64,
    },
}

fn op(crashes: bool) -> impl Strategy<Value = Op> {
    let append = (
        prop::collection::vec(0usize..120, 1..6),
        prop::bool::weighted(0.2),
        prop::collection::vec(-20i64..40, 6),
    )
        .prop_map(|(lens, new_term, ts_deltas)| Op::Append {
            lens,
            new_term,
            ts_deltas,
        });
    let crash_weight = if crashes { 1 } else { 0 };
    prop_oneof![
        8 => append,
        3 => Just(Op::Sync),
        1 => any::<usize>().prop_map(|pick| Op::Truncate { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Purge { pick }),
        crash_weight => Just(Op::Crash),
        crash_weight => any::<u64>().prop_map(|seed| Op::CrashTear { seed }),
        1 => Just(Op::Reopen),
        2 => (any::<usize>(), 0usize..30, 0usize..400, 0u64..600)
            .prop_map(|(from, len, max_bytes, ts)| Op::Probe { from, len, max_bytes, ts }),
    ]
}

/// What the log must hold.
#[derive(Debug, Default)]
struct Model {
    /// The entries present, contiguous.
    entries: Vec<Entry>,
    purged: Option<EntryId>,
    /// Entries at or below this index are durable.
    synced: u64,
    term: u64,
    ts: u64,
}

impl Model {
    fn next_index(&self) -> u64 {
        match (self.entries.last(), self.purged) {
            (Some(e), _) => e.index.0 + 1,
            (None, Some(p)) => p.index.0 + 1,
            (None, None) => 1,
        }
    }

    fn first_allowed(&self) -> u64 {
        self.purged.map_or(1, |p| p.index.0 + 1)
    }

    fn append(&mut self, lens: &[usize], new_term: bool, deltas: &[i64]) -> Vec<Entry> {
        if new_term || self.term == 0 {
            self.term += 1;
        }
        let start = self.next_index();
        let batch: Vec<Entry> = lens
            .iter()
            .zip(deltas)
            .enumerate()
            .map(|(i, (len, d))| {
                self.ts = self.ts.saturating_add_signed(*d);
                entry(start + i as u64, self.term, self.ts, *len)
            })
            .collect();
        self.entries.extend(batch.iter().cloned());
        batch
    }

    fn truncate(&mut self, from: u64) {
        self.entries.retain(|e| e.index.0 < from);
        self.synced = self.synced.min(from.saturating_sub(1));
    }

    fn purge(&mut self, up_to: u64) -> EntryId {
        let term = self
            .entries
            .iter()
            .find(|e| e.index.0 == up_to)
            .map_or(Term(self.term), |e| e.term);
        let id = EntryId {
            index: LogIndex(up_to),
            term,
        };
        self.entries.retain(|e| e.index.0 > up_to);
        self.purged = Some(id);
        id
    }

    /// Expected result of `read(from, to, max_bytes)`.
    fn read(&self, from: u64, to: u64, max_bytes: usize) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0;
        for e in self
            .entries
            .iter()
            .filter(|e| e.index.0 >= from && e.index.0 < to)
        {
            if !out.is_empty() && bytes + e.payload.len() > max_bytes {
                break;
            }
            bytes += e.payload.len();
            out.push(e.clone());
        }
        out
    }

    fn find_by_timestamp(&self, ts: u64) -> Option<LogIndex> {
        self.entries
            .iter()
            .find(|e| e.timestamp_ms >= ts)
            .map(|e| e.index)
    }
}

/// Everything observable agrees with the model.
fn check(log: &SegmentLog, m: &Model) {
    assert_eq!(read_all(log), m.entries);
    assert_eq!(log.first_index(), m.entries.first().map(|e| e.index));
    assert_eq!(log.last_entry(), m.entries.last().map(Entry::id));
    assert_eq!(log.purged(), m.purged);
    let lo = m.first_allowed().saturating_sub(2);
    for i in lo..m.next_index() + 2 {
        let want = m.entries.iter().find(|e| e.index.0 == i).map(|e| e.term);
        assert_eq!(
            log.term_of(LogIndex(i)).expect("term_of"),
            want,
            "term_of({i})"
        );
    }
}

fn probe(log: &SegmentLog, m: &Model, from: usize, len: usize, max_bytes: usize, ts: u64) {
    let first = m.first_allowed().saturating_sub(1);
    let span = (m.next_index() - first + 2) as usize;
    let from = first + (from % span) as u64;
    let to = from + len as u64;
    let got = log
        .read(LogIndex(from), LogIndex(to), max_bytes)
        .expect("read");
    assert_eq!(
        got,
        m.read(from, to, max_bytes),
        "read({from}, {to}, {max_bytes})"
    );
    let found = log.find_by_timestamp(ts).expect("find_by_timestamp");
    assert_eq!(found, m.find_by_timestamp(ts), "find_by_timestamp({ts})");
}

/// After a crash: synced entries all there, byte-identical; survivors beyond them a
/// prefix of what was appended. The model adopts what survived.
fn check_after_crash(log: &SegmentLog, m: &mut Model) {
    let got = read_all(log);
    assert!(got.len() <= m.entries.len(), "more entries than appended");
    assert_eq!(
        got,
        m.entries[..got.len()],
        "survivors are a prefix, in order"
    );
    let must = m.entries.iter().filter(|e| e.index.0 <= m.synced).count();
    assert!(
        got.len() >= must,
        "lost synced entries: have {}, need {must}",
        got.len()
    );
    m.entries.truncate(got.len());
    m.synced = m.next_index() - 1;
    assert_eq!(log.purged(), m.purged, "the purge point is durable");
}

struct Harness {
    disk: Arc<dyn Disk>,
    sim: Option<SimDisk>,
    dir: std::path::PathBuf,
}

impl Harness {
    fn open(&self) -> SegmentLog {
        open_at(self.disk.clone(), &self.dir, small_config())
    }
}

fn run(h: &Harness, ops: &[Op]) {
    let mut log = h.open();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append {
                lens,
                new_term,
                ts_deltas,
            } => {
                let batch = m.append(lens, *new_term, ts_deltas);
                log.append(&batch).expect("append");
            }
            Op::Sync => {
                log.sync().expect("sync");
                m.synced = m.next_index() - 1;
            }
            Op::Truncate { pick } => {
                let first = m.first_allowed();
                let from = first + (*pick % (m.entries.len() + 1)) as u64;
                log.truncate_suffix(LogIndex(from)).expect("truncate");
                m.truncate(from);
            }
            Op::Purge { pick } => {
                let up_to = m.first_allowed() + (*pick % (m.entries.len() + 3)) as u64;
                let id = m.purge(up_to);
                log.purge_prefix(id).expect("purge");
            }
            Op::Crash | Op::CrashTear { .. } => {
                drop(log);
                let sim = h.sim.as_ref().expect("crashes only on the simulated disk");
                match op {
                    Op::CrashTear { seed } => sim.crash_with_tear(*seed),
                    _ => sim.crash(),
                }
                log = h.open();
                check_after_crash(&log, &mut m);
            }
            Op::Reopen => {
                drop(log);
                log = h.open();
            }
            Op::Probe {
                from,
                len,
                max_bytes,
                ts,
            } => {
                probe(&log, &m, *from, *len, *max_bytes, *ts);
            }
        }
        check(&log, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn sim_disk_with_crashes(ops in prop::collection::vec(op(true), 1..60)) {
        let sim = SimDisk::new();
        let h = Harness { disk: sim.handle(), sim: Some(sim), dir: sim_dir() };
        run(&h, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn real_disk_with_reopens(ops in prop::collection::vec(op(false), 1..50)) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let h = Harness { disk: RealDisk::shared(), sim: None, dir: tmp.path().join("log") };
        run(&h, &ops);
    }
}
