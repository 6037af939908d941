//! Validation at the edge: every field of every request, checked before anything else
//! happens. Pure functions; a bad value is [`ServerError::InvalidArgument`] naming the
//! field (`records[3].partition_key`), what is wrong with the value, and the limit.
//!
//! Values that pass come back typed (`StreamName`, `SeqNo`, `Record`, ...), so that the
//! handlers behind this module never see raw request text.

use bytes::Bytes;
use runnel_meta::limits::{SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN};
use runnel_meta::{GroupName, MemberId};
use runnel_proto::v1::ShardIteratorType;
use runnel_types::limits::{
    GET_RECORDS_COUNT_MAX, PARTITION_KEY_BYTES_MAX, PUT_RECORDS_BYTES_MAX, PUT_RECORDS_COUNT_MAX,
    RECORD_DATA_BYTES_MAX, REPLICATION_FACTOR_MAX, RETENTION_MS_DEFAULT, RETENTION_MS_MAX,
    SHARDS_PER_STREAM_MAX, STREAM_NAME_LEN_MAX,
};
use runnel_types::{HashKey, NodeId, Record, SeqNo, StreamName};

use crate::error::ServerError;

/// `ListStreams`: names per page when the request says 0, and at most.
pub const LIST_STREAMS_LIMIT_DEFAULT: usize = 100;
pub const LIST_STREAMS_LIMIT_MAX: usize = 1000;
/// A consumer's session when `JoinGroup` says 0.
pub const SESSION_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest text accepted for a sequence number or hash key (2^128 has 39 digits).
const DECIMAL_U128_DIGITS_MAX: usize = 39;

/// Where an iterator or a subscription starts, as the request asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record still retained.
    TrimHorizon,
    /// Just after the newest committed record.
    Latest,
    AtSequenceNumber(SeqNo),
    AfterSequenceNumber(SeqNo),
    /// The first record that arrived at or after this time (ms since the epoch).
    AtTimestamp(u64),
}

/// Shows a client value in a message without echoing kilobytes of it back.
fn shown(text: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 64;
    if text.chars().count() <= SHOWN_CHARS_MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(SHOWN_CHARS_MAX).collect();
        format!("{head:?}... ({} bytes)", text.len())
    }
}

pub fn stream_name(field: &str, text: &str) -> Result<StreamName, ServerError> {
    StreamName::new(text).map_err(|_| {
        let problem = if text.is_empty() {
            "is empty".to_string()
        } else if text.len() > STREAM_NAME_LEN_MAX {
            format!("is {} bytes long", text.len())
        } else {
            format!(
                "{} holds a character other than letters, digits, '_', '.' and '-'",
                shown(text)
            )
        };
        ServerError::invalid_limit(
            field,
            problem,
            format!("1 to {STREAM_NAME_LEN_MAX} characters of [a-zA-Z0-9_.-]"),
        )
    })
}

pub fn sequence_number(field: &str, text: &str) -> Result<SeqNo, ServerError> {
    if text.is_empty() {
        return Err(ServerError::invalid(
            field,
            "is empty; a sequence number is required here",
        ));
    }
    text.parse::<SeqNo>().map_err(|_| {
        ServerError::invalid_limit(
            field,
            format!("{} is not a sequence number", shown(text)),
            format!("a decimal number below 2^128 (at most {DECIMAL_U128_DIGITS_MAX} digits)"),
        )
    })
}

pub fn explicit_hash_key(field: &str, text: Option<&str>) -> Result<Option<HashKey>, ServerError> {
    let Some(text) = text else { return Ok(None) };
    text.parse::<HashKey>().map(Some).map_err(|_| {
        ServerError::invalid_limit(
            field,
            format!("{} is not a hash key", shown(text)),
            "a decimal number from 0 to 2^128 - 1",
        )
    })
}

/// One record of `PutRecord` (`entry` None) or of `PutRecords` (`entry` its position,
/// named `records[3].` in errors). Takes the request's key and data, so that a valid
/// record costs no allocation here: field names are formatted only for an error.
pub fn record(
    entry: Option<usize>,
    partition_key: String,
    data: Bytes,
    explicit_hash_key_text: Option<&str>,
) -> Result<Record, ServerError> {
    let field = |f: &str| match entry {
        Some(i) => format!("records[{i}].{f}"),
        None => f.to_string(),
    };
    let pk = partition_key.len();
    if pk == 0 {
        return Err(ServerError::invalid_limit(
            field("partition_key"),
            "is empty",
            format!("1 to {PARTITION_KEY_BYTES_MAX} bytes"),
        ));
    }
    if pk > PARTITION_KEY_BYTES_MAX {
        return Err(ServerError::invalid_limit(
            field("partition_key"),
            format!("is {pk} bytes"),
            format!("{PARTITION_KEY_BYTES_MAX} bytes"),
        ));
    }
    if data.len() > RECORD_DATA_BYTES_MAX {
        return Err(ServerError::invalid_limit(
            field("data"),
            format!("is {} bytes", data.len()),
            format!("{RECORD_DATA_BYTES_MAX} bytes"),
        ));
    }
    let explicit = match explicit_hash_key_text {
        None => None,
        Some(text) => explicit_hash_key(&field("explicit_hash_key"), Some(text))?,
    };
    let record = Record {
        partition_key,
        explicit_hash_key: explicit,
        data,
    };
    // The shared check, so that the edge and the storage agree on what a record is.
    record
        .validate()
        .map_err(|e| ServerError::invalid(field("record"), e.to_string()))?;
    Ok(record)
}

/// The bytes of a record that count against `PutRecords`' 5 MiB: key and data, as in
/// Kinesis.
pub fn record_bytes(partition_key: &str, data: &[u8]) -> usize {
    partition_key.len() + data.len()
}

/// The whole-request limits of `PutRecords`: 1 to 500 records and 5 MiB.
pub fn put_records_request(count: usize, total_bytes: usize) -> Result<(), ServerError> {
    if count == 0 {
        return Err(ServerError::invalid_limit(
            "records",
            "is empty",
            format!("1 to {PUT_RECORDS_COUNT_MAX} records"),
        ));
    }
    if count > PUT_RECORDS_COUNT_MAX {
        return Err(ServerError::invalid_limit(
            "records",
            format!("holds {count} records"),
            format!("{PUT_RECORDS_COUNT_MAX} records"),
        ));
    }
    if total_bytes > PUT_RECORDS_BYTES_MAX {
        return Err(ServerError::invalid_limit(
            "records",
            format!("hold {total_bytes} bytes of partition keys and data"),
            format!("{PUT_RECORDS_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// `GetRecords`' limit: 0 means the most, 10,000.
pub fn get_records_limit(limit: u32) -> Result<usize, ServerError> {
    match limit as usize {
        0 => Ok(GET_RECORDS_COUNT_MAX),
        n if n > GET_RECORDS_COUNT_MAX => Err(ServerError::invalid_limit(
            "limit",
            format!("is {n}"),
            format!("{GET_RECORDS_COUNT_MAX} records"),
        )),
        n => Ok(n),
    }
}

/// `ListStreams`' limit: 0 means 100; at most 1,000.
pub fn list_streams_limit(limit: u32) -> Result<usize, ServerError> {
    match limit as usize {
        0 => Ok(LIST_STREAMS_LIMIT_DEFAULT),
        n if n > LIST_STREAMS_LIMIT_MAX => Err(ServerError::invalid_limit(
            "limit",
            format!("is {n}"),
            format!("{LIST_STREAMS_LIMIT_MAX} stream names"),
        )),
        n => Ok(n),
    }
}

/// An optional `exclusive_start_stream_name`: empty means from the start.
pub fn exclusive_start(text: &str) -> Result<Option<StreamName>, ServerError> {
    if text.is_empty() {
        return Ok(None);
    }
    stream_name("exclusive_start_stream_name", text).map(Some)
}

pub fn shard_count(count: u32) -> Result<u32, ServerError> {
    if !(1..=SHARDS_PER_STREAM_MAX).contains(&count) {
        return Err(ServerError::invalid_limit(
            "shard_count",
            format!("is {count}"),
            format!("1 to {SHARDS_PER_STREAM_MAX} shards"),
        ));
    }
    Ok(count)
}

/// The replication factor of a new stream: 0 means `default`, capped by the nodes that
/// are up (so a one-node cluster gets 1); an explicit value must be 1 to 5 and at most
/// the nodes up.
pub fn replication_factor(
    requested: u32,
    default: u32,
    nodes_up: usize,
) -> Result<u32, ServerError> {
    let up = u32::try_from(nodes_up).unwrap_or(u32::MAX);
    if requested == 0 {
        return Ok(default.clamp(1, REPLICATION_FACTOR_MAX).min(up.max(1)));
    }
    if requested > REPLICATION_FACTOR_MAX {
        return Err(ServerError::invalid_limit(
            "replication_factor",
            format!("is {requested}"),
            format!("1 to {REPLICATION_FACTOR_MAX} replicas"),
        ));
    }
    if requested > up {
        return Err(ServerError::invalid_limit(
            "replication_factor",
            format!("is {requested} but only {up} nodes are up; add nodes or lower it"),
            format!("{up} replicas (the nodes up)"),
        ));
    }
    Ok(requested)
}

/// A retention period: 0 means 24 hours (only where `zero_is_default`); otherwise from
/// the cluster's minimum (`retention_ms_min`, 1 hour unless lowered) to 365 days.
pub fn retention_ms(
    value: u64,
    retention_ms_min: u64,
    zero_is_default: bool,
) -> Result<u64, ServerError> {
    let value = if value == 0 && zero_is_default {
        RETENTION_MS_DEFAULT
    } else {
        value
    };
    if !(retention_ms_min..=RETENTION_MS_MAX).contains(&value) {
        return Err(ServerError::invalid_limit(
            "retention_ms",
            format!("is {value} ms"),
            format!("{retention_ms_min} to {RETENTION_MS_MAX} ms"),
        ));
    }
    Ok(value)
}

/// An iterator type and the fields it needs. `type_field` names the type's field
/// (`shard_iterator_type` or `starting_position`); an `AT_TIMESTAMP` later than
/// `now_ms` is refused.
pub fn start_at(
    type_field: &str,
    iterator_type: i32,
    starting_sequence_number: &str,
    timestamp_ms: u64,
    now_ms: u64,
) -> Result<StartAt, ServerError> {
    let kinds = "TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER or AT_TIMESTAMP";
    let kind = ShardIteratorType::try_from(iterator_type)
        .ok()
        .filter(|k| *k != ShardIteratorType::Unspecified)
        .ok_or_else(|| {
            ServerError::invalid_limit(type_field, format!("is {iterator_type}"), kinds)
        })?;
    let seq = || sequence_number("starting_sequence_number", starting_sequence_number);
    Ok(match kind {
        ShardIteratorType::TrimHorizon => StartAt::TrimHorizon,
        ShardIteratorType::Latest => StartAt::Latest,
        ShardIteratorType::AtSequenceNumber => StartAt::AtSequenceNumber(seq()?),
        ShardIteratorType::AfterSequenceNumber => StartAt::AfterSequenceNumber(seq()?),
        ShardIteratorType::AtTimestamp => {
            if timestamp_ms > now_ms {
                return Err(ServerError::invalid_limit(
                    "timestamp_ms",
                    format!(
                        "{timestamp_ms} is {} ms in the future",
                        timestamp_ms - now_ms
                    ),
                    format!("at most the server's current time ({now_ms})"),
                ));
            }
            StartAt::AtTimestamp(timestamp_ms)
        }
        ShardIteratorType::Unspecified => unreachable!("filtered above"),
    })
}

pub fn group_name(text: &str) -> Result<GroupName, ServerError> {
    GroupName::new(text).map_err(|_| {
        ServerError::invalid_limit(
            "group_name",
            if text.is_empty() {
                "is empty".to_string()
            } else {
                format!("{} is not a group name", shown(text))
            },
            format!(
                "1 to {} characters of [a-zA-Z0-9_.-]",
                runnel_meta::limits::GROUP_NAME_BYTES_MAX
            ),
        )
    })
}

pub fn member_id(text: &str) -> Result<MemberId, ServerError> {
    MemberId::new(text).map_err(|_| {
        ServerError::invalid_limit(
            "member_id",
            if text.is_empty() {
                "is empty".to_string()
            } else {
                format!("{} is not a member id", shown(text))
            },
            format!(
                "1 to {} bytes of printable ASCII without spaces",
                runnel_meta::limits::MEMBER_ID_BYTES_MAX
            ),
        )
    })
}

/// A consumer session: 0 means 10 s.
pub fn session_timeout_ms(value: u64) -> Result<u64, ServerError> {
    let value = if value == 0 {
        SESSION_TIMEOUT_MS_DEFAULT
    } else {
        value
    };
    if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&value) {
        return Err(ServerError::invalid_limit(
            "session_timeout_ms",
            format!("is {value} ms"),
            format!("{SESSION_TIMEOUT_MS_MIN} to {SESSION_TIMEOUT_MS_MAX} ms"),
        ));
    }
    Ok(value)
}

pub fn node_id(value: u64) -> Result<NodeId, ServerError> {
    if value == 0 {
        return Err(ServerError::invalid_limit(
            "node_id",
            "is 0",
            "a node id from 1",
        ));
    }
    Ok(NodeId(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use runnel_types::LogIndex;

    fn field_of(e: ServerError) -> (String, Option<String>) {
        match e {
            ServerError::InvalidArgument { field, limit, .. } => (field, limit),
            other => panic!("not InvalidArgument: {other}"),
        }
    }

    #[test]
    fn stream_names() {
        assert_eq!(
            stream_name("stream_name", "orders-1.v2").unwrap().as_str(),
            "orders-1.v2"
        );
        for bad in ["", "a b", "ü", &"x".repeat(129)] {
            let (field, limit) = field_of(stream_name("stream_name", bad).unwrap_err());
            assert_eq!(field, "stream_name");
            assert!(limit.unwrap().contains("128"));
        }
    }

    #[test]
    fn records_name_the_field_and_limit() {
        let data = Bytes::from_static(b"x");
        let r = record(Some(3), "pk".into(), data.clone(), Some("42")).unwrap();
        assert_eq!(r.explicit_hash_key, Some(HashKey(42)));
        let (field, limit) =
            field_of(record(Some(3), String::new(), data.clone(), None).unwrap_err());
        assert_eq!(field, "records[3].partition_key");
        assert!(limit.unwrap().contains("256"));
        let long = "k".repeat(257);
        let (field, _) = field_of(record(Some(3), long, data.clone(), None).unwrap_err());
        assert_eq!(field, "records[3].partition_key");
        let big = Bytes::from(vec![0u8; RECORD_DATA_BYTES_MAX + 1]);
        let (field, limit) = field_of(record(None, "pk".into(), big, None).unwrap_err());
        assert_eq!(
            (field.as_str(), limit.unwrap()),
            ("data", format!("{RECORD_DATA_BYTES_MAX} bytes"))
        );
        let max = (u128::MAX).to_string();
        assert!(record(None, "pk".into(), data.clone(), Some(&max)).is_ok());
        for bad in [
            "",
            "-1",
            "0x10",
            "340282366920938463463374607431768211456",
            "1 ",
        ] {
            let (field, _) =
                field_of(record(Some(0), "pk".into(), data.clone(), Some(bad)).unwrap_err());
            assert_eq!(field, "records[0].explicit_hash_key", "{bad:?}");
        }
    }

    #[test]
    fn put_records_limits() {
        assert!(put_records_request(1, 0).is_ok());
        assert!(put_records_request(500, PUT_RECORDS_BYTES_MAX).is_ok());
        assert!(put_records_request(0, 0).is_err());
        assert!(put_records_request(501, 10).is_err());
        let (field, limit) =
            field_of(put_records_request(2, PUT_RECORDS_BYTES_MAX + 1).unwrap_err());
        assert_eq!(field, "records");
        assert!(limit.unwrap().contains(&PUT_RECORDS_BYTES_MAX.to_string()));
    }

    #[test]
    fn sequence_numbers() {
        let s = SeqNo::new(LogIndex(7), 3);
        assert_eq!(sequence_number("f", &s.to_string()).unwrap(), s);
        for bad in ["", "abc", "-5", &"9".repeat(40)] {
            let (field, _) = field_of(sequence_number("f", bad).unwrap_err());
            assert_eq!(field, "f");
        }
    }

    #[test]
    fn limits_with_defaults() {
        assert_eq!(get_records_limit(0).unwrap(), GET_RECORDS_COUNT_MAX);
        assert_eq!(get_records_limit(5).unwrap(), 5);
        assert!(get_records_limit(10_001).is_err());
        assert_eq!(list_streams_limit(0).unwrap(), 100);
        assert_eq!(list_streams_limit(1000).unwrap(), 1000);
        assert!(list_streams_limit(1001).is_err());
        assert_eq!(exclusive_start("").unwrap(), None);
        assert!(exclusive_start("a b").is_err());
        assert!(shard_count(0).is_err());
        assert!(shard_count(SHARDS_PER_STREAM_MAX + 1).is_err());
        assert_eq!(session_timeout_ms(0).unwrap(), SESSION_TIMEOUT_MS_DEFAULT);
        assert!(session_timeout_ms(1).is_err());
        assert!(node_id(0).is_err());
    }

    #[test]
    fn replication_defaults_to_what_the_cluster_can_hold() {
        assert_eq!(replication_factor(0, 3, 1).unwrap(), 1);
        assert_eq!(replication_factor(0, 3, 5).unwrap(), 3);
        assert_eq!(replication_factor(0, 3, 0).unwrap(), 1);
        assert_eq!(replication_factor(2, 3, 3).unwrap(), 2);
        assert!(replication_factor(4, 3, 3).is_err());
        assert!(replication_factor(6, 3, 9).is_err());
    }

    #[test]
    fn retention_bounds() {
        let hour = 3_600_000;
        assert_eq!(retention_ms(0, hour, true).unwrap(), RETENTION_MS_DEFAULT);
        assert!(retention_ms(0, hour, false).is_err());
        assert!(retention_ms(hour - 1, hour, true).is_err());
        assert_eq!(retention_ms(1000, 1000, true).unwrap(), 1000);
        assert!(retention_ms(RETENTION_MS_MAX + 1, hour, true).is_err());
    }

    #[test]
    fn iterator_types_need_their_fields() {
        let now = 1_000_000;
        let t = |k: ShardIteratorType| k as i32;
        assert_eq!(
            start_at("t", t(ShardIteratorType::TrimHorizon), "", 0, now).unwrap(),
            StartAt::TrimHorizon
        );
        assert_eq!(
            start_at("t", t(ShardIteratorType::Latest), "", 0, now).unwrap(),
            StartAt::Latest
        );
        assert_eq!(
            start_at("t", t(ShardIteratorType::AtSequenceNumber), "65536", 0, now).unwrap(),
            StartAt::AtSequenceNumber(SeqNo(65536))
        );
        let (field, _) = field_of(
            start_at("t", t(ShardIteratorType::AfterSequenceNumber), "", 0, now).unwrap_err(),
        );
        assert_eq!(field, "starting_sequence_number");
        assert_eq!(
            start_at("t", t(ShardIteratorType::AtTimestamp), "", now, now).unwrap(),
            StartAt::AtTimestamp(now)
        );
        let (field, _) = field_of(
            start_at("t", t(ShardIteratorType::AtTimestamp), "", now + 1, now).unwrap_err(),
        );
        assert_eq!(field, "timestamp_ms");
        for bad in [0, 6, -1] {
            let (field, _) =
                field_of(start_at("shard_iterator_type", bad, "", 0, now).unwrap_err());
            assert_eq!(field, "shard_iterator_type");
        }
    }

    #[test]
    fn group_fields() {
        assert!(group_name("billing").is_ok());
        assert_eq!(field_of(group_name("").unwrap_err()).0, "group_name");
        assert_eq!(field_of(member_id("has space").unwrap_err()).0, "member_id");
    }
}
