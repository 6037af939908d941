//! Retention: an expired record is never served. With a short retention (some seeds
//! run with one, so that the nodes' retention loop trims during the run), the full read
//! after healing returns no record whose retention had certainly run out before the
//! read began: acknowledged at `t`, it arrived on its leader at or before `t`, so it
//! expired by `t + retention`. (That each record stays readable until it expires is
//! `durability`'s part.)

use super::Final;
use crate::oracle::{EXPIRY_SLACK_MS, Oracle, show};

pub fn check(oracle: &Oracle, fin: &Final) -> Vec<String> {
    let Some(retention) = oracle.retention_ms else {
        return Vec::new();
    };
    let acked: std::collections::BTreeMap<_, _> =
        oracle.acked.iter().map(|a| (&a.data, a.acked_ms)).collect();
    let mut out = Vec::new();
    for (shard, records) in &fin.reads {
        let Some((read_start, _)) = fin.read_window_ms.get(shard) else {
            continue;
        };
        for (seq, data) in records {
            let Some(acked_ms) = acked.get(data) else {
                continue;
            };
            if acked_ms + retention + EXPIRY_SLACK_MS < *read_start {
                out.push(format!(
                    "full read of {shard} @ {seq} served {}, acknowledged at {acked_ms} ms, \
                     expired by {} ms, before the read began at {read_start} ms",
                    show(data),
                    acked_ms + retention
                ));
            }
        }
    }
    out
}
