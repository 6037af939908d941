//! [`WriteBatch`]: the unit of atomicity of a [`MetaStore`](crate::MetaStore).

use crate::error::MetaStoreError;
use crate::limits::{BATCH_OPS_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// One operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Deletes every key that starts with `prefix` at this point of the batch.
    DeletePrefix {
        prefix: Vec<u8>,
    },
}

/// Operations applied in order, atomically. A later operation on a key wins over an
/// earlier one; a `delete_prefix` removes what earlier operations of the same batch put
/// under the prefix, and later puts under it stay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete { key: key.into() });
        self
    }

    pub fn delete_prefix(&mut self, prefix: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Refuses a batch that breaches a limit of [`crate::limits`]. Every store calls
    /// this before applying anything, so a refused batch changes nothing.
    pub fn check_limits(&self) -> Result<(), MetaStoreError> {
        if self.ops.len() > BATCH_OPS_MAX {
            return Err(MetaStoreError::BatchTooLarge {
                ops: self.ops.len(),
                max: BATCH_OPS_MAX,
            });
        }
        for op in &self.ops {
            let (key, value) = match op {
                BatchOp::Put { key, value } => (key, Some(value)),
                BatchOp::Delete { key } => (key, None),
                BatchOp::DeletePrefix { prefix } => (prefix, None),
            };
            if key.len() > KEY_BYTES_MAX {
                return Err(MetaStoreError::TooLarge {
                    what: "key",
                    key: key_text(key),
                    len: key.len(),
                    max: KEY_BYTES_MAX,
                });
            }
            if let Some(value) = value.filter(|v| v.len() > VALUE_BYTES_MAX) {
                return Err(MetaStoreError::TooLarge {
                    what: "value",
                    key: key_text(key),
                    len: value.len(),
                    max: VALUE_BYTES_MAX,
                });
            }
        }
        Ok(())
    }
}

/// A key as text for messages: lossy UTF-8, cut to a readable length.
pub(crate) fn key_text(key: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 80;
    let shown = &key[..key.len().min(SHOWN_BYTES_MAX)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if key.len() > SHOWN_BYTES_MAX {
        text.push('…');
    }
    text
}
