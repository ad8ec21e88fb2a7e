//! Fixtures for the criterion benches in `benches/`, which live outside the crate and so may
//! use only its public API. Not part of the supported API.

use std::sync::Arc;

use bytes::Bytes;
use switchyard_backend::{Backend, Message};

use crate::hub::{Hub, HubBackend, TopicKey};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// One hub with `subscribers` socketless outboxes on one topic of one backend.
pub struct Fanout {
    hub: Hub,
    topic: TopicKey,
    outboxes: Vec<Arc<Outbox>>,
    payload: Bytes,
    drained: Vec<u8>,
}

impl Fanout {
    /// Subscribes `subscribers` outboxes to `room.42` on `backend`.
    pub async fn new(backend: Arc<dyn Backend>, subscribers: usize) -> Fanout {
        let hub = Hub::new(
            Arc::from("bench"),
            vec![HubBackend { name: Arc::from("local"), backend }],
            None,
            Metrics::new(),
        );
        let topic = TopicKey { backend: 0, channel: Arc::from("room.42") };
        let outboxes: Vec<Arc<Outbox>> =
            (0..subscribers).map(|_| Arc::new(Outbox::new(1 << 20, false, None))).collect();
        for (i, o) in outboxes.iter().enumerate() {
            if let Err(e) = hub.subscribe(&topic, i as u64, o).await {
                panic!("bench fixture: subscribe failed: {e}");
            }
        }
        let payload = Bytes::from(
            r#"{"op":"message","channel":"room.42","data":{"text":"hello, room"},"user":"alice"}"#,
        );
        Fanout { hub, topic, outboxes, payload, drained: Vec::new() }
    }

    /// Delivers one message to every subscriber, then drains the outboxes so the next call
    /// measures the same work. Needs a runtime entered (kicks of many outboxes are spawned).
    pub fn deliver_and_drain(&mut self) {
        let message = Message::new(self.topic.channel.clone(), self.payload.clone());
        self.hub.deliver(0, message);
        for o in &self.outboxes {
            o.take(&mut self.drained);
            self.drained.clear();
        }
    }
}
