//! History: a backend that keeps the last messages of a channel, numbered, so a client that
//! was away can be given exactly what it missed.
//!
//! Each channel with history is a stream. Its messages are numbered by **offset** 1, 2, 3 …
//! with no holes, and the stream has an **epoch**: a name for one unbroken life of it. When a
//! stream's history is lost (its TTL expired, or Redis restarted without persistence) the next
//! publish starts a new epoch at offset 1, so a position `(offset, epoch)` from before the loss
//! can never be mistaken for one after it.
//!
//! Contract (checked by `conformance::history`):
//! - `publish_kept` appends and publishes in one step: every subscribed node receives the
//!   message with its [`Position`], and the history holds it, or neither happens.
//! - Offsets of one channel increase by exactly 1 per accepted publish within an epoch.
//! - `history` returns messages oldest first; with `since: Some(n)`, the first `limit` messages
//!   after offset `n`; with `since: None`, the last `limit` messages. At most `size` messages
//!   are kept per channel, and a channel's whole history (epoch included) is dropped `ttl`
//!   after its last publish.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// A message's place in its channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// How much of a channel's stream is kept (from its route's `history_size` and
/// `history_ttl_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per channel; at least 1.
    pub size: usize,
    /// How long a channel's history lives after its last publish.
    pub ttl: Duration,
}

/// One kept message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub offset: u64,
    /// The bytes given to `publish_kept`.
    pub payload: Bytes,
}

/// A read of one channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The stream's current epoch (a new one is made when there is none, so a reader always
    /// learns the epoch that later publishes will carry).
    pub epoch: Arc<str>,
    /// The latest offset of the epoch; 0 when nothing was published in it yet.
    pub top: u64,
    /// Oldest first.
    pub messages: Vec<Stored>,
}

/// A fresh epoch name: 64 random bits in hex. Unique enough that two lives of one stream never
/// share one.
pub fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", fastrand::u64(..)).as_str())
}
