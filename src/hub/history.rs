//! The hub's part in history: kept publishes and reads go to the topic's backend, and a
//! recovering connection's live messages wait in a buffer until what it missed is queued.
//!
//! Recovery without a gap or a duplicate at the seam: the connection subscribes with a
//! buffer (a socketless [`Outbox`]) in place of its outbox, so live messages are kept from the
//! moment the subscription takes effect. The session then reads history, queues what was
//! missed, and [`Hub::promote`]s the connection: under the topic's subscriber lock, so no live
//! message can slip past, the buffered messages newer than the replay move to the real outbox
//! and the connection's entry points at it from then on.

use std::sync::Arc;

use bytes::Bytes;
use switchyard_backend::{BackendError, Page, Position, Retention};

use super::{ConnKey, Hub, TopicKey};
use crate::outbox::{Outbox, Push};
use crate::protocol::wire;

/// Frames a recovering connection may buffer; past it the buffer overflows and the connection
/// is closed as a slow consumer (a channel this busy cannot be recovered onto anyway).
pub(crate) const RECOVERY_BUFFER_FRAMES: usize = 10_000;

impl Hub {
    fn backend_of(&self, backend: usize) -> Result<&super::HubBackend, BackendError> {
        self.backends
            .get(backend)
            .ok_or_else(|| BackendError::Invalid(format!("no backend #{backend}")))
    }

    /// Appends `payload` to the channel's history and publishes it; its position.
    pub(crate) async fn publish_kept(
        &self,
        backend: usize,
        channel: &str,
        payload: Bytes,
        retention: Retention,
    ) -> Result<Position, BackendError> {
        self.backend_of(backend)?.backend.publish_kept(channel, payload, retention).await
    }

    /// Reads the channel's history (see `Backend::history`).
    pub(crate) async fn history(
        &self,
        backend: usize,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        retention: Retention,
    ) -> Result<Page, BackendError> {
        let b = self.backend_of(backend)?;
        b.backend.history(channel, since, limit, retention).await
    }

    /// Records a history topic's position and retention for gap healing.
    pub(crate) fn learn(&self, key: &TopicKey, at: Position, retention: Retention) {
        if let Some(topic) = self.topic(key) {
            topic.cursor().learn(at, retention);
        }
    }

    /// Subscribes `conn` to a topic with a fresh buffer in place of its outbox; the buffer.
    pub(crate) async fn subscribe_buffered(
        &self,
        key: &TopicKey,
        conn: ConnKey,
        max_bytes: usize,
    ) -> Result<Arc<Outbox>, BackendError> {
        let buffer =
            Arc::new(Outbox::new(RECOVERY_BUFFER_FRAMES, false, None).with_max_bytes(max_bytes));
        self.subscribe(key, conn, &buffer).await?;
        Ok(buffer)
    }

    /// Moves `conn` from its buffer to `to`. `seam` gets the buffered frames and returns what
    /// `to` receives, in order (the answer, the replay, then the buffered frames); it runs under
    /// the topic's lock, so no live frame is queued around it. A buffer that overflowed closes
    /// `to` as a slow consumer.
    pub(crate) fn promote(
        &self,
        key: &TopicKey,
        conn: ConnKey,
        to: &Arc<Outbox>,
        seam: impl FnOnce(Vec<Bytes>) -> Vec<Bytes>,
    ) {
        let topic = self.topics.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        let Some(topic) = topic else { return };
        let mut subscribers = topic.subscribers();
        let buffered = match subscribers.get(&conn) {
            Some(buffer) if buffer.is_closing() => {
                let reason = "slow consumer: too many messages during recovery";
                to.close(wire::close::SLOW_CONSUMER, reason);
                Vec::new()
            }
            Some(buffer) => buffer.drain_frames(),
            None => Vec::new(),
        };
        for frame in seam(buffered) {
            if to.push(frame) == Push::Overflowed {
                self.metrics.slow_consumers.increment(1);
                break;
            }
        }
        subscribers.insert(conn, to.clone());
        drop(subscribers);
        to.kick();
    }
}
