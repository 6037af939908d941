//! Shard iterators: opaque, self-contained tokens that any node of the cluster can
//! decode, so that no node has to store them (DESIGN.md, "Shard iterators").
//!
//! A token carries the stream, the shard, the position of the next record to read and
//! an expiry, followed by a 128-bit SipHash tag keyed with the cluster's iterator key.
//! The tag makes a token unforgeable and unalterable by clients and lets a node tell a
//! token of another cluster from a corrupt one; it is not encryption (a token's fields
//! are not secret). Tokens are URL-safe base64 without padding.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use runnel_types::limits::ITERATOR_TTL_MS;
use runnel_types::{SeqNo, ShardId, StreamName};
use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;
use thiserror::Error;

/// Token format version; a decoder refuses any other.
const TOKEN_V1: u8 = 1;
const TAG_LEN: usize = 16;
/// A token never needs more than this (version, ids, a 128-character stream name,
/// position, expiry, tag); anything longer is refused before decoding.
pub const TOKEN_TEXT_LEN_MAX: usize = 512;

/// The key that tags this cluster's iterators. Generated once when the cluster is
/// bootstrapped and kept in the placement service's state, so every node shares it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IteratorKey(pub [u8; 16]);

impl std::fmt::Debug for IteratorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IteratorKey(..)")
    }
}

/// What a shard iterator points at: the next record to return is the first one whose
/// sequence number is at least `next`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardIterator {
    pub stream: StreamName,
    pub shard: ShardId,
    pub next: SeqNo,
    pub expires_ms: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IteratorError {
    #[error(
        "the shard iterator expired {ago_ms} ms ago (iterators last 5 minutes): get a new one with GetShardIterator"
    )]
    Expired { ago_ms: u64 },
    #[error(
        "the shard iterator is not valid: {reason}; pass the token GetShardIterator or GetRecords returned, unchanged"
    )]
    Invalid { reason: &'static str },
}

impl ShardIterator {
    /// A new iterator that expires [`ITERATOR_TTL_MS`] after `now_ms`.
    pub fn new(stream: StreamName, shard: ShardId, next: SeqNo, now_ms: u64) -> ShardIterator {
        ShardIterator {
            stream,
            shard,
            next,
            expires_ms: now_ms.saturating_add(ITERATOR_TTL_MS),
        }
    }

    pub fn encode(&self, key: &IteratorKey) -> String {
        let name = self.stream.as_str().as_bytes();
        let mut buf = Vec::with_capacity(1 + 8 + 16 + 8 + 1 + name.len() + TAG_LEN);
        buf.push(TOKEN_V1);
        buf.extend_from_slice(&self.shard.0.to_be_bytes());
        buf.extend_from_slice(&self.next.0.to_be_bytes());
        buf.extend_from_slice(&self.expires_ms.to_be_bytes());
        buf.push(name.len() as u8);
        buf.extend_from_slice(name);
        let tag = tag(key, &buf);
        buf.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Decodes and checks a token: its tag first (so nothing of a forged token is
    /// trusted), then its expiry against `now_ms`.
    pub fn decode(
        text: &str,
        key: &IteratorKey,
        now_ms: u64,
    ) -> Result<ShardIterator, IteratorError> {
        let invalid = |reason| IteratorError::Invalid { reason };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if text.len() > TOKEN_TEXT_LEN_MAX {
            return Err(invalid("it is too long"));
        }
        let buf = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| invalid("it is not URL-safe base64"))?;
        if buf.len() < 1 + 8 + 16 + 8 + 1 + TAG_LEN {
            return Err(invalid("it is too short"));
        }
        let (body, got_tag) = buf.split_at(buf.len() - TAG_LEN);
        if tag(key, body) != got_tag {
            return Err(invalid(
                "its integrity tag does not match (altered, or issued by another cluster)",
            ));
        }
        if body[0] != TOKEN_V1 {
            return Err(invalid("its format version is unknown"));
        }
        let u64_at =
            |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8-byte slice"));
        let shard = ShardId(u64_at(1));
        let next = SeqNo(u128::from_be_bytes(
            body[9..25].try_into().expect("16-byte slice"),
        ));
        let expires_ms = u64_at(25);
        let name_len = body[33] as usize;
        let name = body
            .get(34..34 + name_len)
            .filter(|_| body.len() == 34 + name_len);
        let name = name.ok_or(invalid("its stream name has the wrong length"))?;
        let name =
            std::str::from_utf8(name).map_err(|_| invalid("its stream name is not UTF-8"))?;
        let stream = StreamName::new(name).map_err(|_| invalid("its stream name is not valid"))?;
        if now_ms > expires_ms {
            return Err(IteratorError::Expired {
                ago_ms: now_ms - expires_ms,
            });
        }
        Ok(ShardIterator {
            stream,
            shard,
            next,
            expires_ms,
        })
    }
}

fn tag(key: &IteratorKey, body: &[u8]) -> [u8; TAG_LEN] {
    let mut h = SipHasher24::new_with_key(&key.0);
    h.write(body);
    h.finish128().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_types::LogIndex;

    const KEY: IteratorKey = IteratorKey([7; 16]);

    fn it() -> ShardIterator {
        ShardIterator::new(
            StreamName::new("orders").unwrap(),
            ShardId(3),
            SeqNo::new(LogIndex(42), 9),
            1_000,
        )
    }

    #[test]
    fn round_trips_until_expiry() {
        let tok = it().encode(&KEY);
        assert_eq!(ShardIterator::decode(&tok, &KEY, 1_000).unwrap(), it());
        assert_eq!(
            ShardIterator::decode(&tok, &KEY, 1_000 + ITERATOR_TTL_MS).unwrap(),
            it()
        );
        assert_eq!(
            ShardIterator::decode(&tok, &KEY, 1_001 + ITERATOR_TTL_MS),
            Err(IteratorError::Expired { ago_ms: 1 })
        );
    }

    #[test]
    fn another_clusters_key_is_refused() {
        let tok = it().encode(&KEY);
        let err = ShardIterator::decode(&tok, &IteratorKey([8; 16]), 1_000).unwrap_err();
        assert!(err.to_string().contains("integrity tag"), "{err}");
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let raw = URL_SAFE_NO_PAD.decode(it().encode(&KEY)).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let tok = URL_SAFE_NO_PAD.encode(&bad);
            assert!(
                matches!(
                    ShardIterator::decode(&tok, &KEY, 1_000),
                    Err(IteratorError::Invalid { .. })
                ),
                "byte {i}"
            );
        }
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for bad in ["", "!!!", "AAAA", &"A".repeat(600), "€uro"] {
            assert!(
                matches!(
                    ShardIterator::decode(bad, &KEY, 0),
                    Err(IteratorError::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
        let too_short = URL_SAFE_NO_PAD.encode([1u8; 40]);
        assert!(ShardIterator::decode(&too_short, &KEY, 0).is_err());
    }
}
