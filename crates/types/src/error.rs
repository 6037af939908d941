//! Errors of the vocabulary crate: values that do not make sense. Each says which
//! value was wrong and what would be right.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TypesError {
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName { name: String, reason: String },

    #[error("invalid sequence number {value:?}: expected a decimal number below 2^128")]
    InvalidSequenceNumber { value: String },

    #[error("invalid hash key {value:?}: expected a decimal number below 2^128")]
    InvalidHashKey { value: String },

    #[error("invalid hash range: start {start} is after end {end}")]
    InvalidHashRange { start: u128, end: u128 },

    #[error("invalid shard count {count}: must be between 1 and {max}")]
    InvalidShardCount { count: u32, max: u32 },

    #[error(
        "split point {point} is not inside the range {start}..={end} (it must leave both halves non-empty)"
    )]
    SplitPointOutside { point: u128, start: u128, end: u128 },

    #[error("ranges {left} and {right} are not adjacent, so they cannot be merged")]
    RangesNotAdjacent { left: String, right: String },

    #[error("invalid record: {field} {problem}")]
    InvalidRecord {
        field: &'static str,
        problem: String,
    },

    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
}
