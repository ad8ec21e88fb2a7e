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

use tokio::time::Instant;

use bytes::Bytes;
use switchyard_backend::{BackendError, Page, Position, Retention};

use super::{ConnKey, Hub, Subscriber, TopicKey};
use crate::outbox::{Outbox, Push};
use crate::protocol::wire;

/// How long a history read stays shareable after it began.
const SHARED_READ_LIFE: std::time::Duration = std::time::Duration::from_secs(2);

/// Frames a recovering connection may buffer; past it the buffer overflows and the connection
/// is closed as a slow consumer (a channel this busy cannot be recovered onto anyway).
pub(crate) const RECOVERY_BUFFER_FRAMES: usize = 10_000;

impl Hub {
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

    /// Reads the channel's history (see `Backend::history`). Reads of a subscribed topic are
    /// shared: a reader waits for the read in flight, then takes the last read when it covers
    /// its range and began after this reader arrived (or at any time, with `any_age`: the
    /// caller checks the page against what the node has seen, see [`Hub::promote`]), or makes
    /// the next read itself. So a thousand clients recovering one channel at once cost a
    /// handful of reads.
    pub(crate) async fn history(
        &self,
        backend: usize,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        retention: Retention,
        any_age: bool,
    ) -> Result<Page, BackendError> {
        let b = self.backend_of(backend)?;
        let key = TopicKey { backend, channel: Arc::from(channel) };
        let Some(topic) = self.topic(&key) else {
            self.metrics.history_backend_reads.increment(1);
            return b.backend.history(channel, since, limit, retention).await;
        };
        let arrived = Instant::now();
        let mut last = topic.last_read.lock().await;
        let arrived = if any_age { last.as_ref().map_or(arrived, |r| r.began) } else { arrived };
        if let Some(shared) = last.as_ref().and_then(|r| r.answer(arrived, since, limit)) {
            return shared;
        }
        let began = Instant::now();
        self.metrics.history_backend_reads.increment(1);
        let result = b.backend.history(channel, since, limit, retention).await;
        // A failure is shared too: readers queued behind a read that timed out must not each
        // wait out their own timeout.
        *last = Some(SharedRead { began, since, limit, result: result.clone() });
        drop(last);
        // Kept for a storm, not for good: every history topic holding its last page would add
        // up to a lot of memory.
        tokio::spawn(async move {
            tokio::time::sleep(SHARED_READ_LIFE).await;
            let mut last = topic.last_read.lock().await;
            if last.as_ref().is_some_and(|r| r.began == began) {
                *last = None;
            }
        });
        result
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

    /// Moves `conn` from its buffer to `to`. `seam` gets the buffered frames and the last
    /// position this node delivered on the topic, and returns what `to` receives, in order
    /// (the answer, the replay, then the buffered frames) with the seam position, or gives the
    /// frames back when its page turned out older than what the node has seen (then nothing
    /// changes and this returns false). It runs under the topic's locks, so no live frame is
    /// queued around it; the cursor settles on the seam (see `Cursor::settle`). A buffer that
    /// overflowed closes `to` as a slow consumer.
    pub(crate) fn promote(
        &self,
        key: &TopicKey,
        conn: ConnKey,
        to: &Arc<Outbox>,
        retention: Retention,
        seam: impl FnOnce(Vec<Bytes>, Option<Position>) -> Result<Settled, Vec<Bytes>>,
    ) -> bool {
        let topic = self.topics.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        let Some(topic) = topic else { return true };
        // Cursor before subscribers, as everywhere.
        let mut cursor = topic.cursor();
        let delivered = cursor.delivered();
        let mut subscribers = topic.subscribers();
        let buffered = match subscribers.get(&conn).map(|s| &s.outbox) {
            Some(buffer) if buffer.is_closing() => {
                let reason = "slow consumer: too many messages during recovery";
                to.close(wire::close::SLOW_CONSUMER, reason);
                Vec::new()
            }
            Some(buffer) => buffer.drain_frames(),
            None => Vec::new(),
        };
        let settled = match seam(buffered, delivered) {
            Ok(settled) => settled,
            Err(frames) => {
                // Back where they were: the buffer held them a moment ago, so they fit.
                if let Some(buffer) = subscribers.get(&conn) {
                    for frame in frames {
                        let _ = buffer.outbox.push(frame);
                    }
                }
                return false;
            }
        };
        cursor.settle(settled.at, retention);
        for frame in settled.frames {
            if to.push(frame) == Push::Overflowed {
                self.metrics.slow_consumers.increment(1);
                break;
            }
        }
        let subscriber = Subscriber { outbox: to.clone(), floor: Some(settled.floor) };
        subscribers.insert(conn, subscriber);
        drop(subscribers);
        drop(cursor);
        to.kick();
        true
    }
}

/// What a recovering connection settled on at its seam (see `Hub::promote`).
pub(crate) struct Settled {
    /// What its outbox gets first: the answer, the replay, the held-back messages.
    pub(crate) frames: Vec<Bytes>,
    /// The position its subscription took effect at.
    pub(crate) at: Position,
    /// The last position it has been given (at least `at`; more when the client's own
    /// position was ahead of this node).
    pub(crate) floor: Position,
}

/// A finished history read of one topic, kept for readers that arrived before it began.
pub(crate) struct SharedRead {
    began: Instant,
    since: Option<u64>,
    limit: usize,
    result: Result<Page, BackendError>,
}

impl SharedRead {
    /// This read's answer to `(since, limit)`, when it began after the reader arrived and
    /// holds the whole range the reader asks for.
    fn answer(
        &self,
        arrived: Instant,
        since: Option<u64>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        if self.began < arrived {
            return None;
        }
        let page = match &self.result {
            Ok(page) => page,
            Err(e) => return Some(Err(e.clone())),
        };
        let all_after = |from: u64| {
            // Complete from `from` on: it was not cut short by its own limit.
            self.since.is_some_and(|s| s <= from) && page.messages.len() < self.limit
        };
        let messages = match since {
            None if limit == 0 => Vec::new(),
            None if self.since.is_none() && limit <= self.limit => {
                let skip = page.messages.len().saturating_sub(limit);
                page.messages[skip..].to_vec()
            }
            Some(from) if all_after(from) => {
                page.messages.iter().filter(|m| m.offset > from).take(limit).cloned().collect()
            }
            _ => return None,
        };
        Some(Ok(Page { epoch: page.epoch.clone(), top: page.top, messages }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_backend::Stored;

    use super::*;

    fn read(
        since: Option<u64>,
        limit: usize,
        offsets: std::ops::RangeInclusive<u64>,
    ) -> SharedRead {
        let messages = offsets.map(|offset| Stored { offset, payload: Bytes::new() }).collect();
        SharedRead {
            began: Instant::now(),
            since,
            limit,
            result: Ok(Page { epoch: Arc::from("e"), top: 20, messages }),
        }
    }

    fn offsets(p: Option<Result<Page, BackendError>>) -> Option<Vec<u64>> {
        p.map(|p| p.map(|p| p.messages.iter().map(|m| m.offset).collect()).unwrap_or_default())
    }

    #[test]
    fn a_shared_read_answers_only_later_arrivals_within_its_range() {
        let arrived = Instant::now();
        let r = read(Some(10), 100, 11..=20);
        assert_eq!(offsets(r.answer(arrived, Some(15), 3)), Some(vec![16, 17, 18]));
        assert_eq!(offsets(r.answer(arrived, Some(10), 100)), Some((11..=20).collect()));
        assert_eq!(offsets(r.answer(arrived, None, 0)), Some(vec![]), "just the position");
        assert_eq!(r.answer(arrived, Some(5), 100), None, "it did not read from 5");
        let later = arrived + Duration::from_secs(1);
        assert_eq!(r.answer(later, Some(15), 3), None, "it began before this reader arrived");
        let cut = read(Some(10), 5, 11..=15);
        assert_eq!(cut.answer(arrived, Some(12), 10), None, "cut short by its own limit");
        let latest = read(None, 5, 16..=20);
        assert_eq!(offsets(latest.answer(arrived, None, 2)), Some(vec![19, 20]));
    }

    #[cfg(feature = "memory")]
    #[tokio::test(start_paused = true)]
    async fn a_shared_read_is_let_go_after_its_life() {
        use crate::hub::HubBackend;
        use crate::metrics::Metrics;
        let backend = Arc::new(switchyard_memory::MemoryBackend::new());
        let hub = Hub::new(
            Arc::from("n"),
            vec![HubBackend { name: Arc::from("m"), backend }],
            None,
            Metrics::new(),
        );
        let topic = TopicKey { backend: 0, channel: Arc::from("c") };
        let outbox = Arc::new(Outbox::new(8, false, None));
        hub.subscribe(&topic, 1, &outbox).await.expect("subscribe");
        let retention = Retention { size: 10, ttl: Duration::from_secs(60) };
        hub.history(0, "c", None, 0, retention, false).await.expect("read");
        let kept = || async { hub.topic(&topic).expect("topic").last_read.lock().await.is_some() };
        assert!(kept().await, "shareable right after the read");
        tokio::time::sleep(SHARED_READ_LIFE + Duration::from_millis(10)).await;
        assert!(!kept().await, "let go after its life");
    }
}
