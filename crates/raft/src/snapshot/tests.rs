//! Staging and installing received snapshots on the simulated disk: several chunks,
//! a short stream, leftovers after a crash, an install cut off by I/O errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use runnel_log::SimDisk;
use runnel_nodemeta::MemStore;
use runnel_types::Term;

use super::*;
use crate::types::{PeerNode, log_id};

const GROUP: GroupId = GroupId(7);
/// Entries of a quarter chunk each: a snapshot of `4 * n` entries is `n` chunks.
const PAYLOAD_BYTES: usize = SNAPSHOT_CHUNK_BYTES / 4;

fn entry(index: u64, term: u64) -> Entry {
    let fill = (index % 251) as u8;
    Entry {
        index: LogIndex(index),
        term: Term(term),
        timestamp_ms: index * 10,
        payload: Bytes::from(vec![fill; PAYLOAD_BYTES]),
    }
}

fn id(index: u64, term: u64) -> EntryId {
    EntryId {
        index: LogIndex(index),
        term: Term(term),
    }
}

/// The snapshot meta of a snapshot ending at segment-log entry `last`.
fn meta_up_to(last: EntryId) -> RaftSnapshotMeta {
    let nodes: BTreeMap<u64, PeerNode> = [(1, PeerNode::new("a:1"))].into();
    let membership =
        openraft::Membership::new(vec![BTreeSet::from([1])], nodes).expect("valid membership");
    RaftSnapshotMeta {
        last_log_id: Some(log_id(last.term.0, last.index.0 - 1)),
        last_membership: RaftStoredMembership::new(Some(log_id(1, 0)), membership),
    }
}

struct Node {
    disk: SimDisk,
    meta: NodeMeta,
    area: StagingArea,
}

impl Node {
    fn new() -> Node {
        let disk = SimDisk::new();
        let area = StagingArea::new(disk.handle(), "/data/snapshots", LogConfig::default());
        Node {
            disk,
            meta: NodeMeta::new(Arc::new(MemStore::default())),
            area,
        }
    }

    fn log_dir() -> PathBuf {
        Path::new("/data/groups").join(format!("{:020}", GROUP.0))
    }

    fn open_log(&self) -> SegmentLog {
        SegmentLog::open(self.disk.handle(), Self::log_dir(), LogConfig::default())
            .expect("open log")
    }

    /// A group log holding `1..=n` of `term`, synced.
    fn stale_log(&self, n: u64, term: u64) -> SegmentLog {
        let log = self.open_log();
        let entries: Vec<Entry> = (1..=n).map(|i| entry(i, term)).collect();
        log.append(&entries).expect("append");
        log.sync().expect("sync");
        log
    }

    /// Stages `first..=last` of `term` after trim point `first - 1`, in chunks as a
    /// leader sends them.
    fn stage(&self, first: u64, last: u64, term: u64) -> Staging {
        let staging = self
            .area
            .begin(GROUP, Some(id(first - 1, term)))
            .expect("begin");
        let entries: Vec<Entry> = (first..=last).map(|i| entry(i, term)).collect();
        for chunk in entries.chunks(4) {
            staging.append(chunk).expect("stage a chunk");
        }
        staging
    }

    fn marker(&self) -> Vec<u8> {
        self.meta
            .group_get(GROUP, INSTALLING_KEY)
            .expect("meta")
            .unwrap_or_default()
    }
}

fn assert_holds(log: &SegmentLog, first: u64, last: u64, term: u64) {
    assert_eq!(log.first_index(), Some(LogIndex(first)));
    assert_eq!(log.last_entry(), Some(id(last, term)));
    let mut next = LogIndex(first);
    while next.0 <= last {
        let got = log
            .read(next, LogIndex(last + 1), SNAPSHOT_CHUNK_BYTES)
            .expect("read");
        for e in &got {
            assert_eq!(*e, entry(e.index.0, term));
        }
        next = got.last().expect("entries").index.next();
    }
}

#[test]
fn a_snapshot_of_several_chunks_is_staged_and_replaces_a_stale_log() {
    let node = Node::new();
    let dst = node.stale_log(10, 1);
    // Trim point 20, entries 21..=40 of term 2: five chunks.
    let last = id(40, 2);
    let snapshot = node.stage(21, 40, 2).finish(Some(last)).expect("finish");
    assert_eq!(node.area.list().expect("list").len(), 1, "staged on disk");
    {
        let mut reader = snapshot.reader(GROUP);
        let mut chunks = 0;
        while reader.next_chunk().expect("chunk").is_some() {
            chunks += 1;
        }
        assert!(chunks >= 5, "{chunks} chunks");
    }

    install(GROUP, &dst, &node.meta, &snapshot, &meta_up_to(last)).expect("install");
    assert_holds(&dst, 21, 40, 2);
    assert_eq!(dst.purged(), Some(id(20, 2)));
    assert!(node.marker().is_empty(), "no install left in progress");
    let recorded = node
        .meta
        .group_get(GROUP, GroupKey::Snapshot)
        .expect("meta");
    assert_eq!(
        codec::decode_snapshot_meta(&recorded.expect("snapshot meta")).expect("decode"),
        meta_up_to(last)
    );
    drop(snapshot);
    assert!(
        node.area.list().expect("list").is_empty(),
        "staging removed"
    );
    // After a restart the log is still the snapshot's.
    drop(dst);
    assert_holds(&node.open_log(), 21, 40, 2);
}

#[test]
fn a_short_stream_is_refused_and_its_staging_removed() {
    let node = Node::new();
    let dst = node.stale_log(5, 1);
    let err = node
        .stage(21, 30, 2)
        .finish(Some(id(40, 2)))
        .expect_err("entries end at 30, the snapshot at 40");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(node.area.list().expect("list").is_empty());
    assert_holds(&dst, 1, 5, 1);
}

#[test]
fn staging_leftovers_are_removed_when_the_group_opens() {
    let node = Node::new();
    // A stream cut off by a crash: its directory outlives the process.
    std::mem::forget(node.stage(21, 28, 2));
    // Another group's staging is left alone.
    let other = node.area.begin(GroupId(8), None).expect("begin");
    assert_eq!(node.area.list().expect("list").len(), 2);
    node.disk.crash();
    let dst = node.open_log();
    finish_interrupted(GROUP, &dst, &node.meta, &node.area).expect("open");
    let left = node.area.list().expect("list");
    assert_eq!(
        left,
        vec![format!("{:020}.1", 8)],
        "only group 8's staging stays"
    );
    assert_eq!(dst.last_entry(), None, "the log was not touched");
    std::mem::forget(other); // its handles belong to the crashed disk
}

#[test]
fn an_install_cut_off_by_io_errors_is_finished_when_the_group_opens() {
    let node = Node::new();
    let dst = node.stale_log(10, 1);
    let last = id(32, 2);
    let snapshot = node.stage(21, 32, 2).finish(Some(last)).expect("finish");
    // The log's first durable change fails: the install stops part way.
    node.disk.set_fail_syncs(true);
    install(GROUP, &dst, &node.meta, &snapshot, &meta_up_to(last)).expect_err("syncs fail");
    assert!(
        !node.marker().is_empty(),
        "the install is marked in progress"
    );
    drop(snapshot);
    assert_eq!(
        node.area.list().expect("list").len(),
        1,
        "the staged copy is kept"
    );
    // The node dies; on restart the group's open finishes the install.
    drop(dst);
    node.disk.crash();
    node.disk.set_fail_syncs(false);
    let dst = node.open_log();
    finish_interrupted(GROUP, &dst, &node.meta, &node.area).expect("finish the install");
    assert_holds(&dst, 21, 32, 2);
    assert!(node.marker().is_empty());
    let applied = node.meta.group_get(GROUP, GroupKey::Applied).expect("meta");
    assert_eq!(
        codec::decode_log_id(&applied.expect("applied")).expect("decode"),
        meta_up_to(last).last_log_id
    );
    assert!(
        node.area.list().expect("list").is_empty(),
        "staging removed"
    );
}

#[test]
fn install_markers_round_trip_and_refuse_strange_names() {
    let meta = meta_up_to(id(9, 3));
    let bytes = encode_marker("00000000000000000007.3", &meta).expect("encode");
    let (name, back) = decode_marker(&bytes).expect("decode");
    assert_eq!(
        (name.as_str(), back),
        ("00000000000000000007.3", meta.clone())
    );
    for bad in ["../x", ".hidden", "a/b"] {
        let bytes = encode_marker(bad, &meta).expect("encode");
        assert!(decode_marker(&bytes).is_err(), "{bad}");
    }
    assert!(decode_marker(&[]).is_err());
    assert!(decode_marker(&[40, b'a']).is_err());
}
