//! The hub: the only owner of "who on this node listens to what".
//!
//! Client subscriptions are grouped by backend channel into topics. Each topic holds exactly
//! one backend subscription however many local connections hold it (reference counted by its
//! subscriber set). Messages arriving from a backend are framed once and the same bytes are
//! queued to every local subscriber's [`Outbox`].
//!
//! Each node also subscribes to its inbox channel on the inbox backend; `send` frames travel
//! there as [`inbox::InboxMessage`]s. [`dispatch`] moves messages from backends to outboxes,
//! under supervision.

mod dispatch;
mod healing;
mod history;
mod inbox;
mod presence;

pub(crate) use history::Settled;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use switchyard_backend::{Backend, BackendError, Incoming, Message, Position};
use tokio_util::sync::CancellationToken;

use dispatch::{kick_all, supervise, Running, Supervised, DISPATCH_BATCH};
use inbox::InboxMessage;

use crate::metrics::Metrics;
use crate::outbox::{Outbox, Push};
use crate::protocol::{position, wire};

/// A backend channel on one of the node's backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TopicKey {
    pub backend: usize,
    pub channel: Arc<str>,
}

/// A local connection as the hub sees it: the random part of its connection id.
pub(crate) type ConnKey = u64;

/// One local connection on a topic.
struct Subscriber {
    outbox: Arc<Outbox>,
    /// History topics: this connection was given everything up to here by a recovery replay
    /// (or its position was ahead of this node's); live copies at or before it are skipped.
    floor: Option<Position>,
}

impl Subscriber {
    fn new(outbox: Arc<Outbox>) -> Subscriber {
        Subscriber { outbox, floor: None }
    }

    /// Whether a message at `position` was already given to this connection.
    fn has(&self, position: Option<&Position>) -> bool {
        match (position, &self.floor) {
            (Some(p), Some(floor)) => p.epoch == floor.epoch && p.offset <= floor.offset,
            _ => false,
        }
    }
}

struct Topic {
    subscribers: Mutex<HashMap<ConnKey, Subscriber>>,
    /// History topics: where delivery stands (see `healing`). Locked before `subscribers`.
    cursor: Mutex<healing::Cursor>,
    /// History topics: the last history read, shared by readers that arrived before it began
    /// (see `history`), so a reconnect storm reads once per overlapping range.
    last_read: tokio::sync::Mutex<Option<history::SharedRead>>,
    /// Whether the backend subscription is in place. Held across the backend call so that
    /// subscribe and unsubscribe of one topic never interleave.
    backend_subscribed: tokio::sync::Mutex<bool>,
}

impl Topic {
    fn cursor(&self) -> std::sync::MutexGuard<'_, healing::Cursor> {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, HashMap<ConnKey, Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A named backend the hub routes through.
pub(crate) struct HubBackend {
    pub name: Arc<str>,
    pub backend: Arc<dyn Backend>,
}

pub(crate) struct Hub {
    node: Arc<str>,
    backends: Vec<HubBackend>,
    inbox: Option<(usize, Arc<str>)>,
    topics: RwLock<HashMap<TopicKey, Arc<Topic>>>,
    connections: RwLock<HashMap<ConnKey, Arc<Outbox>>>,
    metrics: Metrics,
    /// Topics with a gap to heal; the healer task started by `start` takes them.
    heal_requests: tokio::sync::mpsc::UnboundedSender<TopicKey>,
    heal_queue: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<TopicKey>>>,
    /// Whether each backend's dispatch task runs, by backend index.
    running: Vec<Arc<Running>>,
    /// Ends the dispatch tasks; cancelled after sessions have drained.
    stop: CancellationToken,
}

/// After a burst a table would keep its peak size for good; give most of it back once it is
/// mostly empty (shrinking at a quarter full to half keeps removals amortized O(1)).
fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

use crate::routing::inbox_channel;

impl Hub {
    /// A hub over `backends`; `inbox` is the index of the backend that carries `send` frames.
    pub(crate) fn new(
        node: Arc<str>,
        backends: Vec<HubBackend>,
        inbox: Option<usize>,
        metrics: Metrics,
    ) -> Hub {
        let inbox = inbox.map(|i| (i, Arc::from(inbox_channel(&node))));
        let running = backends.iter().map(|_| Arc::new(Running::default())).collect();
        // Unbounded but small: a topic is queued once per gap, while it is not already healing.
        let (heal_requests, heal_queue) = tokio::sync::mpsc::unbounded_channel();
        Hub {
            running,
            heal_requests,
            heal_queue: Mutex::new(Some(heal_queue)),
            node,
            backends,
            inbox,
            topics: RwLock::new(HashMap::new()),
            connections: RwLock::new(HashMap::new()),
            metrics,
            stop: CancellationToken::new(),
        }
    }

    fn backend_of(&self, backend: usize) -> Result<&HubBackend, BackendError> {
        self.backends
            .get(backend)
            .ok_or_else(|| BackendError::Invalid(format!("no backend #{backend}")))
    }

    /// The backends' names, by index.
    pub(crate) fn backend_names(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().map(|b| &*b.name)
    }

    /// Subscribes to this node's inbox and starts one dispatch task per backend. The tasks run
    /// until [`Hub::shutdown`], after the sessions (tracked elsewhere) have drained.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), BackendError> {
        let queue = self.heal_queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut queue) = queue {
            let (hub, stop) = (self.clone(), self.stop.clone());
            tokio::spawn(async move {
                loop {
                    let key = tokio::select! {
                        key = queue.recv() => key,
                        _ = stop.cancelled() => None,
                    };
                    let Some(key) = key else { return };
                    tokio::spawn(hub.clone().heal(key));
                }
            });
        }
        for (index, b) in self.backends.iter().enumerate() {
            let incoming = b.backend.take_incoming().ok_or_else(|| {
                BackendError::Invalid(format!("backend {} handed out its stream already", b.name))
            })?;
            // The stream sits behind a mutex so a restarted task takes over the same one.
            let incoming = Arc::new(tokio::sync::Mutex::new(incoming));
            let supervised = Supervised {
                name: b.name.clone(),
                running: self.running[index].clone(),
                restarts: Metrics::dispatch_restarts(&b.name),
                stop: self.stop.clone(),
            };
            let hub = self.clone();
            tokio::spawn(supervise(supervised, move || {
                let (hub, incoming) = (hub.clone(), incoming.clone());
                async move { hub.dispatch(index, &mut *incoming.lock().await).await }
            }));
        }
        if let Some((index, channel)) = &self.inbox {
            let b = &self.backends[*index];
            if let Err(e) = b.backend.subscribe(channel).await {
                // The backend keeps the channel in its set and applies it once it reconnects,
                // so a broker started while Redis is down still gets its `send`s later.
                tracing::warn!(backend = %b.name, error = %e, "inbox subscription pending until the backend is reachable");
            }
        }
        Ok(())
    }

    /// Moves messages from backend `backend`'s stream to local subscribers until it ends.
    async fn dispatch(&self, backend: usize, incoming: &mut Incoming) {
        let received = Metrics::received(&self.backends[backend].name);
        let mut batch = Vec::with_capacity(DISPATCH_BATCH);
        let mut touched = Vec::new();
        loop {
            batch.clear();
            if incoming.recv_many(&mut batch, DISPATCH_BATCH).await == 0 {
                return;
            }
            received.increment(batch.len() as u64);
            // Queue the whole batch first, then write once per connection.
            for message in batch.drain(..) {
                self.queue(backend, message, &mut touched);
            }
            kick_all(&mut touched);
        }
    }

    /// Queues one backend message to every local subscriber of its topic and writes it out
    /// (public so benches can drive fan-out without a backend).
    pub(crate) fn deliver(&self, backend: usize, message: Message) {
        let mut touched = Vec::new();
        self.queue(backend, message, &mut touched);
        kick_all(&mut touched);
    }

    /// Queues one message; outboxes that went from empty to non-empty are added to `touched`
    /// and must be kicked.
    fn queue(&self, backend: usize, message: Message, touched: &mut Vec<Arc<Outbox>>) {
        if let Some((inbox_backend, inbox)) = &self.inbox {
            if *inbox_backend == backend && message.channel == *inbox {
                self.deliver_direct(&message.payload);
                return;
            }
        }
        let Message { channel, payload, position } = message;
        let key = TopicKey { backend, channel };
        let topic = self.topic(&key);
        let Some(topic) = topic else {
            self.metrics.dropped_no_subscriber.increment(1);
            return;
        };
        let Some(p) = position else {
            self.fan_out(&topic, &payload, None, touched);
            return;
        };
        let mut cursor = topic.cursor();
        match cursor.admit(&p) {
            healing::Admit::Deliver => self.fan_out(&topic, &payload, Some(&p), touched),
            healing::Admit::Duplicate => {}
            admit => {
                let held =
                    Message { channel: key.channel.clone(), payload, position: Some(p.clone()) };
                if !cursor.hold(held) {
                    // Too much behind one heal: give it up, and the clients recover instead.
                    self.unhealable(&topic, &key, &p);
                    cursor.abandon(p);
                } else if admit == healing::Admit::Heal {
                    let _ = self.heal_requests.send(key);
                }
            }
        }
    }

    fn topic(&self, key: &TopicKey) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Frames a message once (a history message gets its position here, once per node) and
    /// queues the same bytes to every subscriber of `topic`.
    fn fan_out(
        &self,
        topic: &Topic,
        payload: &[u8],
        position: Option<&Position>,
        touched: &mut Vec<Arc<Outbox>>,
    ) {
        let frame = match position {
            None => wire::text_frame(payload),
            Some(p) => wire::text_frame(&position::with_position(payload, p)),
        };
        let subscribers = topic.subscribers();
        let mut queued = 0;
        for subscriber in subscribers.values() {
            if subscriber.has(position) {
                continue;
            }
            let outbox = &subscriber.outbox;
            match outbox.push(frame.clone()) {
                Push::Queued => queued += 1,
                Push::First => {
                    queued += 1;
                    touched.push(outbox.clone());
                }
                Push::Overflowed => self.metrics.slow_consumers.increment(1),
                Push::Closed => self.metrics.dropped_closed.increment(1),
            }
        }
        drop(subscribers);
        self.metrics.delivered.increment(queued);
    }

    fn deliver_direct(&self, payload: &Bytes) {
        match InboxMessage::decode(payload) {
            Ok(m) => {
                self.push_to(m.to, wire::text_frame(&m.frame));
            }
            Err(e) => {
                // Only nodes publish to an inbox (no route reaches the reserved prefix), so this
                // is a node of another version, or something else writing into Redis.
                self.metrics.dropped_malformed.increment(1);
                tracing::warn!(error = %e, "dropped a malformed message on this node's inbox");
            }
        }
    }

    /// Queues a frame to one local connection; false when it does not exist.
    pub(crate) fn push_to(&self, conn: ConnKey, frame: Bytes) -> bool {
        match self.outbox(conn) {
            Some(o) => {
                match o.send(frame) {
                    Push::Queued | Push::First => self.metrics.delivered.increment(1),
                    Push::Overflowed => self.metrics.slow_consumers.increment(1),
                    Push::Closed => self.metrics.dropped_closed.increment(1),
                }
                true
            }
            None => false,
        }
    }

    /// Publishes `payload` (an encoded server frame) to a backend channel.
    pub(crate) async fn publish(
        &self,
        backend: usize,
        channel: &str,
        payload: Bytes,
    ) -> Result<u64, BackendError> {
        self.backend_of(backend)?.backend.publish(channel, payload).await
    }

    /// Sends a `direct` frame to connection `conn` on node `node`; false when it is known not to
    /// exist.
    pub(crate) async fn send_direct(
        &self,
        node: &str,
        conn: ConnKey,
        frame: Bytes,
    ) -> Result<bool, BackendError> {
        if node == &*self.node {
            return Ok(self.push_to(conn, wire::text_frame(&frame)));
        }
        let Some((backend, _)) = &self.inbox else {
            return Ok(false);
        };
        let payload = InboxMessage { to: conn, frame }.encode();
        // Nobody on the inbox channel: that node does not exist (or is gone), so neither does
        // the connection. Whether the connection exists on a live node is not knowable here.
        let reached =
            self.backends[*backend].backend.publish(&inbox_channel(node), payload).await?;
        Ok(reached > 0)
    }

    /// Registers a connection under `conn`; false (and nothing changes) when the key is taken.
    pub(crate) fn register(&self, conn: ConnKey, outbox: Arc<Outbox>) -> bool {
        let mut connections = self.connections.write().unwrap_or_else(|e| e.into_inner());
        match connections.entry(conn) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(outbox);
                true
            }
        }
    }

    /// The outbox of local connection `conn` (tests watch a connection's backlog through it).
    pub(crate) fn outbox(&self, conn: ConnKey) -> Option<Arc<Outbox>> {
        self.connections.read().unwrap_or_else(|e| e.into_inner()).get(&conn).cloned()
    }

    pub(crate) fn deregister(&self, conn: ConnKey) {
        let mut connections = self.connections.write().unwrap_or_else(|e| e.into_inner());
        connections.remove(&conn);
        shrink_if_sparse(&mut connections);
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Adds `conn` to a topic; subscribes the backend when it is the topic's first subscriber.
    pub(crate) async fn subscribe(
        &self,
        key: &TopicKey,
        conn: ConnKey,
        outbox: &Arc<Outbox>,
    ) -> Result<(), BackendError> {
        let backend = self.backend_of(key.backend)?;
        let topic = {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            let topic = topics
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Topic {
                        subscribers: Mutex::new(HashMap::new()),
                        cursor: Mutex::default(),
                        last_read: tokio::sync::Mutex::new(None),
                        backend_subscribed: tokio::sync::Mutex::new(false),
                    })
                })
                .clone();
            topic.subscribers().insert(conn, Subscriber::new(outbox.clone()));
            topic
        };
        let mut subscribed = topic.backend_subscribed.lock().await;
        if *subscribed {
            return Ok(());
        }
        match backend.backend.subscribe(&key.channel).await {
            Ok(()) => {
                *subscribed = true;
                self.metrics.backend_subscriptions.increment(1.0);
                Ok(())
            }
            Err(e) => {
                // A backend may keep a channel whose subscribe timed out, to apply it after a
                // reconnect; nobody here wants it any more.
                let _ = backend.backend.unsubscribe(&key.channel).await;
                drop(subscribed);
                self.remove_subscriber(key, &topic, conn).await;
                Err(e)
            }
        }
    }

    /// Removes `conn` from a topic; unsubscribes the backend when it was the last one.
    pub(crate) async fn unsubscribe(&self, key: &TopicKey, conn: ConnKey) {
        let topic = self.topics.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        if let Some(topic) = topic {
            self.remove_subscriber(key, &topic, conn).await;
        }
    }

    async fn remove_subscriber(&self, key: &TopicKey, topic: &Arc<Topic>, conn: ConnKey) {
        let now_empty = {
            let mut subs = topic.subscribers();
            subs.remove(&conn);
            subs.is_empty()
        };
        if !now_empty {
            return;
        }
        let mut subscribed = topic.backend_subscribed.lock().await;
        // Someone may have joined while we waited for the lock; they keep the subscription.
        if !topic.subscribers().is_empty() {
            return;
        }
        if *subscribed {
            if let Some(b) = self.backends.get(key.backend) {
                if let Err(e) = b.backend.unsubscribe(&key.channel).await {
                    // The backend drops its record of the channel either way, so nothing
                    // is delivered for it; a failed unsubscribe only costs Redis traffic.
                    tracing::warn!(backend = %b.name, channel = %key.channel, error = %e, "backend unsubscribe failed");
                }
            }
            *subscribed = false;
            self.metrics.backend_subscriptions.decrement(1.0);
        }
        drop(subscribed);
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topic.subscribers().is_empty() {
            if let Some(current) = topics.get(key) {
                if Arc::ptr_eq(current, topic) {
                    topics.remove(key);
                    shrink_if_sparse(&mut topics);
                }
            }
        }
    }

    /// Whether every backend is reachable and its dispatch task runs (drives `/readyz`).
    pub(crate) async fn ready(&self) -> Result<(), String> {
        for (b, running) in self.backends.iter().zip(&self.running) {
            if !running.get() {
                return Err(format!("backend {}: dispatch task is not running", b.name));
            }
            b.backend.ready().await.map_err(|e| format!("backend {}: {e}", b.name))?;
        }
        Ok(())
    }

    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        for b in &self.backends {
            b.backend.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_connection_key_is_refused_so_the_caller_draws_again() {
        let hub = Hub::new(Arc::from("n"), Vec::new(), None, Metrics::new());
        let first = Arc::new(Outbox::new(8, false, None));
        assert!(hub.register(7, first.clone()));
        assert!(!hub.register(7, Arc::new(Outbox::new(8, false, None))));
        let kept = hub.outbox(7).expect("registered");
        assert!(Arc::ptr_eq(&kept, &first), "the live connection keeps its key");
        hub.deregister(7);
        assert!(hub.outbox(7).is_none());
    }
}
