//! Typed ids. Each wraps a plain integer or string so that a `LogIndex` can never be
//! passed where a `Term` is expected, and each knows its own text form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::TypesError;
use crate::limits::{STREAM_NAME_LEN_MAX, STREAM_NAME_LEN_MIN};

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

int_id!(
    /// A node of the cluster. Chosen by the operator (`--node-id`), never 0.
    NodeId(u64)
);
int_id!(
    /// A shard, unique within the cluster for its whole life (never reused after a
    /// split, merge or stream deletion), so that it can also name the shard's Raft group.
    ShardId(u64)
);
int_id!(
    /// A Raft group hosted by a node: the meta group is [`GroupId::META`]; every other
    /// group is a shard's and carries the shard's id (shard ids start at 1).
    GroupId(u64)
);
int_id!(
    /// Position of an entry in a shard's replicated log. Raft indices start at 1.
    LogIndex(u64)
);
int_id!(
    /// A Raft term.
    Term(u64)
);

impl LogIndex {
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
    /// The previous index, or `None` at 0.
    pub fn prev(self) -> Option<LogIndex> {
        self.0.checked_sub(1).map(LogIndex)
    }
}

impl GroupId {
    /// The placement service's own Raft group.
    pub const META: GroupId = GroupId(0);

    pub fn is_meta(self) -> bool {
        self == Self::META
    }
}

impl From<ShardId> for GroupId {
    fn from(s: ShardId) -> GroupId {
        GroupId(s.0)
    }
}

impl ShardId {
    /// The Kinesis-style text form, `shardId-000000000007`.
    pub fn kinesis_name(self) -> String {
        format!("shardId-{:012}", self.0)
    }
}

/// A stream's name: 1 to 128 characters of `[a-zA-Z0-9_.-]`, as Kinesis allows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    pub fn new(name: impl Into<String>) -> Result<Self, TypesError> {
        let name = name.into();
        let reason = if name.len() < STREAM_NAME_LEN_MIN {
            Some("it is empty".to_string())
        } else if name.len() > STREAM_NAME_LEN_MAX {
            Some(format!(
                "it is {} bytes long; the limit is {STREAM_NAME_LEN_MAX}",
                name.len()
            ))
        } else {
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
                .map(|c| {
                    format!("it contains {c:?}; only letters, digits, '_', '.' and '-' are allowed")
                })
        };
        match reason {
            Some(reason) => Err(TypesError::InvalidStreamName { name, reason }),
            None => Ok(StreamName(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StreamName {
    type Error = TypesError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StreamName::new(s)
    }
}

impl From<StreamName> for String {
    fn from(s: StreamName) -> String {
        s.0
    }
}

impl FromStr for StreamName {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamName::new(s)
    }
}

/// A record's sequence number: its position in the shard's Raft log,
/// `log_index * 2^16 + slot`, where `slot` is the record's place in its batch.
///
/// Because the log index only grows (across leader changes too), so does the sequence
/// number; and an iterator position maps back to a log index with no lookup table.
/// On the wire and to users it is a decimal string, as in Kinesis.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SeqNo(pub u128);

impl SeqNo {
    /// Bits of the sequence number that hold the slot within a batch.
    pub const SLOT_BITS: u32 = 16;

    pub fn new(index: LogIndex, slot: u16) -> SeqNo {
        SeqNo(((index.0 as u128) << Self::SLOT_BITS) | slot as u128)
    }

    /// The log index of the entry (batch) holding this record. Sequence numbers too
    /// large to come from a u64 index saturate, which callers see as "past the tip".
    pub fn log_index(self) -> LogIndex {
        LogIndex(u64::try_from(self.0 >> Self::SLOT_BITS).unwrap_or(u64::MAX))
    }

    pub fn slot(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for SeqNo {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TypesError::InvalidSequenceNumber {
                value: s.to_string(),
            });
        }
        s.parse::<u128>()
            .map(SeqNo)
            .map_err(|_| TypesError::InvalidSequenceNumber {
                value: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_validated() {
        assert!(StreamName::new("orders-2026.v1_a").is_ok());
        assert!(StreamName::new("").is_err());
        assert!(StreamName::new("a".repeat(129)).is_err());
        assert!(StreamName::new("a".repeat(128)).is_ok());
        let err = StreamName::new("bad name").unwrap_err().to_string();
        assert!(err.contains("' '"), "{err}");
    }

    #[test]
    fn seqno_round_trips_through_text_and_position() {
        let s = SeqNo::new(LogIndex(123_456), 7);
        assert_eq!(s.log_index(), LogIndex(123_456));
        assert_eq!(s.slot(), 7);
        let text = s.to_string();
        assert_eq!(text.parse::<SeqNo>().unwrap(), s);
        assert!(SeqNo::new(LogIndex(2), 0) > SeqNo::new(LogIndex(1), u16::MAX));
    }

    #[test]
    fn seqno_rejects_bad_text() {
        for bad in [
            "",
            "-1",
            "12a",
            " 1",
            "1".repeat(40).as_str(),
            "340282366920938463463374607431768211456",
        ] {
            assert!(bad.parse::<SeqNo>().is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            u128::MAX.to_string().parse::<SeqNo>().unwrap().log_index(),
            LogIndex(u64::MAX)
        );
    }
}
