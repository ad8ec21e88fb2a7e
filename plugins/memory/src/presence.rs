//! The memory backend's presence: one roster per channel, shared by every node on a
//! [`crate::MemoryBus`] the way Redis keys are shared by every node on one Redis.
//!
//! Members sit in a `BTreeMap` by `conn` (the paging order), their lease ends in a `BTreeSet`
//! by time (so purging finds the ended ones without a scan), and a count per user makes
//! `users` O(1). Time is tokio's clock, so paused-time tests can end leases without waiting.
//! An empty roster is removed, so a channel nobody is in costs nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use switchyard_backend::{Changes, Member, Roster};
use tokio::time::Instant;

#[derive(Default)]
pub(crate) struct Store {
    channels: HashMap<Arc<str>, ChannelRoster>,
}

#[derive(Default)]
struct ChannelRoster {
    /// conn → (user, lease end).
    members: BTreeMap<Arc<str>, (Option<Arc<str>>, Instant)>,
    /// (lease end, conn) of every member.
    leases: BTreeSet<(Instant, Arc<str>)>,
    /// Connections per user, for the users count.
    users: HashMap<Arc<str>, usize>,
}

impl ChannelRoster {
    fn remove(&mut self, conn: &str) -> Option<Member> {
        let (conn, (user, ends)) = self.members.remove_entry(conn)?;
        self.leases.remove(&(ends, conn.clone()));
        if let Some(u) = &user {
            if let Some(n) = self.users.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(u);
                }
            }
        }
        Some(Member { conn, user })
    }

    /// Removes every member whose lease ended by `now`.
    fn purge(&mut self, now: Instant) -> Vec<Member> {
        let mut expired = Vec::new();
        while let Some((ends, conn)) = self.leases.first().cloned() {
            if ends > now {
                break;
            }
            expired.extend(self.remove(&conn));
        }
        expired
    }

    /// Adds or renews `m`; true when it was not present.
    fn put(&mut self, m: &Member, ends: Instant) -> bool {
        match self.members.get_mut(&m.conn) {
            Some((_, old)) => {
                self.leases.remove(&(*old, m.conn.clone()));
                *old = ends;
                self.leases.insert((ends, m.conn.clone()));
                false
            }
            None => {
                self.members.insert(m.conn.clone(), (m.user.clone(), ends));
                self.leases.insert((ends, m.conn.clone()));
                if let Some(u) = &m.user {
                    *self.users.entry(u.clone()).or_default() += 1;
                }
                true
            }
        }
    }
}

impl Store {
    pub(crate) fn update(
        &mut self,
        channel: &str,
        add: &[Member],
        remove: &[Arc<str>],
        ttl: Duration,
    ) -> Changes {
        let now = Instant::now();
        let roster = self.channels.entry(Arc::from(channel)).or_default();
        let mut changes = Changes { expired: roster.purge(now), ..Changes::default() };
        for conn in remove {
            changes.left.extend(roster.remove(conn));
        }
        for m in add {
            if roster.put(m, now + ttl) {
                changes.joined.push(m.clone());
            }
        }
        if roster.members.is_empty() {
            self.channels.remove(channel);
        }
        changes
    }

    pub(crate) fn read(&mut self, channel: &str, after: Option<&str>, limit: usize) -> Roster {
        let Some(roster) = self.channels.get_mut(channel) else { return Roster::default() };
        let expired = roster.purge(Instant::now());
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = roster
            .members
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(conn, (user, _))| Member { conn: conn.clone(), user: user.clone() });
        let members: Vec<Member> = page.by_ref().take(limit).collect();
        let next = match page.next() {
            Some(_) => members.last().map(|m| m.conn.clone()),
            None => None,
        };
        let answer = Roster {
            connections: roster.members.len() as u64,
            users: roster.users.len() as u64,
            members,
            next,
            expired,
        };
        if roster.members.is_empty() {
            self.channels.remove(channel);
        }
        answer
    }
}
