//! Trim point: a replica's trim (purge) point never moves back. Once a replica
//! confirmed a trim to index T, its log starts after T for good, restarts included:
//! trimmed records do not come back.

use super::Final;
use crate::oracle::Oracle;

pub fn check(oracle: &Oracle, fin: &Final) -> Vec<String> {
    let mut out = Vec::new();
    for ((shard, node), floor) in &oracle.trim_confirmed {
        if let Some(Some(first)) = fin.first_index.get(&(shard.clone(), *node))
            && *first <= *floor
        {
            out.push(format!(
                "node {node} trimmed {shard} to index {} but its log starts at {} again",
                floor.0, first.0
            ));
        }
    }
    out
}
