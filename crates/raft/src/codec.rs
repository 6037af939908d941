//! Compact binary encodings of openraft values, hand-rolled so that the bytes on disk
//! and on the wire are ours (versioned, checked, decoded without panics) and not
//! whatever a serde format makes of openraft's structs.
//!
//! - An entry's payload ([`encode_payload`]): a version byte, a kind byte (blank,
//!   normal, membership), then the kind's body. The entry's log id `(term, index)` is
//!   not repeated: the segment log stores both next to the payload, and the wire
//!   message carries them as fields.
//! - Node-local values kept in `runnel-nodemeta`: vote, log ids, stored membership,
//!   snapshot meta.
//!
//! Everything decoded here came from a disk or a peer: a short or odd buffer is a
//! [`Error::Corrupt`], never a panic.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;

use crate::error::Error;
use runnel_types::Record;
use runnel_types::record::{batch_encoded_len, encode_batch_into};

use crate::types::{
    Command, EncodedPayload, PeerNode, RaftEntry, RaftLeaderId as LeaderId, RaftLogId,
    RaftMembership, RaftPayload, RaftSnapshotMeta, RaftStoredMembership, RaftVote, log_id,
};

const PAYLOAD_V1: u8 = 1;
const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;
const COMMAND_RECORDS: u8 = 1;
/// Version, kind, command tag, timestamp, record count: what precedes a batch.
const RECORDS_HEADER_LEN: usize = 1 + 1 + 1 + 8 + 4;

/// A shard write of `records`, encoded once: the entry payload (header and batch) is
/// built in one buffer, and the command's batch is a slice of it, so that appending
/// it to the log and sending it to each follower copies nothing more.
pub fn records_command(timestamp_ms: u64, records: &[Record]) -> Command {
    let mut buf = BytesMut::with_capacity(RECORDS_HEADER_LEN + batch_encoded_len(records));
    put_records_header(&mut buf, timestamp_ms, records.len() as u32);
    encode_batch_into(records, &mut buf);
    let payload = buf.freeze();
    Command::Records {
        timestamp_ms,
        records: records.len() as u32,
        batch: payload.slice(RECORDS_HEADER_LEN..),
        encoded: EncodedPayload(Some(payload)),
    }
}

fn put_records_header(buf: &mut BytesMut, timestamp_ms: u64, records: u32) {
    buf.put_u8(PAYLOAD_V1);
    buf.put_u8(KIND_NORMAL);
    buf.put_u8(COMMAND_RECORDS);
    buf.put_u64_le(timestamp_ms);
    buf.put_u32_le(records);
}

/// The payload of an entry, as stored in the segment log and carried on the wire.
pub fn encode_payload(payload: &RaftPayload) -> Bytes {
    let mut buf = BytesMut::new();
    match payload {
        EntryPayload::Blank => {
            buf.put_u8(PAYLOAD_V1);
            buf.put_u8(KIND_BLANK);
        }
        EntryPayload::Normal(Command::Records {
            encoded: EncodedPayload(Some(encoded)),
            ..
        }) => return encoded.clone(),
        EntryPayload::Normal(Command::Records {
            timestamp_ms,
            records,
            batch,
            ..
        }) => {
            buf.reserve(RECORDS_HEADER_LEN + batch.len());
            put_records_header(&mut buf, *timestamp_ms, *records);
            buf.put_slice(batch);
        }
        EntryPayload::Membership(m) => {
            buf.put_u8(PAYLOAD_V1);
            buf.put_u8(KIND_MEMBERSHIP);
            put_membership(&mut buf, m);
        }
    }
    buf.freeze()
}

/// Decodes [`encode_payload`]'s bytes. A record batch shares `bytes`' memory.
pub fn decode_payload(bytes: &Bytes) -> Result<RaftPayload, Error> {
    let mut r = Reader::new(bytes, "entry payload");
    let version = r.u8()?;
    if version != PAYLOAD_V1 {
        return Err(r.corrupt(format!("unknown payload version {version}")));
    }
    let payload = match r.u8()? {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => match r.u8()? {
            COMMAND_RECORDS => {
                let timestamp_ms = r.u64()?;
                let records = r.u32()?;
                EntryPayload::Normal(Command::Records {
                    timestamp_ms,
                    records,
                    batch: r.rest(),
                    encoded: EncodedPayload(Some(bytes.clone())),
                })
            }
            other => return Err(r.corrupt(format!("unknown command tag {other}"))),
        },
        KIND_MEMBERSHIP => EntryPayload::Membership(r.membership()?),
        other => return Err(r.corrupt(format!("unknown entry kind {other}"))),
    };
    r.finish()?;
    Ok(payload)
}

/// The arrival timestamp a command carries, if any (blank and membership entries have
/// none).
pub fn payload_timestamp(payload: &RaftPayload) -> Option<u64> {
    match payload {
        EntryPayload::Normal(Command::Records { timestamp_ms, .. }) => Some(*timestamp_ms),
        _ => None,
    }
}

/// An openraft entry from its parts.
pub fn entry(term: u64, index: u64, payload: RaftPayload) -> RaftEntry {
    openraft::Entry {
        log_id: log_id(term, index),
        payload,
    }
}

pub fn encode_vote(vote: &RaftVote) -> Vec<u8> {
    let mut buf = Vec::with_capacity(17);
    buf.put_u64_le(vote.leader_id.term);
    buf.put_u64_le(vote.leader_id.voted_for);
    buf.put_u8(u8::from(vote.committed));
    buf
}

pub fn decode_vote(bytes: &[u8]) -> Result<RaftVote, Error> {
    let bytes = Bytes::copy_from_slice(bytes);
    let mut r = Reader::new(&bytes, "vote");
    let term = r.u64()?;
    let node = r.u64()?;
    let committed = r.bool()?;
    r.finish()?;
    Ok(openraft::impls::Vote {
        leader_id: LeaderId::new(term, node),
        committed,
    })
}

pub fn encode_log_id(id: Option<&RaftLogId>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(17);
    put_log_id(&mut buf, id);
    buf
}

pub fn decode_log_id(bytes: &[u8]) -> Result<Option<RaftLogId>, Error> {
    let bytes = Bytes::copy_from_slice(bytes);
    let mut r = Reader::new(&bytes, "log id");
    let id = r.log_id()?;
    r.finish()?;
    Ok(id)
}

pub fn encode_stored_membership(m: &RaftStoredMembership) -> Vec<u8> {
    let mut buf = BytesMut::new();
    put_log_id(&mut buf, m.log_id().as_ref());
    put_membership(&mut buf, m.membership());
    buf.to_vec()
}

pub fn decode_stored_membership(bytes: &[u8]) -> Result<RaftStoredMembership, Error> {
    let bytes = Bytes::copy_from_slice(bytes);
    let mut r = Reader::new(&bytes, "stored membership");
    let m = r.stored_membership()?;
    r.finish()?;
    Ok(m)
}

pub fn encode_snapshot_meta(meta: &RaftSnapshotMeta) -> Vec<u8> {
    let mut buf = BytesMut::new();
    put_log_id(&mut buf, meta.last_log_id.as_ref());
    put_log_id(&mut buf, meta.last_membership.log_id().as_ref());
    put_membership(&mut buf, meta.last_membership.membership());
    buf.to_vec()
}

pub fn decode_snapshot_meta(bytes: &[u8]) -> Result<RaftSnapshotMeta, Error> {
    let bytes = Bytes::copy_from_slice(bytes);
    let mut r = Reader::new(&bytes, "snapshot meta");
    let last_log_id = r.log_id()?;
    let last_membership = r.stored_membership()?;
    r.finish()?;
    Ok(RaftSnapshotMeta {
        last_log_id,
        last_membership,
    })
}

fn put_log_id(buf: &mut impl BufMut, id: Option<&RaftLogId>) {
    match id {
        None => buf.put_u8(0),
        Some(id) => {
            buf.put_u8(1);
            buf.put_u64_le(id.leader_id.term);
            buf.put_u64_le(id.index);
        }
    }
}

fn put_membership(buf: &mut BytesMut, m: &RaftMembership) {
    let configs = m.get_joint_config();
    buf.put_u32_le(configs.len() as u32);
    for config in configs {
        buf.put_u32_le(config.len() as u32);
        for id in config {
            buf.put_u64_le(*id);
        }
    }
    let nodes: Vec<_> = m.nodes().collect();
    buf.put_u32_le(nodes.len() as u32);
    for (id, node) in nodes {
        buf.put_u64_le(*id);
        buf.put_u32_le(node.addr.len() as u32);
        buf.put_slice(node.addr.as_bytes());
    }
}

/// A bounds-checked cursor: every read says what it needed when the buffer is short.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes, what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            what: self.what,
            detail,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(self.corrupt(format!(
                "needs {n} bytes at offset {}, {} remain",
                self.pos,
                self.buf.len() - self.pos
            )));
        };
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, Error> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.corrupt(format!("flag byte {b} is neither 0 nor 1"))),
        }
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count of items that take at least `min_item_bytes` each: never trusted for an
    /// allocation beyond what the buffer could hold.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, Error> {
        let n = self.u32()? as usize;
        let remaining = self.buf.len() - self.pos;
        if n.saturating_mul(min_item_bytes) > remaining {
            return Err(self.corrupt(format!(
                "count {n} cannot fit in the {remaining} bytes left"
            )));
        }
        Ok(n)
    }

    fn rest(&mut self) -> Bytes {
        let rest = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        rest
    }

    fn finish(&self) -> Result<(), Error> {
        if self.pos != self.buf.len() {
            return Err(self.corrupt(format!("{} trailing bytes", self.buf.len() - self.pos)));
        }
        Ok(())
    }

    fn log_id(&mut self) -> Result<Option<RaftLogId>, Error> {
        if !self.bool()? {
            return Ok(None);
        }
        let term = self.u64()?;
        let index = self.u64()?;
        Ok(Some(log_id(term, index)))
    }

    fn membership(&mut self) -> Result<RaftMembership, Error> {
        let n_configs = self.count(4)?;
        let mut configs = Vec::with_capacity(n_configs);
        for _ in 0..n_configs {
            let n = self.count(8)?;
            let mut voters = BTreeSet::new();
            for _ in 0..n {
                voters.insert(self.u64()?);
            }
            configs.push(voters);
        }
        let n_nodes = self.count(12)?;
        let mut nodes = BTreeMap::new();
        for _ in 0..n_nodes {
            let id = self.u64()?;
            let len = self.u32()? as usize;
            let addr = std::str::from_utf8(self.take(len)?)
                .map_err(|_| self.corrupt(format!("address of node {id} is not UTF-8")))?
                .to_string();
            nodes.insert(id, PeerNode { addr });
        }
        openraft::Membership::new(configs, nodes)
            .map_err(|e| self.corrupt(format!("invalid membership: {e}")))
    }

    fn stored_membership(&mut self) -> Result<RaftStoredMembership, Error> {
        let id = self.log_id()?;
        let m = self.membership()?;
        Ok(RaftStoredMembership::new(id, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> RaftMembership {
        let nodes: BTreeMap<u64, PeerNode> = [
            (1, PeerNode::new("a:1")),
            (2, PeerNode::new("b:2")),
            (3, PeerNode::new("c:3")),
        ]
        .into();
        openraft::Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3])], nodes)
            .expect("valid membership")
    }

    #[test]
    fn a_records_command_is_encoded_once_and_shared() {
        let records = vec![
            Record::new("a", vec![1u8; 100]),
            Record::new("b", Bytes::new()),
        ];
        let cmd = records_command(42, &records);
        let Command::Records {
            timestamp_ms,
            records: n,
            batch,
            encoded,
        } = &cmd;
        assert_eq!((*timestamp_ms, *n), (42, 2));
        assert_eq!(batch, &runnel_types::record::encode_batch(&records));
        let payload = EntryPayload::Normal(cmd.clone());
        let bytes = encode_payload(&payload);
        // The cached payload is the one handed out, not a copy...
        assert_eq!(Some(bytes.as_ptr()), encoded.0.as_ref().map(|b| b.as_ptr()));
        // ...and it is exactly what encoding the command afresh gives.
        let fresh = EntryPayload::Normal(Command::Records {
            timestamp_ms: 42,
            records: 2,
            batch: batch.clone(),
            encoded: EncodedPayload::default(),
        });
        assert_eq!(encode_payload(&fresh), bytes);
        // Decoding keeps the payload for the next hop (the log, or a new leader).
        let decoded = decode_payload(&bytes).expect("decodes");
        assert_eq!(decoded, payload);
        assert_eq!(encode_payload(&decoded).as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn payloads_round_trip() {
        let payloads = [
            EntryPayload::Blank,
            EntryPayload::Normal(Command::Records {
                timestamp_ms: 7,
                records: 2,
                batch: Bytes::from_static(b"xy"),
                encoded: EncodedPayload::default(),
            }),
            EntryPayload::Membership(membership()),
        ];
        for p in payloads {
            let bytes = encode_payload(&p);
            assert_eq!(decode_payload(&bytes).expect("decodes"), p);
            for cut in 0..bytes.len() {
                if matches!(p, EntryPayload::Normal(_)) && cut >= 15 {
                    continue; // a shorter batch is still a well-formed payload
                }
                assert!(
                    decode_payload(&bytes.slice(..cut)).is_err(),
                    "cut at {cut} of {p:?}"
                );
            }
        }
    }

    #[test]
    fn meta_values_round_trip() {
        let vote = openraft::impls::Vote {
            leader_id: LeaderId::new(5, 2),
            committed: true,
        };
        assert_eq!(decode_vote(&encode_vote(&vote)).expect("vote"), vote);
        let id = log_id(3, 9);
        assert_eq!(
            decode_log_id(&encode_log_id(Some(&id))).expect("id"),
            Some(id)
        );
        assert_eq!(decode_log_id(&encode_log_id(None)).expect("none"), None);
        let sm = RaftStoredMembership::new(Some(id), membership());
        assert_eq!(
            decode_stored_membership(&encode_stored_membership(&sm)).expect("sm"),
            sm
        );
        let meta = RaftSnapshotMeta {
            last_log_id: Some(log_id(4, 10)),
            last_membership: sm,
        };
        assert_eq!(
            decode_snapshot_meta(&encode_snapshot_meta(&meta)).expect("meta"),
            meta
        );
        assert!(decode_vote(&[1, 2, 3]).is_err());
    }
}
