//! Order: per shard, reads return strictly increasing sequence numbers, and within a
//! batch (one log index) the slots run 0, 1, 2, ... with no gap; no reader ever went
//! backwards or saw a record twice.

use super::Final;
use crate::oracle::Oracle;

pub fn check(oracle: &Oracle, fin: &Final) -> Vec<String> {
    let mut out = oracle.order_violations.clone();
    for (shard, records) in &fin.reads {
        for w in records.windows(2) {
            let (a, b) = (w[0].0, w[1].0);
            if b <= a {
                out.push(format!("full read of {shard}: {b} after {a}"));
            } else if b.log_index() == a.log_index() && b.0 != a.0 + 1 {
                out.push(format!(
                    "full read of {shard}: gap in a batch between {a} and {b}"
                ));
            } else if b.log_index() != a.log_index() && b.0 & 0xffff != 0 {
                out.push(format!(
                    "full read of {shard}: batch starts at {b}, not at slot 0"
                ));
            }
        }
    }
    out
}
