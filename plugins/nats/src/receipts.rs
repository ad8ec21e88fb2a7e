//! Round trips through the server: how the backend knows that the server has taken a publish,
//! a subscribe or an unsubscribe, and whether a publish found any subscriber.
//!
//! async-nats's `flush` only writes the socket; it does not wait for the server. A server
//! handles one connection's commands in order, though, so the backend sends a small *echo*
//! after the command, on a subject of its own that it subscribes to, and waits for the echo to
//! come back: when it does, the server has processed everything sent before it.
//!
//! For a publish the same subject doubles as the reply subject. When a message with a reply
//! subject finds no subscriber anywhere in the cluster, the server answers the reply subject
//! with a `503 no responders` status (async-nats asks for that in its CONNECT), before it
//! handles the echo. So when the echo arrives, a preceding 503 means "reached no node". Core
//! NATS does not say how many nodes a message reached, only none or some: see
//! [`Backend::counts_nodes`](switchyard_backend::Backend::counts_nodes).
//!
//! Every receipt goes through one subscription (`<inbox>.*`, one token per round trip), read
//! by one task in arrival order, which is what makes "a 503 before the echo" meaningful.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::{Client, StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use switchyard_backend::BackendError;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The receipts of one client connection.
pub(crate) struct Receipts {
    /// `<inbox>.`: the round trip's number follows.
    prefix: String,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

struct Pending {
    no_responders: bool,
    /// Receives whether the message reached any subscriber.
    done: oneshot::Sender<bool>,
}

/// Removes a round trip from the pending set when its caller stops waiting (timeout or
/// cancellation), so late receipts find nothing and nothing accumulates.
struct Ticket<'a> {
    receipts: &'a Receipts,
    seq: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.receipts.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.seq);
    }
}

impl Receipts {
    /// Subscribes to the receipt subject and starts the task that reads it. The subscription
    /// is queued even while the client is still connecting, and async-nats restores it after
    /// every reconnect like any other.
    pub(crate) async fn start(client: &Client) -> Result<Arc<Receipts>, BackendError> {
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| BackendError::Unavailable(format!("nats: {e}")))?;
        let receipts = Arc::new(Receipts {
            prefix: format!("{inbox}."),
            next: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
        });
        tokio::spawn(read(Arc::downgrade(&receipts), subscriber));
        Ok(receipts)
    }

    /// Runs `send` (which puts one command on the connection, given this round trip's reply
    /// subject), then the echo, and waits for the echo until `deadline`. Answers whether the
    /// command, a publish with that reply subject, reached any subscriber.
    pub(crate) async fn round_trip<F, Fut>(
        &self,
        client: &Client,
        deadline: Instant,
        send: F,
    ) -> Result<bool, BackendError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), BackendError>>,
    {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, Pending { no_responders: false, done: tx });
        let _ticket = Ticket { receipts: self, seq };
        let subject = format!("{}{seq}", self.prefix);
        let waited = tokio::time::timeout_at(deadline, async {
            send(subject.clone()).await?;
            client
                .publish(subject, Bytes::new())
                .await
                .map_err(|e| BackendError::Unavailable(format!("nats: {e}")))?;
            rx.await.map_err(|_| BackendError::Unavailable("nats client closed".into()))
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(BackendError::Unavailable("nats server did not answer in time".into())),
        }
    }

    fn on_message(&self, subject: &str, status: Option<StatusCode>) {
        let Some(seq) = subject.strip_prefix(&self.prefix).and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if status == Some(StatusCode::NO_RESPONDERS) {
            if let Some(p) = pending.get_mut(&seq) {
                p.no_responders = true;
            }
        } else if status.is_none() {
            if let Some(p) = pending.remove(&seq) {
                let _ = p.done.send(!p.no_responders);
            }
        }
    }
}

/// Reads receipts until the backend is dropped or the client closes.
async fn read(receipts: std::sync::Weak<Receipts>, mut subscriber: Subscriber) {
    while let Some(message) = subscriber.next().await {
        let Some(receipts) = receipts.upgrade() else { return };
        receipts.on_message(message.subject.as_str(), message.status);
    }
}
