//! One test (or a few) per operation of `SegmentLog`, on the simulated disk.

mod common;

use common::*;
use runnel_log::{EntryId, LogError, SimDisk};
use runnel_types::{LogIndex, Term};

fn id(index: u64, term: u64) -> EntryId {
    EntryId {
        index: LogIndex(index),
        term: Term(term),
    }
}

#[test]
fn empty_log() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    assert_eq!(log.first_index(), None);
    assert_eq!(log.last_entry(), None);
    assert_eq!(log.purged(), None);
    assert_eq!(log.term_of(LogIndex(1)).expect("term_of"), None);
    assert_eq!(log.find_by_timestamp(0).expect("find"), None);
    assert!(read_all(&log).is_empty());
    log.sync().expect("sync of nothing");
    assert_eq!(log.stats().segments, 0);
    assert_eq!(log.dir(), sim_dir());
}

#[test]
fn append_and_read_across_segments() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    let all = entries(1, 60, 1, 40);
    for batch in all.chunks(7) {
        log.append(batch).expect("append");
    }
    assert!(log.stats().segments > 5, "{:?}", log.stats());
    assert_eq!(read_all(&log), all);
    assert_eq!(log.first_index(), Some(LogIndex(1)));
    assert_eq!(log.last_entry(), Some(id(60, 1)));
    let mid = log
        .read(LogIndex(13), LogIndex(29), usize::MAX)
        .expect("read");
    assert_eq!(mid, all[12..28]);
    // An oversized (beyond segment size) entry gets a segment of its own.
    let big = entry(61, 1, 610, 2000);
    log.append(std::slice::from_ref(&big)).expect("append big");
    assert_eq!(
        log.read(LogIndex(61), LogIndex(62), 1).expect("read"),
        vec![big]
    );
}

#[test]
fn read_respects_max_bytes_but_returns_one_entry() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    log.append(&entries(1, 20, 1, 40)).expect("append");
    let to = LogIndex(21);
    assert_eq!(log.read(LogIndex(1), to, 0).expect("read").len(), 1);
    assert_eq!(log.read(LogIndex(1), to, 39).expect("read").len(), 1);
    assert_eq!(log.read(LogIndex(1), to, 120).expect("read").len(), 3);
    assert_eq!(log.read(LogIndex(1), to, 159).expect("read").len(), 3);
    assert_eq!(
        log.read(LogIndex(5), LogIndex(5), 100).expect("read"),
        vec![]
    );
    assert_eq!(
        log.read(LogIndex(21), LogIndex(30), 100).expect("read"),
        vec![]
    );
}

#[test]
fn appends_must_be_contiguous() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    let err = log.append(&entries(2, 3, 1, 1)).expect_err("gap");
    assert!(matches!(
        err,
        LogError::NonContiguous {
            expected: LogIndex(1),
            got: LogIndex(2)
        }
    ));
    let mut batch = entries(1, 3, 1, 1);
    batch.swap(1, 2);
    assert!(matches!(
        log.append(&batch),
        Err(LogError::NonContiguous { .. })
    ));
    assert_eq!(log.last_entry(), None, "a rejected batch writes nothing");
    log.append(&entries(1, 3, 1, 1)).expect("append");
    assert!(matches!(
        log.append(&entries(3, 3, 1, 1)),
        Err(LogError::NonContiguous {
            expected: LogIndex(4),
            got: LogIndex(3)
        })
    ));
}

#[test]
fn oversized_payload_is_refused() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    let mut e = entry(1, 1, 0, 0);
    e.payload = bytes::Bytes::from(vec![0u8; runnel_log::frame::PAYLOAD_BYTES_MAX + 1]);
    assert!(matches!(
        log.append(&[e]),
        Err(LogError::EntryTooLarge { .. })
    ));
}

#[test]
fn term_of_follows_terms() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    log.append(&entries(1, 5, 1, 10)).expect("append");
    log.append(&entries(6, 9, 3, 10)).expect("append");
    assert_eq!(log.term_of(LogIndex(5)).expect("t"), Some(Term(1)));
    assert_eq!(log.term_of(LogIndex(6)).expect("t"), Some(Term(3)));
    assert_eq!(log.term_of(LogIndex(10)).expect("t"), None);
    assert_eq!(log.term_of(LogIndex(0)).expect("t"), None);
    assert_eq!(log.last_entry(), Some(id(9, 3)));
}

#[test]
fn sync_is_group_commit_and_survives_crash() {
    let disk = SimDisk::new();
    let config = runnel_log::LogConfig::default();
    let log = open_sim(&disk, config.clone());
    for i in 1..=10 {
        log.append(&entries(i, i, 1, 100)).expect("append");
    }
    let before = disk.sync_count();
    log.sync().expect("sync");
    assert_eq!(disk.sync_count() - before, 1, "ten appends, one fdatasync");
    log.append(&entries(11, 12, 1, 100)).expect("append");
    drop(log);
    disk.crash();
    let log = open_sim(&disk, config);
    assert_eq!(
        read_all(&log),
        entries(1, 10, 1, 100),
        "synced kept, unsynced lost"
    );
    log.append(&entries(11, 11, 2, 5))
        .expect("append after recovery");
}

#[test]
fn truncate_suffix_within_and_across_segments() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    let all = entries(1, 40, 1, 30);
    log.append(&all).expect("append");
    log.truncate_suffix(LogIndex(27)).expect("truncate");
    assert_eq!(read_all(&log), all[..26]);
    assert_eq!(log.last_entry(), Some(id(26, 1)));
    log.truncate_suffix(LogIndex(50))
        .expect("past the end: no-op");
    log.append(&entries(27, 30, 2, 5))
        .expect("append after truncate");
    assert_eq!(log.term_of(LogIndex(27)).expect("t"), Some(Term(2)));
    // Durable on return, without a sync.
    drop(log);
    disk.crash();
    let log = open_sim(&disk, small_config());
    assert_eq!(log.last_entry(), Some(id(26, 1)), "27.. were never synced");
    log.truncate_suffix(LogIndex(1)).expect("truncate all");
    assert_eq!(log.last_entry(), None);
    assert_eq!(log.stats().segments, 0);
    log.append(&entries(1, 2, 5, 5)).expect("restart at 1");
}

#[test]
fn truncate_at_a_segment_base() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    log.append(&entries(1, 40, 1, 30)).expect("append");
    let names = disk_segments(&disk);
    let second: u64 = names[1][..20].parse().expect("numeric name");
    log.truncate_suffix(LogIndex(second)).expect("truncate");
    assert_eq!(disk_segments(&disk).len(), 1);
    assert_eq!(
        log.last_entry().map(|e| e.index),
        Some(LogIndex(second - 1))
    );
    drop(log);
    let log = open_sim(&disk, small_config());
    assert_eq!(read_all(&log), entries(1, second - 1, 1, 30));
}

fn disk_segments(disk: &SimDisk) -> Vec<String> {
    use runnel_log::Disk;
    let mut names: Vec<String> = disk
        .list_dir(&sim_dir())
        .expect("ls")
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

#[test]
fn purge_prefix_hides_and_deletes() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    let all = entries(1, 40, 1, 30);
    log.append(&all).expect("append");
    let segments = log.stats().segments;
    log.purge_prefix(id(17, 1)).expect("purge");
    assert!(log.stats().segments < segments, "whole segments deleted");
    assert_eq!(log.first_index(), Some(LogIndex(18)));
    assert_eq!(log.purged(), Some(id(17, 1)));
    assert_eq!(read_all(&log), all[17..]);
    assert_eq!(log.term_of(LogIndex(17)).expect("t"), None);
    assert_eq!(
        log.read(LogIndex(1), LogIndex(19), 0).expect("r"),
        all[17..18]
    );
    log.purge_prefix(id(5, 1))
        .expect("older purge point: no-op");
    assert_eq!(log.purged(), Some(id(17, 1)));
    drop(log);
    disk.crash();
    let log = open_sim(&disk, small_config());
    assert_eq!(log.purged(), Some(id(17, 1)), "the purge point is durable");
    assert_eq!(log.first_index(), Some(LogIndex(18)));
}

#[test]
fn purge_past_the_end_empties_the_log() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    log.append(&entries(1, 10, 1, 30)).expect("append");
    log.purge_prefix(id(100, 4)).expect("purge");
    assert_eq!((log.first_index(), log.last_entry()), (None, None));
    assert_eq!(log.stats().segments, 0);
    assert!(matches!(
        log.append(&entries(11, 11, 4, 1)),
        Err(LogError::NonContiguous {
            expected: LogIndex(101),
            ..
        })
    ));
    log.append(&entries(101, 103, 4, 1))
        .expect("append after purge");
    log.sync().expect("sync");
    drop(log);
    disk.crash();
    let log = open_sim(&disk, small_config());
    assert_eq!(log.first_index(), Some(LogIndex(101)));
    assert_eq!(log.last_entry(), Some(id(103, 4)));
}

#[test]
fn find_by_timestamp_uses_the_running_max() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    let ts = [10, 20, 15, 30, 25, 25, 40, 5, 50];
    let batch: Vec<_> = ts
        .iter()
        .enumerate()
        .map(|(i, t)| entry(i as u64 + 1, 1, *t, 50))
        .collect();
    log.append(&batch).expect("append");
    let find = |t| log.find_by_timestamp(t).expect("find").map(|i| i.0);
    assert_eq!(find(0), Some(1));
    assert_eq!(find(10), Some(1));
    assert_eq!(find(11), Some(2));
    assert_eq!(find(16), Some(2));
    assert_eq!(find(21), Some(4));
    assert_eq!(find(26), Some(4));
    assert_eq!(find(31), Some(7));
    assert_eq!(find(41), Some(9));
    assert_eq!(find(51), None);
    log.purge_prefix(id(3, 1)).expect("purge");
    assert_eq!(find(0), Some(4));
    assert_eq!(find(16), Some(4));
}

#[test]
fn a_failed_write_poisons_until_reopen() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    log.append(&entries(1, 5, 1, 10)).expect("append");
    log.sync().expect("sync");
    disk.set_fail_writes(true);
    assert!(matches!(
        log.append(&entries(6, 6, 1, 10)),
        Err(LogError::Io { .. })
    ));
    disk.set_fail_writes(false);
    assert!(matches!(
        log.append(&entries(6, 6, 1, 10)),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(log.sync(), Err(LogError::Poisoned { .. })));
    assert_eq!(read_all(&log).len(), 5, "reads still work");
    drop(log);
    let log = open_sim(&disk, small_config());
    log.append(&entries(6, 6, 1, 10))
        .expect("append after reopen");
}

#[test]
fn a_failed_sync_poisons() {
    let disk = SimDisk::new();
    let log = open_sim(&disk, small_config());
    log.append(&entries(1, 2, 1, 10)).expect("append");
    disk.set_fail_syncs(true);
    assert!(matches!(log.sync(), Err(LogError::Io { .. })));
    disk.set_fail_syncs(false);
    assert!(matches!(log.sync(), Err(LogError::Poisoned { .. })));
}

#[test]
fn shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<runnel_log::SegmentLog>();
    let disk = SimDisk::new();
    let log = std::sync::Arc::new(open_sim(&disk, small_config()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                let got = read_all(&log);
                for (i, e) in got.iter().enumerate() {
                    assert_eq!(e.index, LogIndex(i as u64 + 1));
                }
            }
        })
    };
    for i in 1..=200 {
        log.append(&entries(i, i, 1, 20)).expect("append");
    }
    reader.join().expect("reader");
}
