//! The seam between switchyard's hub and the systems that carry messages between broker nodes.
//!
//! A backend moves opaque payloads between *backend channels*. It knows nothing of WebSockets,
//! routes or permissions: the broker's routing core has already turned a client channel into a
//! backend channel name, and the payload is the already-encoded server frame, so a receiving
//! node forwards the bytes without decoding them.
//!
//! Contract every backend keeps (checked by [`conformance`]):
//! - `subscribe(c)` resolves only once messages published to `c` afterwards, from any node,
//!   will arrive on this backend's [`Incoming`] stream. Subscribing twice is the same as once.
//! - `unsubscribe(c)` resolves once messages published afterwards no longer arrive.
//! - Messages from one publisher to one channel arrive in publish order.
//! - `publish` answers [`BackendError::Unavailable`] when it cannot hand the message on; it never
//!   reports success for a message it dropped. On success it says how many subscribed nodes the
//!   message reached, or, for a backend whose [`Backend::counts_nodes`] is false, 0 for none
//!   and 1 for some.
//! - The subscription set belongs to the backend: after a reconnect it re-applies it by itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub mod backoff;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod history;
pub mod presence;
mod reach;
#[cfg(feature = "testing")]
pub mod testing;

pub use history::{Page, Position, Retention, Stored};
pub use presence::{Changes, Member, Roster};
pub use reach::{Credentials, TlsFiles};

/// One message as a backend delivers it to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The backend channel it was published to.
    pub channel: Arc<str>,
    /// The opaque bytes given to `publish` or `publish_kept`.
    pub payload: Bytes,
    /// Its place in the channel's history, for messages published with `publish_kept`.
    pub position: Option<Position>,
}

impl Message {
    /// A message without history.
    pub fn new(channel: Arc<str>, payload: Bytes) -> Message {
        Message { channel, payload, position: None }
    }
}

/// The one error type every backend maps its failures into.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The backend cannot be reached now; the caller may retry later.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request can never succeed (for example a channel name the backend rejects).
    #[error("backend rejected the request: {0}")]
    Invalid(String),
}

/// Receiving side of a backend: every message for the channels this backend instance
/// subscribed to, in arrival order.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Message>,
}

impl Incoming {
    /// Capacity backends should give the channel behind an [`Incoming`]: large enough to absorb
    /// bursts, bounded so a stalled hub pushes back instead of growing memory without end.
    pub const DEFAULT_CAPACITY: usize = 64 * 1024;

    /// A new stream and the sender a backend pushes into.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Message>, Incoming) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Incoming { rx })
    }

    /// The next message, or `None` once the backend has shut down.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Waits for at least one message and appends up to `limit` to `buf`; returns how many
    /// (0 once the backend has shut down). Lets the hub handle bursts in batches.
    pub async fn recv_many(&mut self, buf: &mut Vec<Message>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }
}

/// A message carrier between broker nodes. Object-safe: the broker holds `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short name of the implementation, used in logs and metrics ("memory", "redis", ...).
    fn kind(&self) -> &'static str;

    /// Publishes `payload` to `channel` on every node subscribed to it. Returns how many
    /// subscribed nodes it reached (Redis's receiver count), so a caller can tell "nobody
    /// listens" (0) from "delivered".
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<u64, BackendError>;

    /// Whether `publish`'s count is the number of nodes reached. Backends that can only tell
    /// "no node" from "some" (core NATS has no receiver count) answer false and publish answers
    /// 0 or 1. The hub only needs that much: `send` asks whether the target node's inbox has a
    /// subscriber.
    fn counts_nodes(&self) -> bool {
        true
    }

    /// Starts delivering `channel`'s messages to [`Backend::take_incoming`]'s stream.
    async fn subscribe(&self, channel: &str) -> Result<(), BackendError>;

    /// Stops delivering `channel`'s messages.
    async fn unsubscribe(&self, channel: &str) -> Result<(), BackendError>;

    /// The stream of incoming messages. There is one per backend instance: the first call
    /// returns it and later calls return `None`.
    fn take_incoming(&self) -> Option<Incoming>;

    /// Whether this backend keeps history ([`history`]); routes with `history_size` need it.
    fn has_history(&self) -> bool {
        false
    }

    /// Appends `payload` to `channel`'s history and publishes it, as one step; subscribers
    /// receive it with the returned [`Position`]. See [`history`] for the contract.
    async fn publish_kept(
        &self,
        channel: &str,
        payload: Bytes,
        retention: Retention,
    ) -> Result<Position, BackendError> {
        let _ = (channel, payload, retention);
        Err(BackendError::Invalid(format!("the {} backend keeps no history", self.kind())))
    }

    /// Reads `channel`'s history: with `since`, the first `limit` messages after that offset;
    /// without, the last `limit` messages; oldest first either way. A channel with no stream
    /// gets one (a new epoch at offset 0, kept for `retention.ttl`), so the reader learns the
    /// epoch later publishes will carry.
    async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        retention: Retention,
    ) -> Result<Page, BackendError> {
        let _ = (channel, since, limit, retention);
        Err(BackendError::Invalid(format!("the {} backend keeps no history", self.kind())))
    }

    /// Whether this backend keeps presence ([`presence`]); routes with `presence` need it.
    fn has_presence(&self) -> bool {
        false
    }

    /// Adds (or renews, with a lease ending `ttl` from now) the members in `add` and removes
    /// the members whose `conn` is in `remove`, as one step. See [`presence`] for the contract.
    async fn presence_update(
        &self,
        channel: &str,
        add: &[Member],
        remove: &[Arc<str>],
        ttl: Duration,
    ) -> Result<Changes, BackendError> {
        let _ = (channel, add, remove, ttl);
        Err(BackendError::Invalid(format!("the {} backend keeps no presence", self.kind())))
    }

    /// Counts `channel`'s members and, with `limit > 0`, lists up to `limit` of them after
    /// `after`.
    async fn presence_read(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Roster, BackendError> {
        let _ = (channel, after, limit);
        Err(BackendError::Invalid(format!("the {} backend keeps no presence", self.kind())))
    }

    /// Whether the backend can currently publish and subscribe (drives `/readyz`).
    async fn ready(&self) -> Result<(), BackendError>;

    /// Closes connections and stops background tasks; the incoming stream ends afterwards.
    async fn shutdown(&self) {}
}

/// Polls `ready()` until it succeeds or `within` has passed (then returns its last error).
pub async fn wait_ready(backend: &dyn Backend, within: Duration) -> Result<(), BackendError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match backend.ready().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
