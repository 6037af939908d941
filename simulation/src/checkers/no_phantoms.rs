//! No phantoms: nothing read was never produced, and nothing read during the run was
//! uncommitted: every record a consumer read is, after healing, still at the same
//! sequence number with the same bytes (unless a trim may have removed it, or it may
//! have expired by the end of the full read).

use super::{Final, by_seq, read_end_ms};
use crate::oracle::{Oracle, show};

pub fn check(oracle: &Oracle, fin: &Final) -> Vec<String> {
    let mut out = Vec::new();
    for (shard, records) in &fin.reads {
        for (seq, data) in records {
            if !oracle.sent.contains_key(data) {
                out.push(format!(
                    "full read of {shard} @ {seq} holds {} that nobody sent",
                    show(data)
                ));
            }
        }
    }
    out.extend(oracle.observed_conflicts.iter().cloned());
    let mut shards = std::collections::BTreeMap::new();
    for ((shard, seq), data) in &oracle.observed {
        if !oracle.sent.contains_key(data) {
            out.push(format!(
                "a consumer read {} at {shard} @ {seq} that nobody sent",
                show(data)
            ));
            continue;
        }
        if oracle.maybe_trimmed(shard, *seq)
            || oracle.may_have_expired(data, read_end_ms(fin, shard))
            || fin.read_failures.iter().any(|s| s == shard)
        {
            continue;
        }
        let read = shards
            .entry(shard.clone())
            .or_insert_with(|| by_seq(fin, shard));
        match read.get(seq) {
            Some(d) if d == data => {}
            Some(d) => out.push(format!(
                "a consumer read {} at {shard} @ {seq}, which now holds {}: it read an uncommitted record",
                show(data),
                show(d)
            )),
            None => out.push(format!(
                "a consumer read {} at {shard} @ {seq}, which the full read does not have: it read an uncommitted record",
                show(data)
            )),
        }
    }
    out
}
