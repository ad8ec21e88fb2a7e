//! Handling what Redis sends on a subscriber connection: messages, confirmations, pushes
//! and errors.

use bytes::Bytes;
use switchyard_backend::{BackendError, Message};
use tokio::sync::mpsc::error::TrySendError;

use super::{Actor, Mode, Pending};
use crate::dial::Conn;
use crate::resp::Frame;

impl Actor {
    pub(super) async fn on_frame(&mut self, frame: Frame, conn: &mut Conn) -> Result<(), String> {
        match frame {
            Frame::Array(Some(items)) => {
                let kind = items.first().and_then(Frame::as_bytes).cloned().unwrap_or_default();
                let channel = items.get(1).and_then(Frame::as_bytes).cloned().unwrap_or_default();
                match &kind[..] {
                    b"message" | b"smessage" => {
                        let Some(payload) = items.get(2).and_then(Frame::as_bytes) else {
                            return Ok(());
                        };
                        self.deliver(&channel, payload.clone()).await;
                    }
                    b"subscribe" | b"ssubscribe" => self.confirmed(&channel),
                    b"unsubscribe" | b"sunsubscribe" => self.unsubscribed(&channel, conn).await?,
                    b"pong" => self.ponged(),
                    _ => tracing::debug!(addr = %self.addr, "unexpected frame on subscriber"),
                }
            }
            Frame::Simple(s) if &s[..] == b"PONG" => self.ponged(),
            Frame::Error(error) => self.error(error),
            other => tracing::debug!(addr = %self.addr, ?other, "unexpected frame on subscriber"),
        }
        Ok(())
    }

    async fn deliver(&mut self, channel: &[u8], payload: Bytes) {
        let Ok(name) = std::str::from_utf8(channel) else { return };
        // Only channels still in the set: after `unsubscribe` resolves nothing more arrives,
        // even if Redis had already queued a message for us.
        let Some((name, _)) = self.desired.get_key_value(name) else { return };
        self.metrics.messages_in.increment(1);
        // One byte compared on the ordinary path; only history messages are parsed.
        let message = if crate::history::has_header(&payload) {
            match crate::history::split_header(&payload) {
                Ok((position, payload)) => Message { channel: name.clone(), payload, position },
                Err(why) => {
                    // Another publisher's bug, not ours to crash on: drop it, say so once per
                    // message and count it.
                    tracing::warn!(addr = %self.addr, channel = %name, why,
                        "dropping a message with a malformed history header");
                    self.metrics.malformed.increment(1);
                    return;
                }
            }
        } else {
            Message::new(name.clone(), payload)
        };
        match self.incoming.try_send(message) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(message)) => {
                // The hub is behind. Awaiting pushes back on Redis (through TCP); the time
                // spent here is ours, not Redis's, so it must not make Redis look dead.
                self.health.pause();
                tokio::select! {
                    _ = self.incoming.send(message) => {}
                    _ = self.stop.cancelled() => {}
                }
                self.health.heard(!self.pending.is_empty());
            }
        }
    }

    fn confirmed(&mut self, channel: &[u8]) {
        let position = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Subscribe(c) if c.as_bytes() == channel));
        if let Some(i) = position {
            if let Some(Pending::Subscribe(c)) = self.pending.remove(i) {
                if let Some(state) = self.desired.get_mut(&c) {
                    state.confirmed = true;
                    for w in state.waiters.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                }
            }
        }
    }

    async fn unsubscribed(&mut self, channel: &[u8], conn: &mut Conn) -> Result<(), String> {
        let position = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Unsubscribe(c, _) if c.as_bytes() == channel));
        if let Some(i) = position {
            if let Some(Pending::Unsubscribe(_, Some(done))) = self.pending.remove(i) {
                let _ = done.send(Ok(()));
            }
            return Ok(());
        }
        // Not asked for: Redis dropped the subscription itself (in a cluster, the slot moved).
        let Ok(name) = std::str::from_utf8(channel) else { return Ok(()) };
        let Some((name, state)) = self.desired.remove_entry(name) else { return Ok(()) };
        match self.mode {
            Mode::Sharded => {
                tracing::info!(addr = %self.addr, channel = %name,
                    "redis moved a shard channel away; re-routing it");
                self.lost(name, state.waiters);
            }
            Mode::Plain => {
                let args = [self.mode.subscribe(), name.as_bytes()];
                self.request(conn, &args, Pending::Subscribe(name.clone())).await?;
                self.desired.insert(name, state);
                self.metrics.resubscribes.increment(1);
            }
        }
        Ok(())
    }

    /// A PONG answers the oldest PING out; the one that followed a re-subscribed set means the
    /// set is confirmed.
    fn ponged(&mut self) {
        let oldest = self.pending.iter().position(|p| matches!(p, Pending::Ping | Pending::Settle));
        if let Some(Pending::Settle) = oldest.and_then(|i| self.pending.remove(i)) {
            self.health.set_settled();
        }
    }

    /// An error answers the oldest pending command (errors carry no channel name).
    fn error(&mut self, error: String) {
        match self.pending.pop_front() {
            Some(Pending::Subscribe(channel)) => {
                let Some((channel, state)) = self.desired.remove_entry(&channel) else { return };
                let redirect = ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"]
                    .iter()
                    .any(|prefix| error.starts_with(prefix));
                if self.mode == Mode::Sharded && redirect {
                    tracing::debug!(addr = %self.addr, %channel, %error, "re-routing channel");
                    self.lost(channel, state.waiters);
                } else {
                    tracing::warn!(addr = %self.addr, %channel, %error, "redis refused subscribe");
                    for w in state.waiters {
                        let _ = w.send(Err(BackendError::Invalid(error.clone())));
                    }
                }
            }
            Some(Pending::Unsubscribe(_, done)) => {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
            }
            Some(Pending::Settle) => self.health.set_settled(),
            Some(Pending::Ping) | None => {
                tracing::debug!(addr = %self.addr, %error, "redis error on subscriber connection")
            }
        }
    }
}
