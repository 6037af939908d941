//! Liveness: once faults stop, every node comes back, writes succeed within a bound of
//! simulated time, and every consumer (and the consumer group) catches up with every
//! acknowledged record. The measurements are taken by the scenario; this file judges.

use super::Final;
use crate::oracle::Oracle;

pub fn check(_oracle: &Oracle, fin: &Final) -> Vec<String> {
    let mut out = fin.liveness.clone();
    out.extend(
        fin.read_failures
            .iter()
            .map(|s| format!("the full read of {s} did not finish")),
    );
    out
}
