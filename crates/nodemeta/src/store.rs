//! The storage trait: an ordered map of bytes to bytes, written in atomic batches.

use crate::batch::WriteBatch;
use crate::error::MetaStoreError;

/// One entry of a scan: key, value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An ordered byte map with atomic write batches and explicit durability.
///
/// Contract, checked by the conformance suite in `tests/conformance.rs` against every
/// implementation:
/// - [`apply`](MetaStore::apply) is atomic: after any crash, a batch is either wholly
///   present or wholly absent. Its operations take effect in order.
/// - A batch is visible to [`get`](MetaStore::get) and
///   [`scan_prefix`](MetaStore::scan_prefix) as soon as `apply` returns, but may be
///   lost in a crash until a later [`flush`](MetaStore::flush) returns.
/// - Batches that survive a crash are a prefix of the applied ones: a store never keeps
///   a later batch while losing an earlier one.
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// The value under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaStoreError>;

    /// Applies every operation of `batch`, in order, atomically: all or nothing, even
    /// across a crash. Not durable until [`flush`](MetaStore::flush).
    fn apply(&self, batch: WriteBatch) -> Result<(), MetaStoreError>;

    /// Every entry whose key starts with `prefix`, sorted by key.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, MetaStoreError>;

    /// When this returns `Ok`, every batch applied before the call is durable
    /// (written and fsynced).
    fn flush(&self) -> Result<(), MetaStoreError>;
}
