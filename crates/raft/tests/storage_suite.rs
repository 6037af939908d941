//! openraft's storage conformance suite against our log store and state machine, on
//! the simulated disk and the in-memory metadata store (the adapters are the same code
//! in both modes; the real disk is covered by the cluster tests).
#![cfg(not(madsim))]

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use runnel_log::{LogConfig, SegmentLog, SimDisk};
use runnel_nodemeta::{MemStore, NodeMeta};
use runnel_raft::TypeConfig;
use runnel_raft::log_store::{GroupStorage, LogStore};
use runnel_raft::state_machine::ShardStateMachine;
use runnel_types::GroupId;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, ShardStateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, ShardStateMachine), StorageError<TypeConfig>> {
        let disk = SimDisk::new();
        let log = SegmentLog::open(disk.handle(), "/g/1", LogConfig::default()).expect("open log");
        let meta = Arc::new(NodeMeta::new(Arc::new(MemStore::new())));
        let storage =
            Arc::new(GroupStorage::open(GroupId(1), Arc::new(log), meta).expect("open storage"));
        let sm = ShardStateMachine::open(storage.clone()).expect("open state machine");
        Ok(((), LogStore::new(storage), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}
