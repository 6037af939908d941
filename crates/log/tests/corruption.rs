//! Damaged files: a torn tail is cut cleanly; anything else is refused with a clear
//! error that names the file, and the files are left exactly as they were. Never a panic.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use runnel_log::{LogError, RealDisk, SegmentLog};
use runnel_types::LogIndex;

/// 30-byte payloads: 62-byte frames, 7 per 512-byte segment.
const FRAME: u64 = 62;
const HEADER: u64 = 32;

/// A synced log of 30 entries in 5 segments, closed.
fn make_log() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let log = open_at(RealDisk::shared(), &dir, small_config());
    log.append(&entries(1, 30, 1, 30)).expect("append");
    log.sync().expect("sync");
    (tmp, dir)
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fs::read_dir(dir)
        .expect("ls")
        .map(|e| {
            let p = e.expect("entry").path();
            let bytes = fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).expect("read");
    f(&mut bytes);
    fs::write(path, bytes).expect("write");
}

fn open(dir: &Path) -> Result<SegmentLog, LogError> {
    SegmentLog::open(RealDisk::shared(), dir, small_config())
}

/// Opening fails with corruption naming `file`, and changes nothing.
fn assert_refused(dir: &Path, file: &Path, offset: u64) {
    let before = snapshot(dir);
    match open(dir) {
        Err(LogError::Corruption {
            path,
            offset: at,
            reason,
        }) => {
            assert_eq!(path, file, "{reason}");
            assert_eq!(at, offset, "{reason}");
            let msg = LogError::Corruption {
                path,
                offset: at,
                reason,
            }
            .to_string();
            assert!(msg.contains("Nothing was modified"), "{msg}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(
        snapshot(dir),
        before,
        "a refused open must not touch the files"
    );
}

#[test]
fn bit_flip_in_a_sealed_segment_is_refused() {
    let (_tmp, dir) = make_log();
    let seg = &segment_paths(&dir)[1];
    let at = HEADER + 3 * FRAME;
    edit(seg, |b| b[at as usize + 40] ^= 0x10);
    assert_refused(&dir, seg, at);
}

#[test]
fn bit_flip_followed_by_valid_frames_in_the_last_segment_is_refused() {
    let (_tmp, dir) = make_log();
    let last = segment_paths(&dir).pop().expect("segments");
    let at = HEADER;
    edit(&last, |b| b[at as usize + 35] ^= 1);
    assert_refused(&dir, &last, at);
}

#[test]
fn oversized_length_in_a_sealed_segment_is_refused() {
    let (_tmp, dir) = make_log();
    let seg = &segment_paths(&dir)[0];
    let at = HEADER + 2 * FRAME;
    edit(seg, |b| {
        b[at as usize..at as usize + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes())
    });
    assert_refused(&dir, seg, at);
}

#[test]
fn zero_filled_tail_is_cut() {
    let (_tmp, dir) = make_log();
    let last = segment_paths(&dir).pop().expect("segments");
    let len = fs::metadata(&last).expect("stat").len();
    edit(&last, |b| b.extend_from_slice(&[0u8; 300]));
    let log = open(&dir).expect("open");
    assert_eq!(read_all(&log), entries(1, 30, 1, 30));
    assert_eq!(
        fs::metadata(&last).expect("stat").len(),
        len,
        "tail cut on disk"
    );
    log.append(&entries(31, 31, 1, 30))
        .expect("append after the cut");
}

#[test]
fn cut_tail_loses_only_the_partial_entry() {
    let (_tmp, dir) = make_log();
    let last = segment_paths(&dir).pop().expect("segments");
    edit(&last, |b| b.truncate(b.len() - 10));
    let log = open(&dir).expect("open");
    assert_eq!(read_all(&log), entries(1, 29, 1, 30));
}

#[test]
fn crc_mismatch_in_the_last_frame_is_a_torn_tail() {
    let (_tmp, dir) = make_log();
    let last = segment_paths(&dir).pop().expect("segments");
    edit(&last, |b| {
        let n = b.len();
        b[n - 3] ^= 0xff;
    });
    let log = open(&dir).expect("open");
    assert_eq!(log.last_entry().map(|e| e.index), Some(LogIndex(29)));
}

#[test]
fn oversized_length_at_the_tail_is_cut() {
    let (_tmp, dir) = make_log();
    let last = segment_paths(&dir).pop().expect("segments");
    edit(&last, |b| {
        let at = b.len() - FRAME as usize;
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    });
    let log = open(&dir).expect("open");
    assert_eq!(log.last_entry().map(|e| e.index), Some(LogIndex(29)));
}

#[test]
fn torn_header_of_the_last_segment_is_removed() {
    let (_tmp, dir) = make_log();
    let log = open(&dir).expect("open");
    let next = log.last_entry().expect("entries").index.next();
    drop(log);
    let torn = dir.join(format!("{:020}.seg", next.0));
    fs::write(&torn, b"RNN").expect("write");
    let log = open(&dir).expect("open");
    assert!(!torn.exists());
    log.append(&entries(31, 31, 1, 30)).expect("append");
}

#[test]
fn wrong_magic_and_version_are_clear_errors() {
    let (_tmp, dir) = make_log();
    let first = segment_paths(&dir)[0].clone();
    let before = fs::read(&first).expect("read");
    edit(&first, |b| b[0] = b'X');
    let err = open(&dir).expect_err("bad magic");
    assert!(
        matches!(&err, LogError::BadMagic { path, .. } if *path == first),
        "{err}"
    );
    fs::write(&first, &before).expect("restore");
    edit(&first, |b| b[8] = 7);
    let err = open(&dir).expect_err("bad version");
    assert!(
        matches!(err, LogError::UnsupportedVersion { found: 7, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("version 7"));
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let (_tmp, dir) = make_log();
    let segs = segment_paths(&dir);
    fs::remove_file(&segs[2]).expect("rm");
    assert_refused(&dir, &segs[3], 0);
}

#[test]
fn damaged_purge_file_is_refused() {
    let (_tmp, dir) = make_log();
    let log = open(&dir).expect("open");
    log.purge_prefix(runnel_log::EntryId {
        index: LogIndex(3),
        term: runnel_types::Term(1),
    })
    .expect("purge");
    drop(log);
    edit(&dir.join("purged"), |b| b[18] ^= 1);
    assert_refused(&dir, &dir.join("purged"), 32);
}

/// Random damage: a panic would fail the test; a refusal must leave the files as they
/// were; an accepted log must hold a prefix of what was written.
#[test]
fn random_damage_never_panics() {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..60 {
        let (_tmp, dir) = make_log();
        let segs = segment_paths(&dir);
        let seg = &segs[(next() % segs.len() as u64) as usize];
        edit(seg, |b| match next() % 4 {
            0 => b.truncate((next() % b.len() as u64) as usize),
            1 => b.extend((0..next() % 200).map(|_| next() as u8)),
            _ => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = next() as u8;
                }
            }
        });
        let before = snapshot(&dir);
        match open(&dir) {
            Ok(log) => {
                let got = read_all(&log);
                assert_eq!(got, entries(1, got.len() as u64, 1, 30));
            }
            Err(_) => assert_eq!(snapshot(&dir), before),
        }
    }
}
