//! Presence: who is subscribed to a channel right now, on every node, with counts that cost
//! O(1) however big the channel is.
//!
//! A channel's presence is a set of **members**, one per connection (`conn`, the connection id
//! clients see) with the connection's verified `user`, if any. Every member holds a **lease**:
//! the node that added it renews it (re-adding the member) well before it ends, so a member
//! whose node died vanishes when its lease ends, with no node left to remove it.
//!
//! Contract (checked by `conformance::presence`):
//! - `presence_update` adds (or renews) members, each with a lease ending `ttl` from now on the
//!   backend's clock, and removes members by `conn`. It reports which added members were not
//!   present before (`joined`) and which removed ones were (`left`).
//! - Every call first purges members whose lease has ended and reports each of them in
//!   `expired` exactly once, whichever node's call purged it.
//! - `presence_read` answers `connections` (members) and `users` (distinct users among them,
//!   anonymous members not counted) exactly, without looking at every member; and, when
//!   `limit > 0`, up to `limit` members in ascending byte order of `conn`, those after `after`.
//!   `next` names the last member returned while more follow. A member present for the whole
//!   walk is returned exactly once, whatever joins and leaves meanwhile.
//! - A channel's presence is independent of its history and of its subscriptions.

use std::sync::Arc;

/// One connection present in a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// The connection id (`<node>:<16 hex digits>`).
    pub conn: Arc<str>,
    /// The connection's verified identity; `None` for anonymous connections.
    pub user: Option<Arc<str>>,
}

impl Member {
    pub fn new(conn: &str, user: Option<&str>) -> Member {
        Member { conn: Arc::from(conn), user: user.map(Arc::from) }
    }
}

/// What one `presence_update` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Added members that were not present.
    pub joined: Vec<Member>,
    /// Removed members that were present.
    pub left: Vec<Member>,
    /// Members whose lease had ended, purged by this call.
    pub expired: Vec<Member>,
}

/// One read of a channel's presence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// Members present.
    pub connections: u64,
    /// Distinct users among them (anonymous members are not counted).
    pub users: u64,
    /// Up to `limit` members after `after`, ascending by `conn`.
    pub members: Vec<Member>,
    /// The `conn` to read after for the next page; `None` on the last page.
    pub next: Option<Arc<str>>,
    /// Members whose lease had ended, purged by this read.
    pub expired: Vec<Member>,
}
