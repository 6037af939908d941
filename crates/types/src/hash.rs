//! Hash key math. The key space is `[0, 2^128)`; a record's key is the MD5 of its
//! partition key read as a big-endian u128 (or the explicit hash key it names). The open
//! shards of a stream own inclusive ranges that tile the space with no gap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::TypesError;
use crate::limits::SHARDS_PER_STREAM_MAX;

/// A point of the 128-bit hash key space.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The hash key of a partition key: MD5 of its UTF-8 bytes, big-endian.
    pub fn of_partition_key(partition_key: &str) -> HashKey {
        HashKey(u128::from_be_bytes(
            md5::compute(partition_key.as_bytes()).0,
        ))
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for HashKey {
    type Err = TypesError;
    /// Decimal text, as Kinesis's `ExplicitHashKey`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TypesError::InvalidHashKey {
                value: s.to_string(),
            });
        }
        s.parse::<u128>()
            .map(HashKey)
            .map_err(|_| TypesError::InvalidHashKey {
                value: s.to_string(),
            })
    }
}

/// An inclusive range of hash keys `[start, end]`. Inclusive so that the last range can
/// end at `u128::MAX` without a 129-bit bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HashRange {
    pub start: HashKey,
    pub end: HashKey,
}

impl fmt::Display for HashRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

impl HashRange {
    /// The whole key space.
    pub const FULL: HashRange = HashRange {
        start: HashKey(0),
        end: HashKey(u128::MAX),
    };

    pub fn new(start: u128, end: u128) -> Result<HashRange, TypesError> {
        if start > end {
            return Err(TypesError::InvalidHashRange { start, end });
        }
        Ok(HashRange {
            start: HashKey(start),
            end: HashKey(end),
        })
    }

    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key && key <= self.end
    }

    /// The midpoint that `split` uses when no point is given: halves of equal size.
    pub fn midpoint(&self) -> HashKey {
        HashKey(self.start.0 + (self.end.0 - self.start.0) / 2 + 1)
    }

    /// Split into `[start, point - 1]` and `[point, end]`. Both halves must be non-empty.
    pub fn split_at(&self, point: HashKey) -> Result<(HashRange, HashRange), TypesError> {
        if point.0 <= self.start.0 || point.0 > self.end.0 {
            return Err(TypesError::SplitPointOutside {
                point: point.0,
                start: self.start.0,
                end: self.end.0,
            });
        }
        Ok((
            HashRange {
                start: self.start,
                end: HashKey(point.0 - 1),
            },
            HashRange {
                start: point,
                end: self.end,
            },
        ))
    }

    /// Merge with the range that directly follows this one.
    pub fn merge(&self, next: &HashRange) -> Result<HashRange, TypesError> {
        if self.end.0.checked_add(1) != Some(next.start.0) {
            return Err(TypesError::RangesNotAdjacent {
                left: self.to_string(),
                right: next.to_string(),
            });
        }
        Ok(HashRange {
            start: self.start,
            end: next.end,
        })
    }

    /// `count` ranges of (nearly) equal size that tile the whole key space, in order.
    /// The first `2^128 mod count` ranges are one key larger than the rest.
    pub fn split_even(count: u32) -> Result<Vec<HashRange>, TypesError> {
        if count == 0 || count > SHARDS_PER_STREAM_MAX {
            return Err(TypesError::InvalidShardCount {
                count,
                max: SHARDS_PER_STREAM_MAX,
            });
        }
        let n = count as u128;
        // 2^128 = q * n + r; the first r ranges hold q + 1 keys, the others q. Computed
        // from 2^128 - 1 = q1 * n + r1 so nothing overflows: if r1 + 1 == n then
        // q = q1 + 1 and r = 0, else q = q1 and r = r1 + 1.
        let (q1, r1) = (u128::MAX / n, u128::MAX % n);
        let (big_minus_one, small_minus_one, r) = if r1 + 1 == n {
            (q1, q1, 0)
        } else {
            (q1, q1 - 1, r1 + 1)
        };
        let mut out = Vec::with_capacity(count as usize);
        let mut start: u128 = 0;
        for i in 0..n {
            let end = start
                + if i < r {
                    big_minus_one
                } else {
                    small_minus_one
                };
            out.push(HashRange {
                start: HashKey(start),
                end: HashKey(end),
            });
            start = end.wrapping_add(1);
        }
        Ok(out)
    }
}

/// Checks that `ranges` (in any order) tile `[0, 2^128)` with no gap and no overlap.
/// Returns the sorted ranges, or a description of the first fault.
pub fn check_tiling(ranges: &[HashRange]) -> Result<Vec<HashRange>, String> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut expect: Option<u128> = Some(0);
    for r in &sorted {
        match expect {
            Some(e) if r.start.0 == e => expect = r.end.0.checked_add(1),
            Some(e) => return Err(format!("expected a range starting at {e}, found {r}")),
            None => return Err(format!("range {r} lies past the end of the key space")),
        }
    }
    match expect {
        None => Ok(sorted),
        Some(e) => Err(format!(
            "keys from {e} to the end of the key space are not covered"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn md5_matches_kinesis() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e, read big-endian.
        assert_eq!(
            HashKey::of_partition_key("").0,
            0xd41d8cd98f00b204e9800998ecf8427e
        );
        assert_eq!(
            HashKey::of_partition_key("a").0,
            0x0cc175b9c0f1b6a831c399e269772661
        );
    }

    #[test]
    fn one_shard_owns_everything() {
        assert_eq!(HashRange::split_even(1).unwrap(), vec![HashRange::FULL]);
        assert!(HashRange::split_even(0).is_err());
    }

    #[test]
    fn split_and_merge_round_trip() {
        let (a, b) = HashRange::FULL
            .split_at(HashRange::FULL.midpoint())
            .unwrap();
        assert_eq!(a.end.0, u128::MAX / 2);
        assert_eq!(a.merge(&b).unwrap(), HashRange::FULL);
        assert!(b.merge(&a).is_err());
        assert!(HashRange::FULL.split_at(HashKey(0)).is_err());
        let tiny = HashRange::new(5, 5).unwrap();
        assert!(tiny.split_at(tiny.midpoint()).is_err());
    }

    #[test]
    fn check_tiling_finds_gaps() {
        let mut r = HashRange::split_even(4).unwrap();
        assert!(check_tiling(&r).is_ok());
        r.remove(2);
        assert!(
            check_tiling(&r)
                .unwrap_err()
                .contains("expected a range starting at")
        );
    }

    proptest! {
        #[test]
        fn split_even_tiles_the_space(n in 1u32..=4096) {
            let ranges = HashRange::split_even(n).unwrap();
            prop_assert_eq!(ranges.len(), n as usize);
            prop_assert!(check_tiling(&ranges).is_ok());
            let sizes: Vec<u128> = ranges.iter().map(|r| r.end.0 - r.start.0).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1);
        }

        #[test]
        fn every_key_has_exactly_one_shard(n in 1u32..64, key: u128) {
            let ranges = HashRange::split_even(n).unwrap();
            prop_assert_eq!(ranges.iter().filter(|r| r.contains(HashKey(key))).count(), 1);
        }

        #[test]
        fn split_keeps_the_tiling(n in 1u32..16, pick: usize, frac in 0.0f64..1.0) {
            let mut ranges = HashRange::split_even(n).unwrap();
            let i = pick % ranges.len();
            let r = ranges[i];
            let width = r.end.0 - r.start.0;
            let point = r.start.0 + 1 + ((width as f64 * frac) as u128).min(width - 1);
            let (a, b) = r.split_at(HashKey(point)).unwrap();
            ranges.splice(i..=i, [a, b]);
            prop_assert!(check_tiling(&ranges).is_ok());
        }
    }
}
