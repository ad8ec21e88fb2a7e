//! The in-memory backend: channels are in-process fan-out.
//!
//! A [`MemoryBus`] plays the part Redis plays for the networked backends. Every
//! [`MemoryBackend`] attached to one bus behaves like a broker node on one Redis, which lets
//! tests run several nodes in one process; a backend built with [`MemoryBackend::new`] has a
//! bus of its own (the single-node broker).
//!
//! The bus also holds the history ([`history`]): it belongs to the backend, not to a node, so
//! every node on a bus reads the streams any of them published to. So does presence
//! ([`presence`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_backend::{
    Backend, BackendError, Changes, Incoming, Member, Message, Page, Position, Retention, Roster,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

mod history;
mod presence;

type NodeId = u64;

/// The shared substrate: which node's inbox wants which channel.
#[derive(Default, Clone)]
pub struct MemoryBus {
    inner: Arc<BusInner>,
}

/// The nodes subscribed to one channel, each with the sender of its incoming stream.
type Subscribers = Vec<(NodeId, mpsc::Sender<Message>)>;

#[derive(Default)]
struct BusInner {
    channels: RwLock<HashMap<Arc<str>, Subscribers>>,
    next_node: std::sync::atomic::AtomicU64,
    /// Every channel's kept messages. One lock for all channels: what it guards (an append,
    /// a trim and handing the message to already reserved queue slots) takes no time worth
    /// sharding for, and `publish` without history never takes it.
    history: Mutex<history::Store>,
    /// Every channel's members; one lock, like the history.
    presence: Mutex<presence::Store>,
}

impl MemoryBus {
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }

    fn senders(&self, channel: &str) -> Vec<mpsc::Sender<Message>> {
        let channels = self.inner.channels.read().unwrap_or_else(|e| e.into_inner());
        channels
            .get(channel)
            .map(|subs| subs.iter().map(|(_, tx)| tx.clone()).collect())
            .unwrap_or_default()
    }

    /// Appends `payload` to `channel`'s stream and hands it, with its position, to the queue
    /// slots `permits` reserved, all under the history lock: a second publisher to the channel
    /// cannot take the next offset before this message is in every subscriber's queue, so
    /// subscribers see offsets in order. Nothing here waits, so the lock is never held across
    /// an await.
    fn append_and_deliver(
        &self,
        channel: Arc<str>,
        payload: Bytes,
        retention: Retention,
        permits: Vec<mpsc::Permit<'_, Message>>,
    ) -> Position {
        let now = Instant::now();
        let mut store = self.inner.history.lock().unwrap_or_else(|e| e.into_inner());
        let position = store.ring(&channel, now, retention).push(payload.clone(), now, retention);
        for permit in permits {
            permit.send(Message {
                channel: channel.clone(),
                payload: payload.clone(),
                position: Some(position.clone()),
            });
        }
        position
    }

    /// One page of `channel`'s stream, creating it (a new epoch) if it is missing or expired.
    fn read_history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        retention: Retention,
    ) -> Page {
        let now = Instant::now();
        let mut store = self.inner.history.lock().unwrap_or_else(|e| e.into_inner());
        store.ring(channel, now, retention).page(since, limit)
    }
}

/// One node's view of a [`MemoryBus`].
pub struct MemoryBackend {
    bus: MemoryBus,
    node: NodeId,
    tx: mpsc::Sender<Message>,
    incoming: Mutex<Option<Incoming>>,
    /// This node's subscriptions, so subscribe is idempotent and shutdown can detach them.
    subscribed: Mutex<HashSet<Arc<str>>>,
}

impl MemoryBackend {
    /// A backend on a bus of its own: a single-node broker.
    pub fn new() -> MemoryBackend {
        MemoryBackend::on_bus(&MemoryBus::new())
    }

    /// A backend on a shared bus: one more node of an in-process cluster.
    pub fn on_bus(bus: &MemoryBus) -> MemoryBackend {
        let node = bus.inner.next_node.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, incoming) = Incoming::channel(Incoming::DEFAULT_CAPACITY);
        MemoryBackend {
            bus: bus.clone(),
            node,
            tx,
            incoming: Mutex::new(Some(incoming)),
            subscribed: Mutex::new(HashSet::new()),
        }
    }

    fn detach(&self, channel: &str) {
        let mut channels = self.bus.inner.channels.write().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = channels.get_mut(channel) {
            subs.retain(|(node, _)| *node != self.node);
            if subs.is_empty() {
                channels.remove(channel);
            }
        }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<u64, BackendError> {
        let senders = self.bus.senders(channel);
        let channel: Arc<str> = Arc::from(channel);
        let mut reached = 0;
        for tx in &senders {
            let m = Message::new(channel.clone(), payload.clone());
            // A node whose hub has stopped is gone; the others still get the message.
            if tx.send(m).await.is_ok() {
                reached += 1;
            }
        }
        Ok(reached)
    }

    fn has_history(&self) -> bool {
        true
    }

    async fn publish_kept(
        &self,
        channel: &str,
        payload: Bytes,
        retention: Retention,
    ) -> Result<Position, BackendError> {
        let senders = self.bus.senders(channel);
        // Queue slots are reserved before the offset is taken, so the wait for a full queue
        // happens outside the history lock and the send under it cannot block. A publish
        // cancelled while waiting here has taken no offset: neither kept nor delivered.
        let mut permits = Vec::with_capacity(senders.len());
        for tx in &senders {
            // A node whose hub has stopped is gone; the others still get the message.
            if let Ok(permit) = tx.reserve().await {
                permits.push(permit);
            }
        }
        Ok(self.bus.append_and_deliver(Arc::from(channel), payload, retention, permits))
    }

    async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        retention: Retention,
    ) -> Result<Page, BackendError> {
        Ok(self.bus.read_history(channel, since, limit, retention))
    }

    fn has_presence(&self) -> bool {
        true
    }

    async fn presence_update(
        &self,
        channel: &str,
        add: &[Member],
        remove: &[Arc<str>],
        ttl: std::time::Duration,
    ) -> Result<Changes, BackendError> {
        let mut store = self.bus.inner.presence.lock().unwrap_or_else(|e| e.into_inner());
        Ok(store.update(channel, add, remove, ttl))
    }

    async fn presence_read(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Roster, BackendError> {
        let mut store = self.bus.inner.presence.lock().unwrap_or_else(|e| e.into_inner());
        Ok(store.read(channel, after, limit))
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BackendError> {
        let key: Arc<str> = Arc::from(channel);
        let mut mine = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        if !mine.insert(key.clone()) {
            return Ok(());
        }
        let mut channels = self.bus.inner.channels.write().unwrap_or_else(|e| e.into_inner());
        channels.entry(key).or_default().push((self.node, self.tx.clone()));
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BackendError> {
        let mut mine = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        if mine.remove(channel) {
            self.detach(channel);
        }
        Ok(())
    }

    fn take_incoming(&self) -> Option<Incoming> {
        self.incoming.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    async fn ready(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn shutdown(&self) {
        let mine: Vec<Arc<str>> =
            self.subscribed.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for channel in mine {
            self.detach(&channel);
        }
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        let mine: Vec<Arc<str>> =
            self.subscribed.get_mut().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for channel in mine {
            self.detach(&channel);
        }
    }
}
