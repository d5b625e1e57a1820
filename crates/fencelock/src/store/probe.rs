//! What one Redis node tells the start-up checks (`checks.rs`): the answer of
//! [`super::Store::probe`], kept here so that the stores need nothing from above.

use std::time::Duration;

/// What one Redis node told the checks. Unanswered questions are `None`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    pub(crate) version: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) run_id: Option<String>,
    pub(crate) maxmemory_policy: Option<String>,
    pub(crate) aof: Option<bool>,
    /// `CONFIG GET save`: "" means RDB snapshots are off.
    pub(crate) rdb_save: Option<String>,
    pub(crate) cluster: Option<bool>,
    /// The node's clock minus ours, in milliseconds.
    pub(crate) clock_offset: Option<i64>,
    pub(crate) round_trip: Duration,
    pub(crate) user: Option<String>,
    /// Commands the user may not run (`ACL DRYRUN`); `None` when that cannot be asked.
    pub(crate) missing: Option<Vec<String>>,
    pub(crate) notes: Vec<String>,
}
