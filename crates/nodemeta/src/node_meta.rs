//! [`NodeMeta`]: the typed layer over a [`MetaStore`], and the key layout.
//!
//! # Key layout
//!
//! Keys are ASCII paths; values are opaque bytes (the raft crate's encoding) except the
//! identity, which this module encodes.
//!
//! | key                                 | value                                  |
//! |-------------------------------------|----------------------------------------|
//! | `node/identity`                     | [`NodeIdentity`], see below            |
//! | `group/{group_id:020}/vote`         | the group's Raft vote                  |
//! | `group/{group_id:020}/membership`   | the last membership log id and config  |
//! | `group/{group_id:020}/applied`      | the state machine's applied log id     |
//! | `group/{group_id:020}/committed`    | the committed log id                   |
//! | `group/{group_id:020}/snapshot`     | the meta group's state-machine snapshot|
//! | `group/{group_id:020}/{custom}`     | [`GroupKey::Custom`], for later needs  |
//!
//! The group id is zero-padded to 20 digits (the width of `u64::MAX`) so that byte
//! order is numeric order, and every group's keys end in `/`-separated names so that
//! the prefix of group 1 (`group/00000000000000000001/`) never matches group 10's keys.
//!
//! Identity encoding, version 1: `[1u8][node_id: u64 big-endian][len: u8][cluster_id:
//! len bytes of UTF-8]`. The version byte comes first so that a later format can be
//! told apart, and refused by an older runneld with a clear error.

use std::sync::{Arc, Mutex, PoisonError};

use runnel_types::{GroupId, NodeId};

use crate::batch::{WriteBatch, key_text};
use crate::error::MetaStoreError;
use crate::limits::CLUSTER_ID_BYTES_MAX;
use crate::store::MetaStore;

const IDENTITY_KEY: &[u8] = b"node/identity";
const IDENTITY_VERSION: u8 = 1;
const GROUP_PREFIX: &str = "group/";
/// Digits of a group id in a key: `u64::MAX` has 20.
const GROUP_ID_DIGITS: usize = 20;
const CUSTOM_NAME_BYTES_MAX: usize = 64;

/// Who this node is: set once, when the data dir is first used, and checked on every
/// start so that a data dir is never reused by another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub cluster_id: String,
}

impl NodeIdentity {
    fn check(&self) -> Result<(), MetaStoreError> {
        let reason = if self.node_id.get() == 0 {
            "node id 0 is reserved; node ids start at 1".to_string()
        } else if self.cluster_id.is_empty() {
            "the cluster id is empty".to_string()
        } else if self.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            format!(
                "the cluster id is {} bytes long; at most {CLUSTER_ID_BYTES_MAX} are allowed",
                self.cluster_id.len()
            )
        } else {
            return Ok(());
        };
        Err(MetaStoreError::InvalidIdentity { reason })
    }

    /// The version-1 encoding (see the module docs). Call [`check`](Self::check) first.
    fn encode(&self) -> Vec<u8> {
        let cluster_id = self.cluster_id.as_bytes();
        let mut out = Vec::with_capacity(1 + 8 + 1 + cluster_id.len());
        out.push(IDENTITY_VERSION);
        out.extend_from_slice(&self.node_id.get().to_be_bytes());
        out.push(
            u8::try_from(cluster_id.len()).expect("check() bounds the cluster id to 255 bytes"),
        );
        out.extend_from_slice(cluster_id);
        out
    }

    fn decode(bytes: &[u8]) -> Result<NodeIdentity, MetaStoreError> {
        let corrupt = |reason: String| MetaStoreError::CorruptValue {
            key: key_text(IDENTITY_KEY),
            reason,
        };
        let (&version, rest) = bytes
            .split_first()
            .ok_or_else(|| corrupt("the value is empty".into()))?;
        if version != IDENTITY_VERSION {
            return Err(corrupt(format!(
                "unknown format version {version}; this runneld reads {IDENTITY_VERSION}"
            )));
        }
        let (node_id, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("the node id is cut short".into()))?;
        let (&len, cluster_id) = rest
            .split_first()
            .ok_or_else(|| corrupt("the cluster id is missing".into()))?;
        if cluster_id.len() != usize::from(len) {
            return Err(corrupt(format!(
                "the cluster id should be {len} bytes long but {} bytes follow",
                cluster_id.len()
            )));
        }
        let cluster_id = String::from_utf8(cluster_id.to_vec())
            .map_err(|_| corrupt("the cluster id is not UTF-8".into()))?;
        let identity = NodeIdentity {
            node_id: NodeId(u64::from_be_bytes(*node_id)),
            cluster_id,
        };
        identity.check().map_err(|e| corrupt(e.to_string()))?;
        Ok(identity)
    }
}

/// One of the values kept per Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupKey {
    Vote,
    Membership,
    Applied,
    Committed,
    Snapshot,
    /// A name for a value not foreseen here: 1 to 64 bytes of `a-z`, `0-9`, `_`, `-`,
    /// and not one of the names above.
    Custom(&'static str),
}

impl GroupKey {
    const BUILT_IN: [GroupKey; 5] = [
        GroupKey::Vote,
        GroupKey::Membership,
        GroupKey::Applied,
        GroupKey::Committed,
        GroupKey::Snapshot,
    ];

    /// The last segment of the key.
    pub fn name(self) -> &'static str {
        match self {
            GroupKey::Vote => "vote",
            GroupKey::Membership => "membership",
            GroupKey::Applied => "applied",
            GroupKey::Committed => "committed",
            GroupKey::Snapshot => "snapshot",
            GroupKey::Custom(name) => name,
        }
    }

    fn check(self) -> Result<(), MetaStoreError> {
        let GroupKey::Custom(name) = self else {
            return Ok(());
        };
        let reason = if name.is_empty() || name.len() > CUSTOM_NAME_BYTES_MAX {
            "a name is 1 to 64 bytes long"
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            "a name may hold only a-z, 0-9, '_' and '-'"
        } else if Self::BUILT_IN.iter().any(|k| k.name() == name) {
            "the name is taken by a built-in key; use that variant"
        } else {
            return Ok(());
        };
        Err(MetaStoreError::InvalidGroupKey { name, reason })
    }
}

/// The prefix of every key of `group`, ending in `/`.
fn group_prefix(group: GroupId) -> String {
    format!(
        "{GROUP_PREFIX}{:0width$}/",
        group.get(),
        width = GROUP_ID_DIGITS
    )
}

/// The key of one value of `group`. Public so that tools and tests can show the layout.
pub fn group_key(group: GroupId, key: GroupKey) -> Vec<u8> {
    format!("{}{}", group_prefix(group), key.name()).into_bytes()
}

/// The group a `group/...` key belongs to.
fn parse_group(key: &[u8]) -> Result<GroupId, MetaStoreError> {
    let corrupt = |reason: &str| MetaStoreError::CorruptKey {
        key: key_text(key),
        reason: reason.to_string(),
    };
    let rest = key
        .strip_prefix(GROUP_PREFIX.as_bytes())
        .ok_or_else(|| corrupt("no group/ prefix"))?;
    let (digits, rest) = rest
        .split_at_checked(GROUP_ID_DIGITS)
        .ok_or_else(|| corrupt("the group id is cut short"))?;
    if !digits.iter().all(u8::is_ascii_digit) || rest.first() != Some(&b'/') {
        return Err(corrupt("expected 20 digits of group id, then '/'"));
    }
    // 20 ASCII digits are valid UTF-8; they may still exceed u64::MAX.
    let text = std::str::from_utf8(digits).map_err(|_| corrupt("the group id is not ASCII"))?;
    text.parse::<u64>()
        .map(GroupId)
        .map_err(|_| corrupt("the group id is larger than u64::MAX"))
}

/// Node-local metadata, typed. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct NodeMeta {
    store: Arc<dyn MetaStore>,
    /// Serializes `set_identity`'s read-check-write.
    identity_lock: Mutex<()>,
}

impl NodeMeta {
    pub fn new(store: Arc<dyn MetaStore>) -> NodeMeta {
        NodeMeta {
            store,
            identity_lock: Mutex::new(()),
        }
    }

    /// The store underneath, for tools that need the raw keys.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// This data dir's identity, if one was ever set.
    pub fn identity(&self) -> Result<Option<NodeIdentity>, MetaStoreError> {
        self.store
            .get(IDENTITY_KEY)?
            .map(|bytes| NodeIdentity::decode(&bytes))
            .transpose()
    }

    /// Records `identity`, durably, if the data dir has none; does nothing if it has
    /// this very one; fails with [`MetaStoreError::IdentityConflict`] if it has another.
    pub fn set_identity(&self, identity: &NodeIdentity) -> Result<(), MetaStoreError> {
        identity.check()?;
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        let _guard = self
            .identity_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.identity()? {
            Some(existing) if existing == *identity => Ok(()),
            Some(existing) => Err(MetaStoreError::IdentityConflict {
                existing_node_id: existing.node_id.get(),
                existing_cluster_id: existing.cluster_id,
                new_node_id: identity.node_id.get(),
                new_cluster_id: identity.cluster_id.clone(),
            }),
            None => {
                let mut batch = WriteBatch::new();
                batch.put(IDENTITY_KEY, identity.encode());
                self.store.apply(batch)?;
                self.store.flush()
            }
        }
    }

    pub fn group_get(
        &self,
        group: GroupId,
        key: GroupKey,
    ) -> Result<Option<Vec<u8>>, MetaStoreError> {
        key.check()?;
        self.store.get(&group_key(group, key))
    }

    /// Writes one value. Not durable until [`flush`](Self::flush).
    pub fn group_put(
        &self,
        group: GroupId,
        key: GroupKey,
        value: &[u8],
    ) -> Result<(), MetaStoreError> {
        self.group_put_all(group, &[(key, value)])
    }

    /// Writes one value and makes it durable before returning: for a vote, which must
    /// be on disk before the node answers the vote request.
    pub fn group_put_durable(
        &self,
        group: GroupId,
        key: GroupKey,
        value: &[u8],
    ) -> Result<(), MetaStoreError> {
        self.group_put(group, key, value)?;
        self.store.flush()
    }

    /// Writes several values of one group atomically (e.g. a snapshot with its applied
    /// log id). Not durable until [`flush`](Self::flush).
    pub fn group_put_all(
        &self,
        group: GroupId,
        entries: &[(GroupKey, &[u8])],
    ) -> Result<(), MetaStoreError> {
        let mut batch = WriteBatch::new();
        for &(key, value) in entries {
            key.check()?;
            batch.put(group_key(group, key), value);
        }
        self.store.apply(batch)
    }

    /// Removes every value of `group`, durably. Durable because the caller deletes the
    /// group's segment files next: after a crash, metadata must never name a group
    /// whose files are gone.
    pub fn remove_group(&self, group: GroupId) -> Result<(), MetaStoreError> {
        let mut batch = WriteBatch::new();
        batch.delete_prefix(group_prefix(group));
        self.store.apply(batch)?;
        self.store.flush()
    }

    /// Every group with at least one value here, in ascending order.
    ///
    /// Reads the values too (the trait has no key-only scan); the metadata is small.
    pub fn list_groups(&self) -> Result<Vec<GroupId>, MetaStoreError> {
        let mut groups = Vec::new();
        for (key, _) in self.store.scan_prefix(GROUP_PREFIX.as_bytes())? {
            let group = parse_group(&key)?;
            if groups.last() != Some(&group) {
                groups.push(group);
            }
        }
        Ok(groups)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), MetaStoreError> {
        self.store.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(node: u64, cluster: &str) -> NodeIdentity {
        NodeIdentity {
            node_id: NodeId(node),
            cluster_id: cluster.to_string(),
        }
    }

    #[test]
    fn identity_encoding_round_trips_and_is_compact() {
        let id = identity(u64::MAX, "prod-eu-1");
        let bytes = id.encode();
        assert_eq!(bytes.len(), 1 + 8 + 1 + 9);
        assert_eq!(bytes[0], IDENTITY_VERSION);
        assert_eq!(NodeIdentity::decode(&bytes).expect("decodes"), id);
    }

    #[test]
    fn identity_decoding_refuses_damage() {
        let good = identity(7, "c").encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (
                vec![2, 0, 0, 0, 0, 0, 0, 0, 7, 1, b'c'],
                "unknown format version 2",
            ),
            (good[..5].to_vec(), "node id is cut short"),
            (good[..9].to_vec(), "cluster id is missing"),
            ([&good[..], b"x"].concat(), "should be 1 bytes long but 2"),
            (vec![1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 0xff], "not UTF-8"),
            (
                vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'c'],
                "node id 0 is reserved",
            ),
        ];
        for (bytes, expected) in cases {
            let err = NodeIdentity::decode(&bytes).expect_err("damaged input must not decode");
            assert!(
                matches!(err, MetaStoreError::CorruptValue { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains(expected), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn key_layout_is_as_documented() {
        assert_eq!(
            group_key(GroupId::META, GroupKey::Vote),
            b"group/00000000000000000000/vote"
        );
        assert_eq!(
            group_key(GroupId(42), GroupKey::Committed),
            b"group/00000000000000000042/committed"
        );
        assert_eq!(
            group_key(GroupId(u64::MAX), GroupKey::Custom("lease")),
            b"group/18446744073709551615/lease"
        );
        for group in [0, 1, 10, 99, u64::MAX] {
            let key = group_key(GroupId(group), GroupKey::Snapshot);
            assert_eq!(parse_group(&key).expect("own keys parse"), GroupId(group));
        }
    }

    #[test]
    fn byte_order_of_keys_is_numeric_order_of_groups() {
        let mut groups = vec![10, 9, 0, u64::MAX, 100, 1];
        let mut keys: Vec<Vec<u8>> = groups
            .iter()
            .map(|&g| group_key(GroupId(g), GroupKey::Vote))
            .collect();
        keys.sort();
        groups.sort();
        let parsed: Vec<u64> = keys
            .iter()
            .map(|k| parse_group(k).expect("parses").get())
            .collect();
        assert_eq!(parsed, groups);
    }

    #[test]
    fn foreign_group_keys_are_refused() {
        for key in [
            &b"group/1/vote"[..],
            b"group/0000000000000000000x/vote",
            b"group/00000000000000000001vote",
            b"group/99999999999999999999/vote",
        ] {
            let err = parse_group(key).expect_err("not our layout");
            assert!(matches!(err, MetaStoreError::CorruptKey { .. }), "{err:?}");
        }
    }

    #[test]
    fn custom_names_are_checked() {
        assert!(GroupKey::Custom("lease_v2").check().is_ok());
        for bad in ["", "Vote", "a/b", "vote", "snapshot"] {
            assert!(
                GroupKey::Custom(bad).check().is_err(),
                "{bad:?} must be refused"
            );
        }
    }
}
