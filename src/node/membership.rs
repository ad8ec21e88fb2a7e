//! A connection's place in the hub: its key, its outbox, and the topics it holds.
//!
//! [`Membership::leave`] gives everything back in order (socket first, then the backend
//! unsubscribes, then the key). A session that panics or is dropped mid-await never gets to
//! call it, so `Drop` does the same without awaiting: the key and the outbox go at once and
//! the unsubscribes run in a spawned task. Either way nothing stays registered to a dead
//! connection.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_backend::{BackendError, Position, Retention};

use super::Node;
use crate::hub::{ConnKey, Settled, TopicKey};
use crate::outbox::Outbox;

pub(crate) struct Membership {
    node: Arc<Node>,
    key: ConnKey,
    outbox: Arc<Outbox>,
    /// How many of this connection's client channels share each topic.
    topics: HashMap<TopicKey, usize>,
}

impl Membership {
    pub(super) fn new(node: Arc<Node>, outbox: Arc<Outbox>) -> Membership {
        // 64 random bits collide with a live connection next to never; a collision re-draws,
        // so connection ids cannot be guessed from one another and are never shared.
        let key = loop {
            let key = rand::random::<ConnKey>();
            if node.hub.register(key, outbox.clone()) {
                break key;
            }
        };
        node.metrics.connections.increment(1.0);
        node.metrics.connections_total.increment(1);
        Membership { node, key, outbox, topics: HashMap::new() }
    }

    pub(crate) fn key(&self) -> ConnKey {
        self.key
    }

    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Takes one reference on a topic, subscribing through the hub on the first.
    pub(crate) async fn hold(&mut self, topic: &TopicKey) -> Result<(), BackendError> {
        if let Some(n) = self.topics.get_mut(topic) {
            *n += 1;
            return Ok(());
        }
        self.node.hub.subscribe(topic, self.key, &self.outbox).await?;
        self.topics.insert(topic.clone(), 1);
        Ok(())
    }

    /// Takes the first reference on a topic with live messages held back in a buffer until
    /// [`Membership::promote`]; None when the topic is held already (its messages flow).
    pub(crate) async fn hold_buffered(
        &mut self,
        topic: &TopicKey,
    ) -> Result<Option<Arc<Outbox>>, BackendError> {
        if let Some(n) = self.topics.get_mut(topic) {
            *n += 1;
            return Ok(None);
        }
        let max_bytes = self.node.server().outbound_queue_bytes;
        let buffer = self.node.hub.subscribe_buffered(topic, self.key, max_bytes).await?;
        self.topics.insert(topic.clone(), 1);
        Ok(Some(buffer))
    }

    /// Ends the hold-back: the outbox gets what `seam` makes of the buffered frames (see
    /// `Hub::promote`), then every live message.
    pub(crate) fn promote(
        &self,
        topic: &TopicKey,
        retention: Retention,
        seam: impl FnOnce(Vec<Bytes>, Option<Position>) -> Result<Settled, Vec<Bytes>>,
    ) -> bool {
        self.node.hub.promote(topic, self.key, &self.outbox, retention, seam)
    }

    /// Drops one reference on a topic, unsubscribing through the hub on the last.
    pub(crate) async fn release(&mut self, topic: &TopicKey) {
        match self.topics.get_mut(topic) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.topics.remove(topic);
                self.node.hub.unsubscribe(topic, self.key).await;
            }
            None => {}
        }
    }

    /// Leaves the hub: lets go of the socket first (the backend calls may take a while), then
    /// unsubscribes every topic; `Drop` deregisters the key.
    pub(crate) async fn leave(mut self) {
        self.outbox.detach();
        let topics: Vec<TopicKey> = self.topics.drain().map(|(t, _)| t).collect();
        for topic in topics {
            self.node.hub.unsubscribe(&topic, self.key).await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.outbox.detach();
        self.node.hub.deregister(self.key);
        self.node.metrics.connections.decrement(1.0);
        if self.topics.is_empty() {
            return;
        }
        // Not left in order (a panic, or a task dropped mid-await): unsubscribe in the
        // background so the topics do not keep their backend subscriptions for nobody.
        let topics: Vec<TopicKey> = self.topics.drain().map(|(t, _)| t).collect();
        let (node, key) = (self.node.clone(), self.key);
        tracing::warn!(
            connection = key,
            topics = topics.len(),
            "connection ended without leaving; unsubscribing in the background"
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for topic in topics {
                    node.hub.unsubscribe(&topic, key).await;
                }
            });
        }
    }
}
