//! The placement service glue: this node's applied copy of the meta state, and the way
//! to change it.
//!
//! (Contract stub: the applier, proposals and forwarding land in the next commits.)

use std::sync::RwLock;
use std::time::Duration;

use runnel_meta::{Command, CommandResult, MetaState};
use runnel_types::NodeId;

use crate::error::{RETRY_AFTER_MS_NO_LEADER, ServerError};
use crate::iterator::IteratorKey;

/// This node's view of the placement service.
pub struct Placement {
    state: RwLock<MetaState>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            state: RwLock::new(MetaState::default()),
        }
    }
}

impl Placement {
    /// Runs `f` on this node's applied copy of the meta state.
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&state)
    }

    /// Proposes `cmd` to the meta group (through its leader) and returns the state
    /// machine's answer once the command is applied on this node.
    pub async fn propose(&self, _cmd: Command) -> Result<CommandResult, ServerError> {
        Err(ServerError::Unavailable {
            what: "the placement service".into(),
            reason: "not started".into(),
            retry_after_ms: RETRY_AFTER_MS_NO_LEADER,
        })
    }

    /// The meta group's leader as this node knows it.
    pub fn meta_leader(&self) -> Option<(NodeId, String)> {
        None
    }

    /// The cluster's shared key for shard iterator tags.
    pub fn iterator_key(&self) -> IteratorKey {
        IteratorKey([0; 16])
    }

    pub fn cluster_id(&self) -> String {
        String::new()
    }

    /// Waits until `pred` holds on the applied state, or `timeout` passes; says which.
    pub async fn wait_until(&self, pred: impl Fn(&MetaState) -> bool, _timeout: Duration) -> bool {
        self.read(pred)
    }
}
