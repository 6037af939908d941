//! Durability: every acknowledged record is readable at its sequence number with
//! identical bytes until its retention expires (unless a trim the harness asked for may
//! have removed it). A record may be missing from the full read only if it may have
//! expired by the end of that read (see [`Oracle::may_have_expired`]).

use super::{Final, by_seq, read_end_ms};
use crate::oracle::{Oracle, show};

pub fn check(oracle: &Oracle, fin: &Final) -> Vec<String> {
    let mut out = Vec::new();
    let mut shards = std::collections::BTreeMap::new();
    for a in &oracle.acked {
        if oracle.maybe_trimmed(&a.shard, a.seq)
            || oracle.may_have_expired(&a.data, read_end_ms(fin, &a.shard))
        {
            continue;
        }
        if fin.read_failures.iter().any(|s| s == &a.shard) {
            continue; // reported by liveness: the read itself failed
        }
        let read = shards
            .entry(a.shard.clone())
            .or_insert_with(|| by_seq(fin, &a.shard));
        match read.get(&a.seq) {
            None => out.push(format!(
                "acknowledged record {} at {} @ {} is gone{}",
                show(&a.data),
                a.shard,
                a.seq,
                unexpired(oracle, a, fin)
            )),
            Some(d) if *d != a.data => out.push(format!(
                "acknowledged record {} at {} @ {} now reads as {}",
                show(&a.data),
                a.shard,
                a.seq,
                show(d)
            )),
            Some(_) => {}
        }
    }
    out
}

/// For a short retention: why the record could not have expired yet.
fn unexpired(oracle: &Oracle, a: &crate::oracle::Acked, fin: &Final) -> String {
    match (oracle.retention_ms, oracle.sent.get(&a.data)) {
        (Some(r), Some(sent)) => format!(
            " (sent at {sent} ms, retention {r} ms: not expired when the read ended at {} ms)",
            read_end_ms(fin, &a.shard)
        ),
        _ => String::new(),
    }
}
