//! Placement: after healing, every shard has its full replica set on distinct live
//! nodes and a leader (as `ClusterStatus` and `ListShards` report it).

use super::Final;
use crate::oracle::Oracle;

pub fn check(_oracle: &Oracle, fin: &Final) -> Vec<String> {
    fin.placement.clone()
}
