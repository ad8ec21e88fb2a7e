//! Gap healing: a node delivers every message of a history channel, in offset order, even when
//! the backend's live stream lost some (a Redis connection dropped and re-subscribed, a failover,
//! a slot move).
//!
//! Each history topic has a [`Cursor`]: the last position delivered. A message that follows
//! it goes out at once. One that leaves a hole (or starts a new epoch) is held back, with
//! everything after it, while a healing task reads the missing range from history; then the
//! range and the held messages go out in order. When history no longer holds the range (it was
//! trimmed, expired, or Redis lost it), the topic's connections are closed with 4004 so their
//! clients resubscribe with their position and learn `recovered: false`: a gap is never passed
//! off as a complete stream.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use switchyard_backend::{Message, Page, Position, Retention};

use super::{Hub, Topic, TopicKey};
use crate::protocol::wire::close;

/// Reads tried before a gap is given up as unhealable.
const HEAL_ATTEMPTS: u32 = 3;
/// Pause between reads while the backend does not answer.
const HEAL_RETRY: Duration = Duration::from_millis(200);
/// Most messages, and bytes, held back behind one heal. A channel that outruns a slow history
/// read past these is not healed: its connections are closed to recover, as for a range
/// history no longer holds, rather than holding without bound.
const MAX_HELD: usize = 10_000;
const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// Where delivery of one history topic stands.
#[derive(Default)]
pub(super) struct Cursor {
    /// The last position delivered (None before the first).
    at: Option<Position>,
    /// The channel's retention, learned when a client subscribed; healing reads need it.
    retention: Option<Retention>,
    /// While a healing read is in flight: the messages that arrived meanwhile, in order.
    held: Option<Vec<Message>>,
    /// Payload bytes in `held`.
    held_bytes: usize,
}

/// What to do with an arriving history message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    Deliver,
    /// Already delivered (a healed range overtook it).
    Duplicate,
    /// A heal is in flight: hold it behind the range.
    Hold,
    /// A hole before it: hold it and start healing.
    Heal,
}

impl Cursor {
    /// Judges `p` and moves the cursor past it when it is delivered.
    pub(super) fn admit(&mut self, p: &Position) -> Admit {
        if self.held.is_some() {
            return Admit::Hold;
        }
        let verdict = match &self.at {
            None => Admit::Deliver,
            Some(at) if at.epoch == p.epoch && p.offset == at.offset + 1 => Admit::Deliver,
            Some(at) if at.epoch == p.epoch && p.offset <= at.offset => Admit::Duplicate,
            // Without the retention no read can be made: deliver, and count on the clients'
            // own recovery.
            Some(_) if self.retention.is_none() => Admit::Deliver,
            Some(_) => Admit::Heal,
        };
        if verdict == Admit::Deliver {
            self.at = Some(p.clone());
        }
        verdict
    }

    /// The last position delivered, unless a heal is in flight (then delivery is behind
    /// what has arrived, and a recovering client must not be promised it).
    pub(super) fn delivered(&self) -> Option<Position> {
        if self.held.is_some() {
            return None;
        }
        self.at.clone()
    }

    /// Holds `message` behind the heal in flight; false (and nothing held) when that would
    /// pass the bounds.
    pub(super) fn hold(&mut self, message: Message) -> bool {
        let held = self.held.get_or_insert_with(Vec::new);
        let bytes = self.held_bytes + message.payload.len();
        if held.len() >= MAX_HELD || bytes > MAX_HELD_BYTES {
            return false;
        }
        self.held_bytes = bytes;
        held.push(message);
        true
    }

    /// Gives up the heal in flight: what was held is dropped and delivery goes on after `at`.
    pub(super) fn abandon(&mut self, at: Position) {
        self.held = None;
        self.held_bytes = 0;
        self.at = Some(at);
    }

    /// Records what a recovering client settled on: the channel's retention, and the seam
    /// position when this node has delivered nothing of that epoch yet, so that live messages
    /// up to it (already replayed, or older than the subscription) are dropped as duplicates.
    pub(super) fn settle(&mut self, at: Position, retention: Retention) {
        self.retention = Some(retention);
        if self.at.as_ref().is_none_or(|a| a.epoch != at.epoch) {
            self.at = Some(at);
        }
    }
}

/// The read that fills the hole before `next`: after the cursor in the same epoch, from the
/// start of a new one.
fn missing_range(at: Option<&Position>, next: &Position) -> (u64, usize) {
    let since = match at {
        Some(at) if at.epoch == next.epoch => at.offset,
        _ => 0,
    };
    let missing = next.offset.saturating_sub(since + 1);
    (since, usize::try_from(missing).unwrap_or(usize::MAX))
}

impl Hub {
    /// Heals `key` until nothing is held: reads each hole, delivers it and the held messages.
    pub(super) async fn heal(self: Arc<Self>, key: TopicKey) {
        loop {
            let Some(topic) = self.topic(&key) else { return };
            let Some((since, missing, retention, next)) = healing_read(&topic) else { return };
            let page = self.read_missing(&key, since, missing, retention).await;
            self.metrics.history_reads.increment(1);
            let mut cursor = topic.cursor();
            // Abandoned meanwhile (too much arrived): this read is not wanted any more.
            let first =
                cursor.held.as_ref().and_then(|h| h.first()).and_then(|m| m.position.as_ref());
            if first != Some(&next) {
                continue;
            }
            let healed = page.as_ref().is_some_and(|p| self.fill(&topic, &mut cursor, p, &next));
            if !healed {
                self.unhealable(&topic, &key, &next);
                let before = next.offset.saturating_sub(1);
                cursor.at = Some(Position { offset: before, epoch: next.epoch.clone() });
            }
            if self.release_held(&topic, &mut cursor) {
                return;
            }
        }
    }

    async fn read_missing(
        &self,
        key: &TopicKey,
        since: u64,
        missing: usize,
        retention: Retention,
    ) -> Option<Page> {
        let limit = missing.min(retention.size);
        for attempt in 1..=HEAL_ATTEMPTS {
            match self
                .history(key.backend, &key.channel, Some(since), limit, retention, false)
                .await
            {
                Ok(page) => return Some(page),
                Err(e) if attempt == HEAL_ATTEMPTS => {
                    tracing::warn!(channel = %key.channel, error = %e, "cannot read history to heal a gap");
                }
                Err(_) => tokio::time::sleep(HEAL_RETRY).await,
            }
        }
        None
    }

    /// Delivers the page's messages up to `next`; true when they close the hole exactly.
    fn fill(&self, topic: &Topic, cursor: &mut Cursor, page: &Page, next: &Position) -> bool {
        if page.epoch != next.epoch {
            return false;
        }
        // A new epoch (history was lost, e.g. Redis restarted empty): deliver it from its start.
        if cursor.at.as_ref().is_none_or(|at| at.epoch != next.epoch) {
            cursor.at = Some(Position { offset: 0, epoch: next.epoch.clone() });
        }
        let mut touched = Vec::new();
        for m in page.messages.iter().filter(|m| m.offset < next.offset) {
            let position = Position { offset: m.offset, epoch: page.epoch.clone() };
            if cursor.admit_healed(&position) {
                self.fan_out(topic, &m.payload, Some(&position), &mut touched);
            }
        }
        super::dispatch::kick_all(&mut touched);
        self.metrics.healed.increment(page.messages.len() as u64);
        cursor.at.as_ref().is_some_and(|at| at.epoch == next.epoch && at.offset + 1 == next.offset)
    }

    /// Closes the topic's connections with 4004: their clients resubscribe with their position
    /// and are told `recovered: false`.
    pub(super) fn unhealable(&self, topic: &Topic, key: &TopicKey, next: &Position) {
        self.metrics.gaps_unhealed.increment(1);
        tracing::warn!(channel = %key.channel, offset = next.offset, "history no longer holds a gap; closing the channel's connections so they recover");
        for subscriber in topic.subscribers().values() {
            subscriber
                .outbox
                .close(close::HISTORY_GAP, "messages were lost: resubscribe with your position");
        }
    }

    /// Delivers held messages in order; false (with the rest held again) at the next hole.
    fn release_held(&self, topic: &Topic, cursor: &mut Cursor) -> bool {
        let held = cursor.held.take().unwrap_or_default();
        cursor.held_bytes = 0;
        let mut touched = Vec::new();
        let mut rest = held.into_iter();
        while let Some(message) = rest.next() {
            let Some(p) = message.position.clone() else { continue };
            match cursor.admit(&p) {
                Admit::Deliver => self.fan_out(topic, &message.payload, Some(&p), &mut touched),
                Admit::Duplicate => {}
                Admit::Hold | Admit::Heal => {
                    let again: Vec<Message> = std::iter::once(message).chain(rest).collect();
                    cursor.held_bytes = again.iter().map(|m| m.payload.len()).sum();
                    cursor.held = Some(again);
                    super::dispatch::kick_all(&mut touched);
                    return false;
                }
            }
        }
        super::dispatch::kick_all(&mut touched);
        true
    }
}

impl Cursor {
    /// Like [`Cursor::admit`] for a healed message: delivered when it is the next one.
    fn admit_healed(&mut self, p: &Position) -> bool {
        let next =
            self.at.as_ref().is_some_and(|at| at.epoch == p.epoch && p.offset == at.offset + 1);
        if next {
            self.at = Some(p.clone());
        }
        next
    }
}

/// What the next healing read is: (since, how many are missing, retention, the first held
/// position), or None when nothing is held.
fn healing_read(topic: &Topic) -> Option<(u64, usize, Retention, Position)> {
    let cursor: MutexGuard<'_, Cursor> = topic.cursor();
    let next = cursor.held.as_ref()?.first()?.position.clone()?;
    let retention = cursor.retention?;
    let (since, missing) = missing_range(cursor.at.as_ref(), &next);
    Some((since, missing, retention, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> Position {
        Position { offset, epoch: Arc::from(epoch) }
    }

    #[test]
    fn the_cursor_delivers_in_order_and_heals_holes_and_new_epochs() {
        let mut c = Cursor::default();
        assert_eq!(c.admit(&at(5, "e")), Admit::Deliver, "the first message sets the cursor");
        assert_eq!(c.admit(&at(6, "e")), Admit::Deliver);
        assert_eq!(c.admit(&at(6, "e")), Admit::Duplicate);
        assert_eq!(c.admit(&at(8, "e")), Admit::Deliver, "no retention known: cannot heal");
        c.settle(at(0, "e"), Retention { size: 10, ttl: Duration::from_secs(1) });
        assert_eq!(c.admit(&at(10, "e")), Admit::Heal);
        assert!(c.hold(Message {
            channel: Arc::from("c"),
            payload: Default::default(),
            position: Some(at(10, "e")),
        }));
        assert_eq!(c.admit(&at(11, "e")), Admit::Hold, "held behind the heal");
        assert_eq!(missing_range(c.at.as_ref(), &at(10, "e")), (8, 1));
        assert_eq!(missing_range(c.at.as_ref(), &at(3, "f")), (0, 2), "a new epoch from its start");
    }
}
