//! [`NatsBackend`]: one client connection (async-nats reconnects it, to any member of a
//! cluster), one NATS subscription per subscribed backend channel, and a forwarding task per
//! subscription that hands its messages to the incoming stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::connection::State;
use async_nats::{Client, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use switchyard_backend::{Backend, BackendError, Incoming, Message};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::options::{redact, NatsOptions};
use crate::receipts::Receipts;
use crate::subject::to_subject;

pub(crate) const KIND: &str = "nats";

/// The `nats` backend. See [`NatsBackend::connect`].
pub struct NatsBackend {
    client: Client,
    receipts: Arc<Receipts>,
    options: NatsOptions,
    /// The seed URLs without credentials, for messages (errors reach clients and logs).
    servers: String,
    /// Taken at shutdown so the incoming stream ends once the forwarders have stopped.
    tx: Mutex<Option<mpsc::Sender<Message>>>,
    incoming: Mutex<Option<Incoming>>,
    /// The subscribed channels: one NATS subscription each, however many local clients hold
    /// the channel (the hub counts those and calls `subscribe` once).
    subscriptions: Mutex<HashMap<Arc<str>, Forwarder>>,
}

/// Stops one subscription's forwarding task: the task unsubscribes, then answers.
struct Forwarder {
    stop: oneshot::Sender<oneshot::Sender<()>>,
}

impl NatsBackend {
    /// Builds the backend; the connection is made in the background.
    ///
    /// Fails only for invalid options (no server, a malformed URL, half a client
    /// certificate), as [`BackendError::Invalid`]. Unreachable servers are *not* an error: the
    /// backend starts degraded, fails [`Backend::ready`], answers `publish` and `subscribe`
    /// with `Unavailable`, and keeps trying every seed (and every member the servers told it
    /// of) until one answers, like the Redis backends.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn connect(options: NatsOptions) -> Result<NatsBackend, BackendError> {
        let addrs = options.addrs()?;
        let servers = options.servers.iter().map(|s| redact(s)).collect::<Vec<_>>().join(", ");
        let client = options
            .connect_options()?
            .connect(addrs)
            .await
            .map_err(|e| BackendError::Invalid(format!("nats ({servers}): {e}")))?;
        let receipts = Receipts::start(&client).await?;
        let (tx, incoming) = Incoming::channel(options.incoming_capacity);
        Ok(NatsBackend {
            client,
            receipts,
            options,
            servers,
            tx: Mutex::new(Some(tx)),
            incoming: Mutex::new(Some(incoming)),
            subscriptions: Mutex::new(HashMap::new()),
        })
    }

    /// Like [`NatsBackend::connect`], then waits up to `within` for [`Backend::ready`].
    pub async fn connect_and_wait(
        options: NatsOptions,
        within: std::time::Duration,
    ) -> Result<NatsBackend, BackendError> {
        let backend = NatsBackend::connect(options).await?;
        crate::wait_ready(&backend, within).await?;
        Ok(backend)
    }

    /// The underlying client (tests read which server it is connected to).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.options.command_timeout
    }

    /// `Unavailable` at once while disconnected: commands sent now would wait in async-nats's
    /// queue for the reconnect, and a caller must not wait that long.
    fn connected(&self) -> Result<(), BackendError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(self.unreachable()),
        }
    }

    fn unreachable(&self) -> BackendError {
        BackendError::Unavailable(format!("no NATS server reachable ({})", self.servers))
    }

    /// Waits until the server has processed every command sent so far.
    async fn barrier(&self) -> Result<(), BackendError> {
        self.receipts.round_trip(&self.client, self.deadline(), |_| async { Ok(()) }).await?;
        Ok(())
    }

    /// On a cluster, gives the other members a moment to learn of a subscription change from
    /// the member this node is connected to. Their routes carry it at once, but nothing tells
    /// a client when it has arrived; without the pause, a message published through another
    /// member right after `subscribe` resolved could miss this node (it did in the cluster
    /// conformance run, about one run in three).
    async fn settle_routes(&self) {
        let clustered = self.client.try_server_info().is_some_and(|i| i.cluster.is_some());
        if clustered && !self.options.route_settle.is_zero() {
            tokio::time::sleep(self.options.route_settle).await;
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Message>, BackendError> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.clone().ok_or_else(|| BackendError::Unavailable("nats backend shut down".into()))
    }
}

#[async_trait]
impl Backend for NatsBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Publishes with the round trip's reply subject, so the server tells "no subscriber" by
    /// a 503 before the echo ([`crate::receipts`]): the answer is 0 or 1, never more.
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<u64, BackendError> {
        self.connected()?;
        let subject = to_subject(channel);
        let client = &self.client;
        let reached = self
            .receipts
            .round_trip(client, self.deadline(), |reply| async move {
                client.publish_with_reply(subject, reply, payload).await.map_err(publish_error)
            })
            .await?;
        Ok(u64::from(reached))
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BackendError> {
        self.connected()?;
        let known = {
            let subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            subscriptions.contains_key(channel)
        };
        if !known {
            let subscriber =
                self.client.subscribe(to_subject(channel)).await.map_err(|e| {
                    BackendError::Invalid(format!("nats subscribe {channel:?}: {e}"))
                })?;
            let channel: Arc<str> = Arc::from(channel);
            let tx = self.sender()?;
            let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            // Two concurrent first subscribes: the loser's subscription is dropped, which
            // unsubscribes it, and both wait for the winner's below.
            if let std::collections::hash_map::Entry::Vacant(slot) =
                subscriptions.entry(channel.clone())
            {
                let (stop, stopped) = oneshot::channel();
                tokio::spawn(forward(channel, subscriber, tx, stopped));
                slot.insert(Forwarder { stop });
            }
        }
        // Also for a channel already known: its SUB may still be on its way.
        self.barrier().await?;
        if !known {
            self.settle_routes().await;
        }
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BackendError> {
        let removed = {
            let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            subscriptions.remove(channel)
        };
        if let Some(forwarder) = removed {
            let (done, unsubscribed) = oneshot::channel();
            if forwarder.stop.send(done).is_ok() {
                // The UNSUB is queued once the task answers; a task that already ended (the
                // client closed) has nothing left to unsubscribe.
                let _ = tokio::time::timeout_at(self.deadline(), unsubscribed).await;
            }
        }
        // While disconnected the server has dropped this connection's subscriptions already,
        // and async-nats restores only the ones still held.
        if self.connected().is_err() {
            return Ok(());
        }
        self.barrier().await?;
        self.settle_routes().await;
        Ok(())
    }

    fn take_incoming(&self) -> Option<Incoming> {
        self.incoming.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn counts_nodes(&self) -> bool {
        false
    }

    async fn ready(&self) -> Result<(), BackendError> {
        self.connected()
    }

    async fn shutdown(&self) {
        let forwarders: Vec<Forwarder> = {
            let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            subscriptions.drain().map(|(_, f)| f).collect()
        };
        for forwarder in forwarders {
            let (done, _) = oneshot::channel();
            let _ = forwarder.stop.send(done);
        }
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.client.drain().await;
    }
}

/// A payload over the server's limit can never be sent; anything else may work later.
fn publish_error(e: async_nats::PublishError) -> BackendError {
    match e.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded
        | async_nats::client::PublishErrorKind::InvalidSubject => {
            BackendError::Invalid(format!("nats: {e}"))
        }
        _ => BackendError::Unavailable(format!("nats: {e}")),
    }
}

/// Hands one subscription's messages to the incoming stream, in arrival order, until told to
/// stop (then unsubscribes and answers) or the incoming stream is gone.
async fn forward(
    channel: Arc<str>,
    mut subscriber: Subscriber,
    tx: mpsc::Sender<Message>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    loop {
        tokio::select! {
            biased;
            request = &mut stop => {
                let _ = subscriber.unsubscribe().await;
                if let Ok(done) = request {
                    let _ = done.send(());
                }
                return;
            }
            message = subscriber.next() => {
                let Some(message) = message else { return };
                // Status messages (none are expected on a plain subscription) carry no frame.
                if message.status.is_some() {
                    continue;
                }
                if tx.send(Message::new(channel.clone(), message.payload)).await.is_err() {
                    return;
                }
            }
        }
    }
}
