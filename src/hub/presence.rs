//! The hub's part in presence: updates and reads go to the topic's backend. Nothing is kept
//! here; the node's presence keeper (`node::presence`) owns the local members.

use std::sync::Arc;
use std::time::Duration;

use switchyard_backend::{BackendError, Changes, Member, Roster};

use super::Hub;

impl Hub {
    /// Adds or renews `add` and removes `remove` in `channel`'s presence (see
    /// `Backend::presence_update`).
    pub(crate) async fn presence_update(
        &self,
        backend: usize,
        channel: &str,
        add: &[Member],
        remove: &[Arc<str>],
        ttl: Duration,
    ) -> Result<Changes, BackendError> {
        self.backend_of(backend)?.backend.presence_update(channel, add, remove, ttl).await
    }

    /// Counts `channel`'s members and lists up to `limit` after `after`.
    pub(crate) async fn presence_read(
        &self,
        backend: usize,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Roster, BackendError> {
        self.backend_of(backend)?.backend.presence_read(channel, after, limit).await
    }
}
