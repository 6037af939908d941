//! The invariants, one per file, each named after what it protects. A checker reads
//! the [`Oracle`] (what the clients saw) and the [`Final`] state (what a full read
//! after healing returned, and what the liveness phase measured) and returns its
//! violations, each a sentence that names the shard, sequence number and bytes.

pub mod convergence;
pub mod durability;
pub mod liveness;
pub mod no_phantoms;
pub mod order;
pub mod placement;
pub mod retention;
pub mod trim_point;

use std::collections::BTreeMap;

use bytes::Bytes;
use runnel_types::{LogIndex, SeqNo};

use crate::oracle::Oracle;

/// What the harness found after healing.
#[derive(Default)]
pub struct Final {
    /// Per shard, every record a full read from the oldest one returned, in order.
    pub reads: BTreeMap<String, Vec<(SeqNo, Bytes)>>,
    /// Per shard, when its full read began and ended (ms since the epoch, simulated).
    pub read_window_ms: BTreeMap<String, (u64, u64)>,
    /// Shards the full read could not finish.
    pub read_failures: Vec<String>,
    /// What the liveness phase saw go wrong (writes, catch-up, restarts).
    pub liveness: Vec<String>,
    /// What the placement wait saw go wrong.
    pub placement: Vec<String>,
    /// Per (shard, node), the first index of the replica's log after healing.
    pub first_index: BTreeMap<(String, u64), Option<LogIndex>>,
    /// What the convergence measurement found (replicas short of the commit point or
    /// holding other entries).
    pub convergence: Vec<String>,
}

/// Runs every checker; the violations, by checker.
pub fn check_all(oracle: &Oracle, fin: &Final) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("durability", durability::check(oracle, fin)),
        ("order", order::check(oracle, fin)),
        ("no_phantoms", no_phantoms::check(oracle, fin)),
        ("liveness", liveness::check(oracle, fin)),
        ("placement", placement::check(oracle, fin)),
        ("retention", retention::check(oracle, fin)),
        ("trim_point", trim_point::check(oracle, fin)),
        ("convergence", convergence::check(oracle, fin)),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect()
}

/// When the full read of `shard` ended (ms since the epoch; 0 if it never ran): a
/// record that had not expired by then must have been in it.
pub fn read_end_ms(fin: &Final, shard: &str) -> u64 {
    fin.read_window_ms.get(shard).map_or(0, |w| w.1)
}

/// The records of one shard's full read, by sequence number.
pub fn by_seq(fin: &Final, shard: &str) -> BTreeMap<SeqNo, Bytes> {
    fin.reads
        .get(shard)
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default()
}
