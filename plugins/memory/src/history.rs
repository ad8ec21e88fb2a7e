//! The memory backend's history: one ring of kept messages per channel, shared by every node
//! on a [`crate::MemoryBus`] the way Redis streams are shared by every node on one Redis.
//!
//! Time is tokio's clock ([`Instant`]), so tests with paused time can expire streams without
//! waiting.
//!
//! Expiry is checked lazily: every access first asks whether the channel's ring outlived its
//! deadline and, if so, treats it as gone. Memory of dead channels is given back on access
//! too, without a background task (a bus is built outside any runtime, and a task would
//! outlive the test that made it): each access pops the due entries of a deadline heap that
//! holds exactly one entry per ring. An entry whose ring was published to since is pushed back
//! with the ring's new deadline, so the heap never grows with the publish rate.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use switchyard_backend::history::new_epoch;
use switchyard_backend::{Page, Position, Retention, Stored};
use tokio::time::Instant;

/// At most this many heap entries are looked at per access, so one access never pays for a
/// mass expiry at once. Each access creates at most one ring, so sweeping several per access
/// still keeps up with creation.
const SWEEP_PER_ACCESS: usize = 64;

/// One channel's stream: the kept tail of one epoch.
#[derive(Debug)]
pub(crate) struct Ring {
    epoch: Arc<str>,
    /// The latest offset of the epoch; 0 before the first publish.
    top: u64,
    /// Oldest first; offsets are contiguous and the last one is `top`.
    kept: VecDeque<Stored>,
    /// When the stream is gone: `ttl` after its last publish (or its creation by a read).
    expires_at: Instant,
}

impl Ring {
    fn new(now: Instant, retention: Retention) -> Ring {
        Ring { epoch: new_epoch(), top: 0, kept: VecDeque::new(), expires_at: now + retention.ttl }
    }

    fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }

    /// Appends `payload` as the next offset, trims to `retention.size` and renews the TTL.
    pub(crate) fn push(&mut self, payload: Bytes, now: Instant, retention: Retention) -> Position {
        self.top += 1;
        self.kept.push_back(Stored { offset: self.top, payload });
        while self.kept.len() > retention.size {
            self.kept.pop_front();
        }
        self.expires_at = now + retention.ttl;
        Position { offset: self.top, epoch: self.epoch.clone() }
    }

    /// With `since`, the first `limit` kept messages after that offset; without, the last
    /// `limit`; oldest first.
    pub(crate) fn page(&self, since: Option<u64>, limit: usize) -> Page {
        let start = match since {
            // Offsets are contiguous, so the index of offset `since + 1` is computed, not
            // searched; offsets older than the kept tail start at its beginning.
            Some(since) => match self.kept.front() {
                Some(first) => {
                    usize::try_from(since.saturating_sub(first.offset - 1)).unwrap_or(usize::MAX)
                }
                None => 0,
            },
            None => self.kept.len().saturating_sub(limit),
        };
        let messages = self.kept.iter().skip(start).take(limit).cloned().collect();
        Page { epoch: self.epoch.clone(), top: self.top, messages }
    }
}

/// Every channel's ring, and the deadlines that let dead ones be freed.
#[derive(Debug, Default)]
pub(crate) struct Store {
    rings: HashMap<Arc<str>, Ring>,
    /// One entry per ring in `rings`: a deadline no later than the ring's own.
    deadlines: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

impl Store {
    /// The live ring of `channel`: the existing one unless it expired, else a new epoch that
    /// lives `retention.ttl` from now.
    pub(crate) fn ring(&mut self, channel: &str, now: Instant, retention: Retention) -> &mut Ring {
        self.sweep(now);
        // Two lookups instead of `entry`, so the common case (ring exists) allocates no key.
        if !self.rings.contains_key(channel) {
            let key: Arc<str> = Arc::from(channel);
            let ring = Ring::new(now, retention);
            self.deadlines.push(Reverse((ring.expires_at, key.clone())));
            return self.rings.entry(key).or_insert(ring);
        }
        let ring = self.rings.get_mut(channel).expect("checked just above");
        if ring.is_expired(now) {
            // The heap entry of the old ring stays; it now stands for the new one and is
            // pushed back to the new deadline when it comes due.
            *ring = Ring::new(now, retention);
        }
        ring
    }

    /// Frees the rings whose deadline passed, looking at most at [`SWEEP_PER_ACCESS`] entries.
    fn sweep(&mut self, now: Instant) {
        for _ in 0..SWEEP_PER_ACCESS {
            match self.deadlines.peek() {
                Some(Reverse((due, _))) if *due <= now => {}
                _ => return,
            }
            let Some(Reverse((_, channel))) = self.deadlines.pop() else { return };
            match self.rings.get(&channel) {
                Some(ring) if ring.is_expired(now) => {
                    self.rings.remove(&channel);
                }
                Some(ring) => self.deadlines.push(Reverse((ring.expires_at, channel))),
                None => {}
            }
        }
    }

    /// How many channels hold a ring (live or not yet swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rings.len()
    }
}

#[cfg(test)]
mod tests;
