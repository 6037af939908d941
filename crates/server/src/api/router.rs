//! Request routing, pure: which shard a record goes to, which shard a request names, who
//! leads it. Everything here reads the applied [`MetaState`] and nothing else, so tests
//! drive it without a cluster.

use runnel_meta::{MetaState, ShardInfo, ShardState, StreamInfo, StreamStatus};
use runnel_types::{HashKey, NodeId, ShardId, StreamName};

use crate::error::ServerError;

/// The text form's prefix: `shardId-000000000007`.
const SHARD_ID_PREFIX: &str = "shardId-";
/// Digits of a shard id's number at most (a u64 has 20).
const SHARD_ID_DIGITS_MAX: usize = 20;

/// Parses a shard id in its Kinesis text form (`shardId-000000000007`, as
/// [`ShardId::kinesis_name`] writes it; any number of leading zeros).
pub fn parse_shard_id(field: &str, text: &str) -> Result<ShardId, ServerError> {
    let bad = || {
        ServerError::invalid_limit(
            field,
            format!("{:?} is not a shard id", truncate(text)),
            "\"shardId-\" followed by 1 to 20 digits, e.g. shardId-000000000007",
        )
    };
    let digits = text.strip_prefix(SHARD_ID_PREFIX).ok_or_else(bad)?;
    if digits.is_empty()
        || digits.len() > SHARD_ID_DIGITS_MAX
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    digits.parse::<u64>().map(ShardId).map_err(|_| bad())
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The stream, or NotFound.
pub fn stream<'a>(state: &'a MetaState, name: &StreamName) -> Result<&'a StreamInfo, ServerError> {
    state
        .streams
        .get(name)
        .ok_or_else(|| ServerError::NotFound {
            kind: "stream",
            name: name.to_string(),
        })
}

/// The stream, which must be ACTIVE to take writes and reads of records.
pub fn active_stream<'a>(
    state: &'a MetaState,
    name: &StreamName,
) -> Result<&'a StreamInfo, ServerError> {
    let s = stream(state, name)?;
    match s.status {
        StreamStatus::Active => Ok(s),
        StreamStatus::Creating => Err(ServerError::StreamNotActive {
            name: name.to_string(),
            status: "CREATING",
            what_to_do: "wait until DescribeStream shows ACTIVE",
        }),
        StreamStatus::Deleting => Err(ServerError::StreamNotActive {
            name: name.to_string(),
            status: "DELETING",
            what_to_do: "it is going away; create it again once it is gone",
        }),
    }
}

/// A shard of `stream`, open or closed. A shard id that was handed out once but is gone
/// now (a parent past retention after a split or merge, or a deleted stream's) is
/// STALE_SHARD_MAP: the client routed with a map older than the cluster's, and a fresh
/// `ListShards` tells it what to read instead. Any other unknown id, or the shard of
/// another stream, is NotFound.
pub fn shard_of<'a>(
    state: &'a MetaState,
    stream: &StreamName,
    shard: ShardId,
) -> Result<&'a ShardInfo, ServerError> {
    match state.shards.get(&shard) {
        Some(s) if &s.stream == stream => Ok(s),
        None if shard_was_handed_out(state, shard) => Err(ServerError::StaleShardMap {
            reason: format!(
                "{} of stream {stream} no longer exists (expired after a split or merge, or its stream was deleted)",
                shard.kinesis_name()
            ),
        }),
        _ => Err(ServerError::NotFound {
            kind: "shard",
            name: format!("{} of stream {stream}", shard.kinesis_name()),
        }),
    }
}

/// Shard ids are handed out in order from 1 (0 is the meta group) and never reused, so
/// every id below the next one to hand out named a shard once.
fn shard_was_handed_out(state: &MetaState, shard: ShardId) -> bool {
    shard.0 > 0 && shard < state.next_shard_id
}

/// The open shard of `stream` whose hash range holds `key`.
pub fn shard_for_key(
    state: &MetaState,
    stream: &StreamInfo,
    key: HashKey,
) -> Result<ShardId, ServerError> {
    stream
        .shards
        .iter()
        .filter_map(|id| state.shards.get(id))
        .find(|s| s.state == ShardState::Open && s.hash_range.contains(key))
        .map(|s| s.id)
        // The open shards tile the key space, so this is a broken invariant, not a
        // client error; say so rather than guess.
        .ok_or_else(|| {
            ServerError::Internal(format!(
                "no open shard of stream {} holds hash key {key}",
                stream.name
            ))
        })
}

/// The shards split or merged from `shard`, in id (creation) order.
pub fn children_of(state: &MetaState, shard: ShardId) -> Vec<ShardId> {
    state
        .shards
        .values()
        .filter(|s| s.parents.contains(&shard))
        .map(|s| s.id)
        .collect()
}

/// The leader of a shard as `me` knows it, with its address: the local replica's view
/// (`local_leader`, freshest) if this node hosts one and it knows a leader, else the
/// leader last reported to the placement service. A hint that names `me` is dropped (this
/// node does not lead, or it would not be asking), as is a node without an address.
pub fn leader_hint(
    state: &MetaState,
    shard: &ShardInfo,
    local_leader: Option<NodeId>,
    me: NodeId,
) -> Option<(NodeId, String)> {
    let reported = shard.leader.map(|l| l.node);
    [local_leader, reported]
        .into_iter()
        .flatten()
        .find(|n| *n != me)
        .and_then(|n| state.nodes.get(&n).map(|info| (n, info.address.clone())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use runnel_meta::{Command, NodeLabels, ReportedLeader, apply};
    use runnel_types::Term;

    fn state_with_stream(shards: u32) -> (MetaState, StreamName) {
        let mut st = MetaState::default();
        for n in 1..=3u64 {
            apply(
                &mut st,
                Command::RegisterNode {
                    node: NodeId(n),
                    address: format!("n{n}:7100"),
                    labels: NodeLabels::default(),
                    capacity_weight: 100,
                    now_ms: 1,
                },
            )
            .unwrap();
            apply(
                &mut st,
                Command::Heartbeat {
                    node: NodeId(n),
                    now_ms: 2,
                    load: Default::default(),
                    leaders: vec![],
                },
            )
            .unwrap();
        }
        let name = StreamName::new("orders").unwrap();
        apply(
            &mut st,
            Command::CreateStream {
                name: name.clone(),
                shard_count: shards,
                replication_factor: 3,
                retention_ms: 24 * 3_600_000,
                now_ms: 3,
            },
        )
        .unwrap();
        (st, name)
    }

    #[test]
    fn shard_ids_round_trip() {
        for id in [0u64, 7, 123_456_789_012, u64::MAX] {
            assert_eq!(
                parse_shard_id("shard_id", &ShardId(id).kinesis_name()).unwrap(),
                ShardId(id)
            );
        }
        assert_eq!(parse_shard_id("f", "shardId-7").unwrap(), ShardId(7));
        for bad in [
            "",
            "7",
            "shardId-",
            "shardId-x",
            "shardid-1",
            "shardId--1",
            "shardId-99999999999999999999",
        ] {
            assert!(parse_shard_id("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_key_routes_to_the_open_shard_holding_it() {
        let (st, name) = state_with_stream(4);
        let stream = stream(&st, &name).unwrap();
        for key in [0u128, 1, u128::MAX / 4, u128::MAX / 2, u128::MAX] {
            let id = shard_for_key(&st, stream, HashKey(key)).unwrap();
            assert!(st.shards[&id].hash_range.contains(HashKey(key)));
        }
        let pk = HashKey::of_partition_key("customer-1");
        let id = shard_for_key(&st, stream, pk).unwrap();
        assert!(st.shards[&id].hash_range.contains(pk));
    }

    #[test]
    fn unknown_and_inactive_streams() {
        let (mut st, name) = state_with_stream(1);
        assert!(matches!(
            active_stream(&st, &name),
            Err(ServerError::StreamNotActive {
                status: "CREATING",
                ..
            })
        ));
        let other = StreamName::new("nope").unwrap();
        assert!(matches!(
            stream(&st, &other),
            Err(ServerError::NotFound { .. })
        ));
        let shard = st.streams[&name].shards[0];
        assert!(shard_of(&st, &name, shard).is_ok());
        assert!(matches!(
            shard_of(&st, &other, shard),
            Err(ServerError::NotFound { .. })
        ));
        assert!(shard_of(&st, &name, ShardId(999)).is_err());
        st.streams.get_mut(&name).unwrap().status = StreamStatus::Active;
        assert!(active_stream(&st, &name).is_ok());
    }

    #[test]
    fn leader_hint_prefers_the_local_view_and_never_names_me() {
        let (mut st, name) = state_with_stream(1);
        let id = st.streams[&name].shards[0];
        st.shards.get_mut(&id).unwrap().leader = Some(ReportedLeader {
            node: NodeId(2),
            term: Term(1),
        });
        let shard = st.shards[&id].clone();
        let hint = |local, me| leader_hint(&st, &shard, local, NodeId(me));
        assert_eq!(
            hint(Some(NodeId(3)), 1),
            Some((NodeId(3), "n3:7100".into()))
        );
        assert_eq!(hint(None, 1), Some((NodeId(2), "n2:7100".into())));
        assert_eq!(
            hint(Some(NodeId(1)), 1),
            Some((NodeId(2), "n2:7100".into()))
        );
        assert_eq!(hint(None, 2), None);
        assert_eq!(hint(Some(NodeId(9)), 2), None);
    }

    #[test]
    fn children_follow_parents() {
        let (mut st, name) = state_with_stream(2);
        let ids = st.streams[&name].shards.clone();
        let mut child = st.shards[&ids[0]].clone();
        child.id = ShardId(50);
        child.parents = vec![ids[0], ids[1]];
        st.shards.insert(child.id, child);
        assert_eq!(children_of(&st, ids[0]), vec![ShardId(50)]);
        assert!(children_of(&st, ShardId(50)).is_empty());
    }

    #[test]
    fn a_shard_that_is_gone_is_a_stale_map_and_an_unknown_one_not_found() {
        let (mut st, name) = state_with_stream(2);
        let first = ShardId(1);
        assert!(shard_of(&st, &name, first).is_ok());
        st.shards.remove(&first);
        assert!(matches!(
            shard_of(&st, &name, first),
            Err(ServerError::StaleShardMap { .. })
        ));
        let never = st.next_shard_id;
        assert!(matches!(
            shard_of(&st, &name, never),
            Err(ServerError::NotFound { .. })
        ));
        assert!(matches!(
            shard_of(&st, &name, ShardId(0)),
            Err(ServerError::NotFound { .. })
        ));
        let other = StreamName::new("other").unwrap();
        assert!(matches!(
            shard_of(&st, &other, ShardId(2)),
            Err(ServerError::NotFound { .. })
        ));
    }
}
