//! Records and record batches. A batch is the payload of one Raft entry: the records
//! that group commit gathered from concurrent producers, in slot order. Its encoding is
//! compact, versioned and decoded without panics, since it comes back from disk and
//! from peers.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::TypesError;
use crate::hash::HashKey;
use crate::limits::{
    BATCH_RECORDS_MAX, PARTITION_KEY_BYTES_MAX, PARTITION_KEY_LEN_MIN, RECORD_DATA_BYTES_MAX,
};

/// One record as a producer sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition_key: String,
    pub explicit_hash_key: Option<HashKey>,
    pub data: Bytes,
}

impl Record {
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Record {
        Record {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// The key that routes this record to its shard.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::of_partition_key(&self.partition_key))
    }

    /// Checks the limits a record must meet, naming the field and the limit.
    pub fn validate(&self) -> Result<(), TypesError> {
        let pk = self.partition_key.len();
        if pk < PARTITION_KEY_LEN_MIN {
            return Err(TypesError::InvalidRecord {
                field: "partition_key",
                problem: "is empty".into(),
            });
        }
        if pk > PARTITION_KEY_BYTES_MAX {
            return Err(TypesError::InvalidRecord {
                field: "partition_key",
                problem: format!("is {pk} bytes; the limit is {PARTITION_KEY_BYTES_MAX}"),
            });
        }
        if self.data.len() > RECORD_DATA_BYTES_MAX {
            return Err(TypesError::InvalidRecord {
                field: "data",
                problem: format!(
                    "is {} bytes; the limit is {RECORD_DATA_BYTES_MAX}",
                    self.data.len()
                ),
            });
        }
        Ok(())
    }

    /// Bytes this record takes in an encoded batch.
    pub fn encoded_len(&self) -> usize {
        2 + self.partition_key.len()
            + 1
            + if self.explicit_hash_key.is_some() {
                16
            } else {
                0
            }
            + 4
            + self.data.len()
    }
}

/// Encoding version of a record batch; a decoder refuses any other.
const BATCH_FORMAT_V1: u8 = 1;
const BATCH_HEADER_LEN: usize = 1 + 4;

/// Encodes records into one batch payload.
pub fn encode_batch(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::with_capacity(batch_encoded_len(records));
    encode_batch_into(records, &mut buf);
    buf.freeze()
}

/// The length of [`encode_batch`]'s output for `records`.
pub fn batch_encoded_len(records: &[Record]) -> usize {
    BATCH_HEADER_LEN + records.iter().map(Record::encoded_len).sum::<usize>()
}

/// [`encode_batch`] appending to `buf`, so that a caller can put its own header in
/// front of the batch without copying it again.
pub fn encode_batch_into(records: &[Record], buf: &mut BytesMut) {
    buf.reserve(batch_encoded_len(records));
    buf.put_u8(BATCH_FORMAT_V1);
    buf.put_u32_le(records.len() as u32);
    for r in records {
        buf.put_u16_le(r.partition_key.len() as u16);
        buf.put_slice(r.partition_key.as_bytes());
        match r.explicit_hash_key {
            Some(k) => {
                buf.put_u8(1);
                buf.put_u128(k.0);
            }
            None => buf.put_u8(0),
        }
        buf.put_u32_le(r.data.len() as u32);
        buf.put_slice(&r.data);
    }
}

/// Decodes a batch payload. Record data shares the payload's memory (no copy).
pub fn decode_batch(payload: &Bytes) -> Result<Vec<Record>, TypesError> {
    let corrupt = |what: String| TypesError::CorruptBatch(what);
    let mut buf = payload.clone();
    if buf.remaining() < BATCH_HEADER_LEN {
        return Err(corrupt(format!(
            "{} bytes is shorter than the batch header",
            buf.remaining()
        )));
    }
    let version = buf.get_u8();
    if version != BATCH_FORMAT_V1 {
        return Err(corrupt(format!("unknown batch format version {version}")));
    }
    let count = buf.get_u32_le() as usize;
    if count > BATCH_RECORDS_MAX {
        return Err(corrupt(format!(
            "{count} records exceeds the limit of {BATCH_RECORDS_MAX}"
        )));
    }
    // Each record takes at least 7 bytes: never trust `count` for an allocation.
    let mut out = Vec::with_capacity(count.min(buf.remaining() / 7));
    for i in 0..count {
        let need = |buf: &Bytes, n: usize, what: &str| {
            if buf.remaining() < n {
                Err(corrupt(format!(
                    "record {i}: {what} needs {n} bytes, {} remain",
                    buf.remaining()
                )))
            } else {
                Ok(())
            }
        };
        need(&buf, 2, "partition key length")?;
        let pk_len = buf.get_u16_le() as usize;
        need(&buf, pk_len, "partition key")?;
        let pk = String::from_utf8(buf.split_to(pk_len).to_vec())
            .map_err(|_| corrupt(format!("record {i}: partition key is not UTF-8")))?;
        need(&buf, 1, "hash key flag")?;
        let explicit_hash_key = match buf.get_u8() {
            0 => None,
            1 => {
                need(&buf, 16, "explicit hash key")?;
                Some(HashKey(buf.get_u128()))
            }
            f => {
                return Err(corrupt(format!(
                    "record {i}: hash key flag {f} is neither 0 nor 1"
                )));
            }
        };
        need(&buf, 4, "data length")?;
        let data_len = buf.get_u32_le() as usize;
        need(&buf, data_len, "data")?;
        let data = buf.split_to(data_len);
        out.push(Record {
            partition_key: pk,
            explicit_hash_key,
            data,
        });
    }
    if buf.has_remaining() {
        return Err(corrupt(format!(
            "{} bytes left over after {count} records",
            buf.remaining()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        (
            "[a-z]{1,20}",
            proptest::option::of(any::<u128>()),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(pk, ehk, data)| Record {
                partition_key: pk,
                explicit_hash_key: ehk.map(HashKey),
                data: Bytes::from(data),
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip(records in proptest::collection::vec(record(), 0..20)) {
            let enc = encode_batch(&records);
            prop_assert_eq!(enc.len(), BATCH_HEADER_LEN + records.iter().map(Record::encoded_len).sum::<usize>());
            prop_assert_eq!(decode_batch(&enc).unwrap(), records);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&Bytes::from(bytes));
        }

        #[test]
        fn every_truncation_is_an_error(records in proptest::collection::vec(record(), 1..5), cut: usize) {
            let enc = encode_batch(&records);
            let cut = cut % enc.len();
            prop_assert!(decode_batch(&enc.slice(..cut)).is_err());
        }
    }

    #[test]
    fn validation_names_field_and_limit() {
        let mut r = Record::new("", Bytes::new());
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("partition_key is empty")
        );
        r.partition_key = "k".repeat(257);
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("limit is 256")
        );
        r.partition_key = "k".into();
        r.data = Bytes::from(vec![0u8; RECORD_DATA_BYTES_MAX + 1]);
        assert!(r.validate().unwrap_err().to_string().contains("data is"));
        r.data = Bytes::from(vec![0u8; RECORD_DATA_BYTES_MAX]);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn hash_key_prefers_the_explicit_one() {
        let mut r = Record::new("user-1", Bytes::from_static(b"x"));
        assert_eq!(r.hash_key(), HashKey::of_partition_key("user-1"));
        r.explicit_hash_key = Some(HashKey(42));
        assert_eq!(r.hash_key(), HashKey(42));
    }
}
