//! How a connection knows whether *Redis* is healthy, shared lock-free with `ready()`.
//!
//! The question is "has Redis been silent while we waited for it?", not "is our end busy": a
//! clock starts when a request goes out with none outstanding, restarts whenever Redis says
//! anything while more replies are owed, and stops when nothing is owed or while our end is the
//! one not reading (a subscriber blocked handing messages to a slow hub). `ready()` reads the
//! clock without waking the connection's task, so it flips even while that task waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Health of one connection. Written by its task (and, for publishers, by publishing tasks);
/// read by `ready()`.
#[derive(Debug)]
pub(crate) struct Health {
    base: Instant,
    connected: AtomicBool,
    /// Subscriber connections: every channel of the last (re)connect is confirmed again.
    settled: AtomicBool,
    /// Milliseconds since `base`, plus one, since when we have been waiting on Redis without
    /// hearing from it; 0 when nothing is outstanding (or the clock is paused).
    waiting: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            base: Instant::now(),
            connected: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            waiting: AtomicU64::new(0),
        }
    }
}

impl Health {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX / 2) + 1
    }

    /// A new connection is up, or the connection went down; either way nothing is owed.
    pub(crate) fn set_connected(&self, up: bool) {
        self.waiting.store(0, Ordering::Relaxed);
        self.connected.store(up, Ordering::Relaxed);
        if !up {
            self.settled.store(false, Ordering::Relaxed);
        }
    }

    /// A subscriber connection's whole channel set is confirmed by Redis again.
    pub(crate) fn set_settled(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    /// Connected with every channel it had re-subscribed: what is published now reaches
    /// this node.
    pub(crate) fn is_settled(&self) -> bool {
        self.is_connected() && self.settled.load(Ordering::Relaxed)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A request went out: start the clock unless it already runs.
    pub(crate) fn sent(&self) {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            // A race with another writer only moves the start by the time between the two
            // loads, never past a real reply.
            self.waiting.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Redis said something. With `more` replies still owed the clock restarts now; without,
    /// it stops. Any frame counts: Redis answers in order, so data before a PONG is life too.
    pub(crate) fn heard(&self, more: bool) {
        let at = if more { self.now() } else { 0 };
        self.waiting.store(at, Ordering::Relaxed);
    }

    /// Our end stops reading for a while (blocked on the hub): that time is not Redis's fault.
    pub(crate) fn pause(&self) {
        self.waiting.store(0, Ordering::Relaxed);
    }

    /// How long Redis has owed us an answer.
    pub(crate) fn stalled(&self) -> Duration {
        match self.waiting.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.now().saturating_sub(since)),
        }
    }

    /// Connected, and not owing an answer for longer than `limit`.
    pub(crate) fn is_up(&self, limit: Duration) -> bool {
        self.is_connected() && self.stalled() <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_runs_only_while_an_answer_is_owed() {
        let h = Health::default();
        h.set_connected(true);
        assert_eq!(h.stalled(), Duration::ZERO);
        h.sent();
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.stalled() >= Duration::from_millis(20));
        assert!(!h.is_up(Duration::from_millis(10)));
        h.heard(true);
        assert!(h.stalled() < Duration::from_millis(20));
        h.pause();
        assert_eq!(h.stalled(), Duration::ZERO);
        h.sent();
        h.heard(false);
        assert_eq!(h.stalled(), Duration::ZERO);
        assert!(h.is_up(Duration::ZERO));
        h.set_connected(false);
        assert!(!h.is_up(Duration::from_secs(1)));
    }
}
