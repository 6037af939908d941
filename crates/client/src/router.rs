//! The shard map of a stream and the pure decisions over it: which open shard takes a
//! record, which shards have which children, in which order a whole stream is read.
//!
//! No I/O: the [`Client`](crate::Client) fetches the map with `ListShards` and caches it;
//! the producer and the consumers ask this module where to go.

use std::collections::{BTreeMap, BTreeSet};

use runnel_proto::v1 as pb;
use runnel_types::{HashKey, HashRange, Record};

use crate::error::ClientError;

/// One shard as the SDK sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The Kinesis-style id, `shardId-000000000007`.
    pub shard_id: String,
    /// The hash keys the shard owns (inclusive at both ends).
    pub range: HashRange,
    /// The shards this one was split or merged from.
    pub parents: Vec<String>,
    /// False once the shard was split or merged away; it stays readable.
    pub open: bool,
    /// The first sequence number of the shard, when the server gave one.
    pub starting_sequence_number: Option<String>,
    /// The last sequence number, set once the shard is closed.
    pub ending_sequence_number: Option<String>,
    /// The leader's `host:port`, when known.
    pub leader: Option<String>,
    /// Every replica: `(node_id, host:port, role)`.
    pub replicas: Vec<Replica>,
}

/// A replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// The node holding it.
    pub node_id: u64,
    /// The node's public `host:port`.
    pub address: String,
    /// `"voter"` or `"learner"`.
    pub role: String,
}

impl ShardInfo {
    /// Converts a shard of a `ListShards` or `DescribeStream` answer. A shard without a
    /// parseable hash range is a protocol error, never a panic.
    pub fn from_proto(s: &pb::Shard) -> Result<ShardInfo, ClientError> {
        let bad = |what: String| ClientError::Protocol(format!("shard {:?}: {what}", s.shard_id));
        let r = s
            .hash_key_range
            .as_ref()
            .ok_or_else(|| bad("no hash key range".into()))?;
        let start: HashKey = r
            .starting_hash_key
            .parse()
            .map_err(|e| bad(format!("{e}")))?;
        let end: HashKey = r.ending_hash_key.parse().map_err(|e| bad(format!("{e}")))?;
        let range = HashRange::new(start.0, end.0).map_err(|e| bad(e.to_string()))?;
        let seq = s.sequence_number_range.as_ref();
        Ok(ShardInfo {
            shard_id: s.shard_id.clone(),
            range,
            parents: s.parent_shard_ids.clone(),
            open: s.open,
            starting_sequence_number: seq
                .map(|q| q.starting_sequence_number.clone())
                .filter(|x| !x.is_empty()),
            ending_sequence_number: seq.and_then(|q| q.ending_sequence_number.clone()),
            leader: s
                .leader
                .as_ref()
                .map(|l| l.address.clone())
                .filter(|a| !a.is_empty()),
            replicas: s
                .replicas
                .iter()
                .map(|r| Replica {
                    node_id: r.node_id,
                    address: r.address.clone(),
                    role: r.role.clone(),
                })
                .collect(),
        })
    }
}

/// Every shard of one stream, open and closed, in shard-id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardMap {
    shards: BTreeMap<String, ShardInfo>,
    /// Open shards sorted by range start, for routing by binary search.
    open: Vec<(HashRange, String)>,
}

impl ShardMap {
    /// Builds the map; the ranges of the open shards are not required to tile the key
    /// space (a map caught mid-split may have a hole: records there fail to route and
    /// the map is fetched again).
    pub fn new(shards: Vec<ShardInfo>) -> ShardMap {
        let mut open: Vec<(HashRange, String)> = shards
            .iter()
            .filter(|s| s.open)
            .map(|s| (s.range, s.shard_id.clone()))
            .collect();
        open.sort();
        let shards = shards
            .into_iter()
            .map(|s| (s.shard_id.clone(), s))
            .collect();
        ShardMap { shards, open }
    }

    /// Converts a `ListShards` answer.
    pub fn from_proto(shards: &[pb::Shard]) -> Result<ShardMap, ClientError> {
        Ok(ShardMap::new(
            shards
                .iter()
                .map(ShardInfo::from_proto)
                .collect::<Result<_, _>>()?,
        ))
    }

    /// The open shard whose range holds `key`.
    pub fn route_key(&self, key: HashKey) -> Option<&ShardInfo> {
        // The last open range starting at or before `key`.
        let i = self.open.partition_point(|(r, _)| r.start <= key);
        let (range, id) = self.open.get(i.checked_sub(1)?)?;
        if range.contains(key) {
            self.shards.get(id)
        } else {
            None
        }
    }

    /// The open shard that takes `record`: by its explicit hash key, else by the MD5 of
    /// its partition key.
    pub fn route(&self, record: &Record) -> Option<&ShardInfo> {
        self.route_key(record.hash_key())
    }

    /// A shard by id.
    pub fn get(&self, shard_id: &str) -> Option<&ShardInfo> {
        self.shards.get(shard_id)
    }

    /// Every shard, in id order.
    pub fn shards(&self) -> impl Iterator<Item = &ShardInfo> {
        self.shards.values()
    }

    /// The shards that name `shard_id` as a parent, in id order.
    pub fn children(&self, shard_id: &str) -> Vec<String> {
        self.shards
            .values()
            .filter(|s| s.parents.iter().any(|p| p == shard_id))
            .map(|s| s.shard_id.clone())
            .collect()
    }

    /// The shards a reader of the whole stream starts with: those with no parent still
    /// in the map (a parent past retention is gone, and so is its order constraint).
    pub fn roots(&self) -> Vec<String> {
        self.shards
            .values()
            .filter(|s| s.parents.iter().all(|p| !self.shards.contains_key(p)))
            .map(|s| s.shard_id.clone())
            .collect()
    }

    /// Whether every parent of `shard_id` that is still in the map is in `finished`:
    /// then reading it keeps per-key order.
    pub fn parents_done(&self, shard_id: &str, finished: &BTreeSet<String>) -> bool {
        self.shards.get(shard_id).is_none_or(|s| {
            s.parents
                .iter()
                .all(|p| finished.contains(p) || !self.shards.contains_key(p))
        })
    }

    /// Every shard in an order in which each comes after all of its parents
    /// (a topological order; ties broken by id).
    pub fn read_order(&self) -> Vec<String> {
        let mut done = BTreeSet::new();
        let mut out = Vec::with_capacity(self.shards.len());
        while out.len() < self.shards.len() {
            let next: Vec<String> = self
                .shards
                .keys()
                .filter(|id| !done.contains(*id) && self.parents_done(id, &done))
                .cloned()
                .collect();
            if next.is_empty() {
                // A cycle in lineage would be a server bug: list the rest rather than loop.
                out.extend(self.shards.keys().filter(|id| !done.contains(*id)).cloned());
                break;
            }
            done.extend(next.iter().cloned());
            out.extend(next);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: u64, range: HashRange, open: bool, parents: &[u64]) -> ShardInfo {
        ShardInfo {
            shard_id: runnel_types::ShardId(id).kinesis_name(),
            range,
            parents: parents
                .iter()
                .map(|p| runnel_types::ShardId(*p).kinesis_name())
                .collect(),
            open,
            starting_sequence_number: None,
            ending_sequence_number: None,
            leader: None,
            replicas: vec![],
        }
    }

    fn name(id: u64) -> String {
        runnel_types::ShardId(id).kinesis_name()
    }

    /// Shard 1 (closed) split into 2 and 3; 3 and 4 ... a four-shard stream of which
    /// shard 1 was split.
    fn split_map() -> ShardMap {
        let (a, b) = HashRange::FULL
            .split_at(HashRange::FULL.midpoint())
            .expect("midpoint splits");
        ShardMap::new(vec![
            shard(1, HashRange::FULL, false, &[]),
            shard(2, a, true, &[1]),
            shard(3, b, true, &[1]),
        ])
    }

    #[test]
    fn routes_to_the_open_shard_holding_the_key() {
        let m = split_map();
        assert_eq!(
            m.route_key(HashKey(0)).map(|s| s.shard_id.clone()),
            Some(name(2))
        );
        assert_eq!(
            m.route_key(HashKey(u128::MAX)).map(|s| s.shard_id.clone()),
            Some(name(3))
        );
        assert_eq!(
            m.route_key(HashKey(u128::MAX / 2))
                .map(|s| s.shard_id.clone()),
            Some(name(2))
        );
        assert_eq!(
            m.route_key(HashKey(u128::MAX / 2 + 1))
                .map(|s| s.shard_id.clone()),
            Some(name(3))
        );
    }

    #[test]
    fn routes_by_md5_or_explicit_hash_key() {
        let ranges = HashRange::split_even(8).expect("8 shards");
        let m = ShardMap::new(
            ranges
                .iter()
                .enumerate()
                .map(|(i, r)| shard(i as u64 + 1, *r, true, &[]))
                .collect(),
        );
        for pk in ["a", "user-1", "", "ünï"] {
            let r = Record::new(pk, &b"x"[..]);
            let s = m.route(&r).expect("tiled");
            assert!(s.range.contains(HashKey::of_partition_key(pk)));
        }
        let mut r = Record::new("a", &b"x"[..]);
        r.explicit_hash_key = Some(HashKey(5));
        assert_eq!(m.route(&r).map(|s| s.shard_id.clone()), Some(name(1)));
    }

    #[test]
    fn a_hole_routes_nowhere() {
        let m = ShardMap::new(vec![shard(
            1,
            HashRange::new(10, 20).expect("range"),
            true,
            &[],
        )]);
        assert!(m.route_key(HashKey(5)).is_none());
        assert!(m.route_key(HashKey(21)).is_none());
        assert!(ShardMap::default().route_key(HashKey(0)).is_none());
    }

    #[test]
    fn lineage_orders_parents_first() {
        let m = split_map();
        assert_eq!(m.roots(), vec![name(1)]);
        assert_eq!(m.children(&name(1)), vec![name(2), name(3)]);
        assert_eq!(m.read_order(), vec![name(1), name(2), name(3)]);
        let mut done = BTreeSet::new();
        assert!(!m.parents_done(&name(2), &done));
        done.insert(name(1));
        assert!(m.parents_done(&name(2), &done));
        // A merge: 4 has parents 2 and 3.
        let mut shards: Vec<ShardInfo> = m.shards().cloned().collect();
        shards.push(shard(4, HashRange::FULL, true, &[2, 3]));
        let m = ShardMap::new(shards);
        assert_eq!(m.read_order().last(), Some(&name(4)));
        done.insert(name(2));
        assert!(!m.parents_done(&name(4), &done));
    }

    #[test]
    fn from_proto_refuses_bad_ranges_without_panicking() {
        let mut s = pb::Shard {
            shard_id: name(1),
            open: true,
            ..Default::default()
        };
        assert!(ShardInfo::from_proto(&s).is_err());
        s.hash_key_range = Some(pb::HashKeyRange {
            starting_hash_key: "9".into(),
            ending_hash_key: "3".into(),
        });
        assert!(ShardInfo::from_proto(&s).is_err());
        s.hash_key_range = Some(pb::HashKeyRange {
            starting_hash_key: "x".into(),
            ending_hash_key: "3".into(),
        });
        assert!(ShardInfo::from_proto(&s).is_err());
        s.hash_key_range = Some(pb::HashKeyRange {
            starting_hash_key: "0".into(),
            ending_hash_key: u128::MAX.to_string(),
        });
        s.leader = Some(pb::LeaderHint {
            node_id: 1,
            address: "h:1".into(),
        });
        let info = ShardInfo::from_proto(&s).expect("valid");
        assert_eq!(info.range, HashRange::FULL);
        assert_eq!(info.leader.as_deref(), Some("h:1"));
    }
}
