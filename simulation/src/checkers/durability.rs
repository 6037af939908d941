//! Durability: every acknowledged record is readable at its sequence number with
//! identical bytes (unless a trim the harness asked for may have removed it, which is
//! what retention expiry does).

use super::{Final, by_seq};
use crate::oracle::{Oracle, show};

pub fn check(oracle: &Oracle, fin: &Final) -> Vec<String> {
    let mut out = Vec::new();
    let mut shards = std::collections::BTreeMap::new();
    for a in &oracle.acked {
        if oracle.maybe_trimmed(&a.shard, a.seq) {
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
                "acknowledged record {} at {} @ {} is gone",
                show(&a.data),
                a.shard,
                a.seq
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
