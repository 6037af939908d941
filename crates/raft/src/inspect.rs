//! White-box views of a hosted group, for tests and the simulation's checkers (which
//! compare the replicas' logs entry by entry). Read-only: nothing here changes a group.

use std::sync::Arc;

use runnel_log::SegmentLog;

use crate::group::Group;

impl Group {
    /// This replica's segment log, as stored (entries past the commit point included).
    /// For inspection only: writing through it would bypass Raft.
    pub fn segment_log(&self) -> &Arc<SegmentLog> {
        self.storage.log()
    }
}
