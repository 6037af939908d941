//! The behavioural suite of a [`MetaStore`], written once and run against every store:
//! [`MemStore`] in both build modes, [`SledStore`] (in a tempdir) outside madsim.
//!
//! A [`Harness`] owns the store and can restart it: `MemStore` crashes (losing all
//! that was not flushed), `SledStore` is dropped and reopened from its dir.

use std::sync::Arc;

use runnel_nodemeta::{
    GroupKey, MemStore, MetaStore, MetaStoreError, NodeIdentity, NodeMeta, WriteBatch,
};
use runnel_types::{GroupId, NodeId};

trait Harness {
    /// The store of the current incarnation. Callers drop every handle before
    /// [`restart`](Harness::restart).
    fn store(&self) -> Arc<dyn MetaStore>;
    /// The node goes away and comes back: flushed batches must survive; unflushed ones
    /// may or may not, each whole or not at all.
    fn restart(&mut self);
    /// Whether a restart is sure to lose every unflushed batch.
    fn loses_unflushed(&self) -> bool;

    fn meta(&self) -> NodeMeta {
        NodeMeta::new(self.store())
    }
}

fn batch(ops: impl FnOnce(&mut WriteBatch)) -> WriteBatch {
    let mut b = WriteBatch::new();
    ops(&mut b);
    b
}

fn get(store: &dyn MetaStore, key: &str) -> Option<String> {
    let value = store.get(key.as_bytes()).expect("get");
    value.map(|v| String::from_utf8(v).expect("test values are UTF-8"))
}

fn scan(store: &dyn MetaStore, prefix: &str) -> Vec<(String, String)> {
    let entries = store.scan_prefix(prefix.as_bytes()).expect("scan_prefix");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("test data is UTF-8");
    entries
        .into_iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn identity(node: u64, cluster: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId(node),
        cluster_id: cluster.to_string(),
    }
}

/// One `#[test]` per behaviour of the suite, each on a fresh harness from `$fresh`.
macro_rules! conformance_tests {
    ($fresh:expr) => {
        #[test]
        fn put_get_delete() {
            super::put_get_delete(&mut $fresh);
        }
        #[test]
        fn batch_ops_apply_in_order() {
            super::batch_ops_apply_in_order(&mut $fresh);
        }
        #[test]
        fn scan_prefix_is_sorted_and_exact() {
            super::scan_prefix_is_sorted_and_exact(&mut $fresh);
        }
        #[test]
        fn delete_prefix_removes_only_its_prefix() {
            super::delete_prefix_removes_only_its_prefix(&mut $fresh);
        }
        #[test]
        fn limits_refuse_the_whole_batch() {
            super::limits_refuse_the_whole_batch(&mut $fresh);
        }
        #[test]
        fn flushed_batches_survive_restart() {
            super::flushed_batches_survive_restart(&mut $fresh);
        }
        #[test]
        fn batches_are_atomic_across_restart() {
            super::batches_are_atomic_across_restart(&mut $fresh);
        }
        #[test]
        fn identity_round_trips_and_survives_restart() {
            super::identity_round_trips_and_survives_restart(&mut $fresh);
        }
        #[test]
        fn identity_conflict_is_refused() {
            super::identity_conflict_is_refused(&mut $fresh);
        }
        #[test]
        fn corrupt_identity_is_an_error() {
            super::corrupt_identity_is_an_error(&mut $fresh);
        }
        #[test]
        fn group_values_round_trip() {
            super::group_values_round_trip(&mut $fresh);
        }
        #[test]
        fn group_put_durable_survives_restart() {
            super::group_put_durable_survives_restart(&mut $fresh);
        }
        #[test]
        fn group_put_all_is_atomic() {
            super::group_put_all_is_atomic(&mut $fresh);
        }
        #[test]
        fn remove_group_removes_only_that_group() {
            super::remove_group_removes_only_that_group(&mut $fresh);
        }
        #[test]
        fn list_groups_lists_each_group_once_in_order() {
            super::list_groups_lists_each_group_once_in_order(&mut $fresh);
        }
    };
}

fn put_get_delete(h: &mut impl Harness) {
    let s = h.store();
    assert_eq!(get(&*s, "a"), None);
    s.apply(batch(|b| {
        b.put("a", "1").put("b", "2");
    }))
    .expect("apply");
    assert_eq!(get(&*s, "a").as_deref(), Some("1"));
    s.apply(batch(|b| {
        b.put("a", "3").delete("b").delete("never-there");
    }))
    .expect("apply");
    assert_eq!(get(&*s, "a").as_deref(), Some("3"));
    assert_eq!(get(&*s, "b"), None);
    s.apply(WriteBatch::new()).expect("an empty batch is fine");
}

fn batch_ops_apply_in_order(h: &mut impl Harness) {
    let s = h.store();
    s.apply(batch(|b| {
        b.put("p/old", "x");
    }))
    .expect("apply");
    s.apply(batch(|b| {
        b.put("k", "1").delete("k"); // removed
        b.delete("j").put("j", "2"); // kept
        b.put("p/new-before", "y")
            .delete_prefix("p/")
            .put("p/after", "z");
    }))
    .expect("apply");
    assert_eq!(get(&*s, "k"), None);
    assert_eq!(get(&*s, "j").as_deref(), Some("2"));
    assert_eq!(scan(&*s, "p/"), pairs(&[("p/after", "z")]));
}

fn scan_prefix_is_sorted_and_exact(h: &mut impl Harness) {
    let s = h.store();
    s.apply(batch(|b| {
        b.put("a/2", "two")
            .put("a0", "no")
            .put("a/10", "ten")
            .put("a/1", "one")
            .put("b", "no");
    }))
    .expect("apply");
    assert_eq!(
        scan(&*s, "a/"),
        pairs(&[("a/1", "one"), ("a/10", "ten"), ("a/2", "two")])
    );
    assert_eq!(scan(&*s, "zzz"), vec![]);
    assert_eq!(scan(&*s, "").len(), 5, "the empty prefix scans everything");
}

fn delete_prefix_removes_only_its_prefix(h: &mut impl Harness) {
    let s = h.store();
    s.apply(batch(|b| {
        b.put("g/1/x", "1")
            .put("g/1/y", "1")
            .put("g/10/x", "10")
            .put("g/2/x", "2");
    }))
    .expect("apply");
    s.apply(batch(|b| {
        b.delete_prefix("g/1/");
    }))
    .expect("apply");
    assert_eq!(scan(&*s, "g/"), pairs(&[("g/10/x", "10"), ("g/2/x", "2")]));
}

fn limits_refuse_the_whole_batch(h: &mut impl Harness) {
    use runnel_nodemeta::limits::{BATCH_OPS_MAX, KEY_BYTES_MAX};
    let s = h.store();
    let err = s
        .apply(batch(|b| {
            b.put("fine", "1").put(vec![b'k'; KEY_BYTES_MAX + 1], "2");
        }))
        .expect_err("an oversized key is refused");
    assert!(
        matches!(err, MetaStoreError::TooLarge { what: "key", .. }),
        "{err:?}"
    );
    assert_eq!(
        get(&*s, "fine"),
        None,
        "nothing of a refused batch is applied"
    );
    let err = s
        .apply(batch(|b| {
            for i in 0..=BATCH_OPS_MAX {
                b.put(format!("k{i}"), "v");
            }
        }))
        .expect_err("too many operations");
    assert!(
        matches!(err, MetaStoreError::BatchTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(scan(&*s, ""), vec![]);
}

fn flushed_batches_survive_restart(h: &mut impl Harness) {
    {
        let s = h.store();
        s.apply(batch(|b| {
            b.put("kept", "1").put("gone", "x");
        }))
        .expect("apply");
        s.apply(batch(|b| {
            b.delete("gone");
        }))
        .expect("apply");
        s.flush().expect("flush");
        s.apply(batch(|b| {
            b.put("unflushed", "2");
        }))
        .expect("apply");
    }
    h.restart();
    let s = h.store();
    assert_eq!(get(&*s, "kept").as_deref(), Some("1"));
    assert_eq!(get(&*s, "gone"), None, "a flushed delete stays deleted");
    if h.loses_unflushed() {
        assert_eq!(get(&*s, "unflushed"), None);
    }
}

/// Batch `i` writes keys `b{i}/0..4`; some batches are flushed, then more are applied
/// without a flush. After a restart each batch is whole or absent, flushed ones whole,
/// and the surviving batches are a prefix of those applied.
fn batches_are_atomic_across_restart(h: &mut impl Harness) {
    const FLUSHED: usize = 5;
    const TOTAL: usize = 12;
    const KEYS: usize = 4;
    {
        let s = h.store();
        for i in 0..TOTAL {
            s.apply(batch(|b| {
                for k in 0..KEYS {
                    b.put(format!("b{i:02}/{k}"), format!("{i}"));
                }
            }))
            .expect("apply");
            if i + 1 == FLUSHED {
                s.flush().expect("flush");
            }
        }
    }
    h.restart();
    let s = h.store();
    let present: Vec<usize> = (0..TOTAL)
        .map(|i| scan(&*s, &format!("b{i:02}/")).len())
        .inspect(|&n| {
            assert!(
                n == 0 || n == KEYS,
                "a batch survived in part: {n} of {KEYS} keys"
            )
        })
        .collect();
    let survivors = present.iter().take_while(|&&n| n == KEYS).count();
    assert!(
        survivors >= FLUSHED,
        "a flushed batch was lost: {present:?}"
    );
    assert!(
        present[survivors..].iter().all(|&n| n == 0),
        "survivors are not a prefix: {present:?}"
    );
    if h.loses_unflushed() {
        assert_eq!(survivors, FLUSHED);
    }
}

fn identity_round_trips_and_survives_restart(h: &mut impl Harness) {
    {
        let meta = h.meta();
        assert_eq!(meta.identity().expect("identity"), None);
        meta.set_identity(&identity(3, "prod"))
            .expect("set_identity");
        meta.set_identity(&identity(3, "prod"))
            .expect("setting the same identity again is fine");
    }
    h.restart();
    assert_eq!(
        h.meta().identity().expect("identity"),
        Some(identity(3, "prod")),
        "set_identity is durable"
    );
}

fn identity_conflict_is_refused(h: &mut impl Harness) {
    let meta = h.meta();
    meta.set_identity(&identity(3, "prod"))
        .expect("set_identity");
    for other in [identity(4, "prod"), identity(3, "staging")] {
        let err = meta
            .set_identity(&other)
            .expect_err("another identity must be refused");
        assert!(
            matches!(
                err,
                MetaStoreError::IdentityConflict {
                    existing_node_id: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("belongs to node 3 of cluster \"prod\""),
            "{err}"
        );
    }
    assert_eq!(
        meta.identity().expect("identity"),
        Some(identity(3, "prod")),
        "the first identity stays"
    );
    let err = meta
        .set_identity(&identity(0, "prod"))
        .expect_err("node id 0 is invalid");
    assert!(
        matches!(err, MetaStoreError::InvalidIdentity { .. }),
        "{err:?}"
    );
}

fn corrupt_identity_is_an_error(h: &mut impl Harness) {
    let meta = h.meta();
    meta.store()
        .apply(batch(|b| {
            b.put("node/identity", vec![9, 1, 2]);
        }))
        .expect("apply");
    let err = meta.identity().expect_err("garbage must not decode");
    assert!(
        matches!(err, MetaStoreError::CorruptValue { .. }),
        "{err:?}"
    );
    let err = meta
        .set_identity(&identity(1, "c"))
        .expect_err("nor be overwritten silently");
    assert!(
        matches!(err, MetaStoreError::CorruptValue { .. }),
        "{err:?}"
    );
}

const ALL_KEYS: [GroupKey; 6] = [
    GroupKey::Vote,
    GroupKey::Membership,
    GroupKey::Applied,
    GroupKey::Committed,
    GroupKey::Snapshot,
    GroupKey::Custom("lease"),
];

fn value_of(group: u64, key: GroupKey) -> Vec<u8> {
    format!("{group}:{}", key.name()).into_bytes()
}

fn group_values_round_trip(h: &mut impl Harness) {
    let meta = h.meta();
    for group in [GroupId::META, GroupId(1), GroupId(u64::MAX)] {
        for key in ALL_KEYS {
            assert_eq!(meta.group_get(group, key).expect("get"), None);
            meta.group_put(group, key, &value_of(group.get(), key))
                .expect("put");
        }
    }
    for group in [GroupId::META, GroupId(1), GroupId(u64::MAX)] {
        for key in ALL_KEYS {
            assert_eq!(
                meta.group_get(group, key).expect("get"),
                Some(value_of(group.get(), key))
            );
        }
    }
    // The documented layout is what lands in the store.
    let raw = meta
        .store()
        .get(b"group/00000000000000000001/vote")
        .expect("get");
    assert_eq!(raw, Some(value_of(1, GroupKey::Vote)));
    let err = meta
        .group_put(GroupId(1), GroupKey::Custom("vote"), b"x")
        .expect_err("taken name");
    assert!(
        matches!(err, MetaStoreError::InvalidGroupKey { .. }),
        "{err:?}"
    );
}

fn group_put_durable_survives_restart(h: &mut impl Harness) {
    {
        let meta = h.meta();
        meta.group_put(GroupId(5), GroupKey::Applied, b"lazy")
            .expect("put");
        meta.group_put_durable(GroupId(5), GroupKey::Vote, b"term 7")
            .expect("put durable");
        meta.group_put(GroupId(5), GroupKey::Committed, b"not yet")
            .expect("put");
    }
    h.restart();
    let meta = h.meta();
    assert_eq!(
        meta.group_get(GroupId(5), GroupKey::Vote)
            .expect("get")
            .as_deref(),
        Some(&b"term 7"[..])
    );
    // Written before the durable put, so flushed with it.
    assert_eq!(
        meta.group_get(GroupId(5), GroupKey::Applied)
            .expect("get")
            .as_deref(),
        Some(&b"lazy"[..])
    );
    if h.loses_unflushed() {
        assert_eq!(
            meta.group_get(GroupId(5), GroupKey::Committed)
                .expect("get"),
            None
        );
    }
    meta.group_put(GroupId(5), GroupKey::Committed, b"now")
        .expect("put");
    meta.flush().expect("flush");
    drop(meta);
    h.restart();
    assert_eq!(
        h.meta()
            .group_get(GroupId(5), GroupKey::Committed)
            .expect("get")
            .as_deref(),
        Some(&b"now"[..])
    );
}

fn group_put_all_is_atomic(h: &mut impl Harness) {
    {
        let meta = h.meta();
        let entries: [(GroupKey, &[u8]); 2] =
            [(GroupKey::Snapshot, b"snap"), (GroupKey::Applied, b"42")];
        meta.group_put_all(GroupId::META, &entries)
            .expect("put_all");
        let err = meta
            .group_put_all(
                GroupId(2),
                &[(GroupKey::Vote, b"v"), (GroupKey::Custom("Bad/Name"), b"x")],
            )
            .expect_err("one bad key refuses the lot");
        assert!(
            matches!(err, MetaStoreError::InvalidGroupKey { .. }),
            "{err:?}"
        );
        assert_eq!(
            meta.group_get(GroupId(2), GroupKey::Vote).expect("get"),
            None
        );
        meta.flush().expect("flush");
    }
    h.restart();
    let meta = h.meta();
    assert_eq!(
        meta.group_get(GroupId::META, GroupKey::Snapshot)
            .expect("get")
            .as_deref(),
        Some(&b"snap"[..])
    );
    assert_eq!(
        meta.group_get(GroupId::META, GroupKey::Applied)
            .expect("get")
            .as_deref(),
        Some(&b"42"[..])
    );
}

fn remove_group_removes_only_that_group(h: &mut impl Harness) {
    let groups = [0, 1, 2, 10, 11, 100];
    {
        let meta = h.meta();
        meta.set_identity(&identity(1, "c")).expect("set_identity");
        for g in groups {
            for key in ALL_KEYS {
                meta.group_put(GroupId(g), key, &value_of(g, key))
                    .expect("put");
            }
        }
        meta.remove_group(GroupId(1)).expect("remove_group");
        assert_eq!(
            meta.list_groups().expect("list"),
            [0, 2, 10, 11, 100].map(GroupId)
        );
        for key in ALL_KEYS {
            assert_eq!(meta.group_get(GroupId(1), key).expect("get"), None);
        }
        meta.remove_group(GroupId(77))
            .expect("removing an absent group is fine");
    }
    h.restart();
    let meta = h.meta();
    assert_eq!(
        meta.list_groups().expect("list"),
        [0, 2, 10, 11, 100].map(GroupId),
        "remove_group is durable"
    );
    for g in [0, 2, 10, 11, 100] {
        for key in ALL_KEYS {
            assert_eq!(
                meta.group_get(GroupId(g), key).expect("get"),
                Some(value_of(g, key)),
                "group {g}"
            );
        }
    }
    assert_eq!(meta.identity().expect("identity"), Some(identity(1, "c")));
}

fn list_groups_lists_each_group_once_in_order(h: &mut impl Harness) {
    let meta = h.meta();
    assert_eq!(meta.list_groups().expect("list"), vec![]);
    meta.set_identity(&identity(1, "c")).expect("set_identity");
    for g in [u64::MAX, 10, 9, 0, 1000] {
        meta.group_put(GroupId(g), GroupKey::Vote, b"v")
            .expect("put");
        meta.group_put(GroupId(g), GroupKey::Applied, b"a")
            .expect("put");
    }
    assert_eq!(
        meta.list_groups().expect("list"),
        [0, 9, 10, 1000, u64::MAX].map(GroupId)
    );
    meta.store()
        .apply(batch(|b| {
            b.put("group/garbage", "x");
        }))
        .expect("apply");
    let err = meta
        .list_groups()
        .expect_err("a key outside the layout is reported");
    assert!(matches!(err, MetaStoreError::CorruptKey { .. }), "{err:?}");
}

mod mem_store {
    use super::*;

    struct MemHarness(MemStore);

    impl Harness for MemHarness {
        fn store(&self) -> Arc<dyn MetaStore> {
            Arc::new(self.0.clone())
        }
        fn restart(&mut self) {
            self.0.crash();
        }
        fn loses_unflushed(&self) -> bool {
            true
        }
    }

    conformance_tests!(MemHarness(MemStore::new()));

    #[test]
    fn crash_keeping_keeps_the_oldest_unflushed_batches_whole() {
        for kept in 0..=4 {
            let store = MemStore::new();
            store
                .apply(batch(|b| {
                    b.put("base", "0");
                }))
                .expect("apply");
            store.flush().expect("flush");
            for i in 1..=3 {
                store
                    .apply(batch(|b| {
                        b.put(format!("k{i}"), "x")
                            .put(format!("k{i}b"), "y")
                            .delete("base");
                    }))
                    .expect("apply");
            }
            assert_eq!(store.unflushed_batches(), 3);
            store.crash_keeping(kept);
            assert_eq!(store.unflushed_batches(), 0);
            let expected_batches = kept.min(3);
            assert_eq!(scan(&store, "k").len(), 2 * expected_batches, "kept {kept}");
            assert_eq!(
                get(&store, "base").is_some(),
                expected_batches == 0,
                "kept {kept}"
            );
            // What a crash kept is now durable: a second crash keeps it too.
            store.crash();
            assert_eq!(scan(&store, "k").len(), 2 * expected_batches, "kept {kept}");
        }
    }

    #[test]
    fn clones_share_one_store_across_a_killed_node() {
        let harness_copy = MemStore::new();
        {
            let node = NodeMeta::new(Arc::new(harness_copy.clone()));
            node.set_identity(&identity(2, "sim"))
                .expect("set_identity");
            node.group_put(GroupId(4), GroupKey::Vote, b"unflushed")
                .expect("put");
        } // The node is killed: every handle it had is dropped.
        harness_copy.crash();
        let restarted = NodeMeta::new(Arc::new(harness_copy.clone()));
        assert_eq!(
            restarted.identity().expect("identity"),
            Some(identity(2, "sim"))
        );
        assert_eq!(restarted.list_groups().expect("list"), vec![]);
    }
}

#[cfg(not(madsim))]
mod sled_store {
    use super::*;
    use runnel_nodemeta::SledStore;

    struct SledHarness {
        dir: tempfile::TempDir,
        store: Option<Arc<SledStore>>,
    }

    impl SledHarness {
        fn new() -> SledHarness {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SledStore::open(dir.path()).expect("open");
            SledHarness {
                dir,
                store: Some(Arc::new(store)),
            }
        }
    }

    impl Harness for SledHarness {
        fn store(&self) -> Arc<dyn MetaStore> {
            self.store.clone().expect("open between restarts")
        }
        fn restart(&mut self) {
            let store = self.store.take().expect("open");
            assert_eq!(
                Arc::strong_count(&store),
                1,
                "a test kept a handle across restart"
            );
            drop(store);
            self.store = Some(Arc::new(SledStore::open(self.dir.path()).expect("reopen")));
        }
        fn loses_unflushed(&self) -> bool {
            false
        }
    }

    conformance_tests!(SledHarness::new());

    #[test]
    fn a_locked_dir_names_the_dir_and_the_likely_cause() {
        let harness = SledHarness::new();
        let err = SledStore::open(harness.dir.path()).expect_err("the dir is held by the harness");
        assert!(matches!(err, MetaStoreError::DirLocked { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&harness.dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("another runneld"), "{message}");
    }

    #[test]
    fn a_sled_store_reopens_with_every_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let meta = NodeMeta::new(Arc::new(SledStore::open(dir.path()).expect("open")));
            meta.set_identity(&identity(9, "c")).expect("set_identity");
            for g in 1..=50 {
                meta.group_put(GroupId(g), GroupKey::Membership, &g.to_be_bytes())
                    .expect("put");
            }
            meta.flush().expect("flush");
        }
        let meta = NodeMeta::new(Arc::new(SledStore::open(dir.path()).expect("reopen")));
        assert_eq!(meta.identity().expect("identity"), Some(identity(9, "c")));
        assert_eq!(
            meta.list_groups().expect("list"),
            (1..=50).map(GroupId).collect::<Vec<_>>()
        );
        let err = meta
            .set_identity(&identity(10, "c"))
            .expect_err("the dir belongs to node 9");
        assert!(
            matches!(err, MetaStoreError::IdentityConflict { .. }),
            "{err:?}"
        );
    }
}
