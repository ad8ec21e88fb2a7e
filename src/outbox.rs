//! The per-connection bounded outbound queue.
//!
//! The hub pushes complete WebSocket frames (shared `Bytes`, encoded once per message) from any
//! thread; the connection's session drains everything queued in one go and writes it with one
//! syscall. A push that finds the queue full does not wait: it marks the connection as a slow
//! consumer, drops what was queued and asks the session to close with 4001, so one stalled
//! client never holds up delivery to the others or grows memory without bound.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::gateway::wsframe::close;

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full: the connection is being closed as a slow consumer.
    Overflowed,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

pub struct Outbox {
    state: Mutex<State>,
    /// Signalled when the queue goes from empty to non-empty, or the outbox closes.
    ready: Notify,
    /// Signalled when the outbox closes, to interrupt a write that is stuck on a slow socket.
    closing: Notify,
    capacity: usize,
}

struct State {
    frames: VecDeque<Bytes>,
    close: Option<Close>,
}

/// Why and how a connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State { frames: VecDeque::new(), close: None }),
            ready: Notify::new(),
            closing: Notify::new(),
            capacity,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-push; the queue is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one complete frame.
    pub fn push(&self, frame: Bytes) -> Push {
        let mut state = self.state();
        if state.close.is_some() {
            return Push::Closed;
        }
        if state.frames.len() >= self.capacity {
            state.frames.clear();
            state.close = Some(Close {
                code: close::SLOW_CONSUMER,
                reason: "slow consumer: outbound queue overflowed".into(),
            });
            drop(state);
            self.ready.notify_one();
            self.closing.notify_one();
            return Push::Overflowed;
        }
        state.frames.push_back(frame);
        let wake = state.frames.len() == 1;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Asks the session to send what is queued, then close with `code`. The first close wins.
    pub fn close(&self, code: u16, reason: &str) {
        let mut state = self.state();
        if state.close.is_none() {
            state.close = Some(Close { code, reason: reason.to_string() });
        }
        drop(state);
        self.ready.notify_one();
        self.closing.notify_one();
    }

    /// Moves every queued frame into `into`; returns the close request once one was made.
    pub fn drain(&self, into: &mut Vec<Bytes>) -> Option<Close> {
        let mut state = self.state();
        into.extend(state.frames.drain(..));
        // A burst can leave a large ring behind; idle connections should stay small.
        if state.frames.capacity() > 4096 {
            state.frames.shrink_to(64);
        }
        state.close.clone()
    }

    pub fn is_closing(&self) -> bool {
        self.state().close.is_some()
    }

    /// Resolves when frames are waiting or a close was requested since the last drain.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Resolves when a close has been requested (used while a write is in progress).
    pub async fn closing(&self) {
        if self.is_closing() {
            return;
        }
        self.closing.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_4001_and_drops_the_backlog() {
        let o = Outbox::new(2);
        assert_eq!(o.push(Bytes::from_static(b"a")), Push::Queued);
        assert_eq!(o.push(Bytes::from_static(b"b")), Push::Queued);
        assert_eq!(o.push(Bytes::from_static(b"c")), Push::Overflowed);
        assert_eq!(o.push(Bytes::from_static(b"d")), Push::Closed);
        let mut v = Vec::new();
        let close = o.drain(&mut v).expect("closing");
        assert_eq!(close.code, 4001);
        assert!(v.is_empty());
    }

    #[tokio::test]
    async fn wakes_the_writer_once_per_batch() {
        let o = Outbox::new(10);
        o.push(Bytes::from_static(b"a"));
        o.push(Bytes::from_static(b"b"));
        o.ready().await;
        let mut v = Vec::new();
        assert!(o.drain(&mut v).is_none());
        assert_eq!(v.len(), 2);
    }
}
