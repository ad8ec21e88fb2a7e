//! `kind = "redis"`: one standalone Redis server.
//!
//! Publishes go over a few multiplexed publisher connections (pipelined); subscriptions are
//! spread over a fixed number of subscriber connections by a hash of the channel name, so each
//! channel is subscribed exactly once per backend instance.

use std::sync::{Arc, Mutex};

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_backend::{
    Backend, BackendError, Changes, Incoming, Member, Page, Position, Retention, Roster,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::history;
use crate::metrics::Metrics;
use crate::options::{Endpoint, RedisOptions};
use crate::presence;
use crate::publisher::Publisher;
use crate::slot::key_slot;
use crate::subscriber::{await_confirmation, Command, Mode, Sinks, SubscriberHandle};

/// The `redis` backend. See [`RedisBackend::connect`].
pub struct RedisBackend {
    options: RedisOptions,
    /// `host:port` for messages: the URL may carry a password, and errors reach clients.
    addr: String,
    publishers: Vec<Arc<Publisher>>,
    subscribers: Vec<SubscriberHandle>,
    incoming: Mutex<Option<Incoming>>,
    stop: CancellationToken,
}

pub(crate) const KIND: &str = "redis";

impl RedisBackend {
    /// Builds the backend and starts its connections in the background.
    ///
    /// Fails only for invalid options (a malformed URL, zero connections), as
    /// [`BackendError::Invalid`]. An unreachable Redis is *not* an error: the backend starts
    /// degraded, logs a warning, reconnects with backoff, answers `publish` with
    /// `Unavailable` and fails [`Backend::ready`] until Redis is reachable. Operators expect a
    /// broker to come up and heal when Redis comes back rather than crash-loop. Callers that
    /// want to fail fast can poll [`Backend::ready`] (or use [`RedisBackend::connect_and_wait`]).
    ///
    /// Must be called inside a tokio runtime.
    pub fn connect(options: RedisOptions) -> Result<RedisBackend, BackendError> {
        if options.subscriber_connections == 0 || options.publisher_connections == 0 {
            return Err(BackendError::Invalid(
                "redis backend needs at least one subscriber and one publisher connection".into(),
            ));
        }
        let endpoint = Endpoint::parse(&options.url, &options.connection.tls)?;
        let addr = endpoint.addr();
        let metrics = Metrics::new(KIND);
        let stop = CancellationToken::new();
        let (tx, incoming) = Incoming::channel(options.connection.incoming_capacity);
        let publishers = (0..options.publisher_connections)
            .map(|_| {
                Publisher::spawn(&endpoint, &options.connection, metrics.clone(), stop.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let subscribers = (0..options.subscriber_connections)
            .map(|_| {
                SubscriberHandle::spawn(
                    endpoint.clone(),
                    Mode::Plain,
                    options.connection.clone(),
                    Sinks { incoming: tx.clone(), events: None },
                    metrics.clone(),
                    stop.clone(),
                )
            })
            .collect();
        Ok(RedisBackend {
            options,
            addr,
            publishers,
            subscribers,
            incoming: Mutex::new(Some(incoming)),
            stop,
        })
    }

    /// Like [`RedisBackend::connect`], then waits up to `within` for [`Backend::ready`], for
    /// callers that prefer to fail fast when Redis is unreachable at start.
    pub async fn connect_and_wait(
        options: RedisOptions,
        within: std::time::Duration,
    ) -> Result<RedisBackend, BackendError> {
        let backend = RedisBackend::connect(options)?;
        crate::wait_ready(&backend, within).await?;
        Ok(backend)
    }

    fn shard(&self, channel: &str, n: usize) -> usize {
        usize::from(key_slot(channel.as_bytes())) % n
    }

    /// Queues `command` on the channel's subscriber connection, waiting for room no later
    /// than `deadline`.
    async fn queue(&self, channel: &str, command: Command, deadline: Instant) -> Queued {
        let subscriber = &self.subscribers[self.shard(channel, self.subscribers.len())];
        match tokio::time::timeout_at(deadline, subscriber.send(command)).await {
            Ok(true) if subscriber.is_connected() => Queued::Connected,
            Ok(true) => Queued::Disconnected,
            Ok(false) => Queued::Stopped,
            Err(_) => Queued::Full,
        }
    }
}

enum Queued {
    Connected,
    Disconnected,
    Stopped,
    /// The connection's queue stayed full until the deadline: it is not keeping up.
    Full,
}

#[async_trait]
impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<u64, BackendError> {
        // Without history nothing heals a message this node's own subscribers miss: while
        // their connection is re-subscribing, the publish is not known to reach them.
        let subscriber = &self.subscribers[self.shard(channel, self.subscribers.len())];
        if !subscriber.is_settled() {
            return Err(BackendError::Unavailable(format!(
                "redis {}: this node's subscriptions are not back yet",
                self.addr
            )));
        }
        let deadline = Instant::now() + self.options.connection.command_timeout;
        let publisher = &self.publishers[self.shard(channel, self.publishers.len())];
        let cmd = history::publish_cmd("PUBLISH", channel, &payload);
        match publisher.run(&cmd, deadline).await {
            Ok(reply) => crate::publisher::receivers(&reply),
            Err(e) => Err(e.into()),
        }
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
        let deadline = Instant::now() + self.options.connection.command_timeout;
        let call = history::publish_call(channel, &payload, retention, "PUBLISH")?;
        // The channel's own publisher connection, as for `publish`: publishes to one channel
        // stay in order on it.
        let publisher = &self.publishers[self.shard(channel, self.publishers.len())];
        history::parse_position(&call.run(publisher, deadline).await?)
    }

    async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        retention: Retention,
    ) -> Result<Page, BackendError> {
        let deadline = Instant::now() + self.options.connection.command_timeout;
        let call = history::read_call(channel, since, limit, retention)?;
        // Reads use the publisher connections too, not a pool: they are multiplexed, so a
        // read waits for no other command's reply, already connected and health-checked, and
        // a pool checkout would add its own round trip (or PING) per read, which is what made
        // deadpool lose to them for publishing. The channel's own connection also orders a
        // read after that channel's publishes sent before it.
        let publisher = &self.publishers[self.shard(channel, self.publishers.len())];
        history::parse_page(&call.run(publisher, deadline).await?)
    }

    fn has_presence(&self) -> bool {
        true
    }

    async fn presence_update(
        &self,
        channel: &str,
        add: &[Member],
        remove: &[Arc<str>],
        ttl: Duration,
    ) -> Result<Changes, BackendError> {
        let deadline = Instant::now() + self.options.connection.command_timeout;
        let call = presence::update_call(channel, add, remove, ttl)?;
        // On the publisher connections, like history reads (see there why not a pool).
        let publisher = &self.publishers[self.shard(channel, self.publishers.len())];
        presence::parse_changes(&call.run(publisher, deadline).await?)
    }

    async fn presence_read(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Roster, BackendError> {
        let deadline = Instant::now() + self.options.connection.command_timeout;
        let call = presence::read_call(channel, after, limit)?;
        let publisher = &self.publishers[self.shard(channel, self.publishers.len())];
        presence::parse_roster(&call.run(publisher, deadline).await?)
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BackendError> {
        let timeout = self.options.connection.command_timeout;
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let command = Command::Subscribe { channel: Arc::from(channel), waiters: vec![tx] };
        match self.queue(channel, command, deadline).await {
            Queued::Connected => await_confirmation(rx, deadline, timeout, "subscribe").await,
            // While the connection is down, say so at once instead of after the command
            // timeout; the channel stays in the set and is subscribed when it is back.
            Queued::Disconnected => Err(BackendError::Unavailable(format!(
                "redis {} is not connected; the subscription is applied when it is back",
                self.addr
            ))),
            Queued::Stopped => Err(BackendError::Unavailable("redis backend is shut down".into())),
            Queued::Full => Err(BackendError::Unavailable(format!(
                "subscribe: redis {} did not keep up within {timeout:?}",
                self.addr
            ))),
        }
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BackendError> {
        let timeout = self.options.connection.command_timeout;
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let command = Command::Unsubscribe { channel: Arc::from(channel), done: tx };
        match self.queue(channel, command, deadline).await {
            Queued::Connected | Queued::Disconnected => {
                await_confirmation(rx, deadline, timeout, "unsubscribe").await
            }
            Queued::Stopped => Ok(()),
            Queued::Full => Err(BackendError::Unavailable(format!(
                "unsubscribe: redis {} did not keep up within {timeout:?}",
                self.addr
            ))),
        }
    }

    fn take_incoming(&self) -> Option<Incoming> {
        self.incoming.lock().ok()?.take()
    }

    async fn ready(&self) -> Result<(), BackendError> {
        // Up means connected *and* Redis not owing an answer for longer than the command
        // timeout, so a frozen Redis turns this false within that timeout. A subscriber
        // connection also has to have its channels confirmed again (settled): until then
        // `publish` answers `Unavailable`, and ready must not promise more than publish does.
        let limit = self.options.connection.command_timeout;
        let subscribers =
            self.subscribers.iter().filter(|s| s.is_up(limit) && s.is_settled()).count();
        let publishers = self.publishers.iter().filter(|p| p.is_up()).count();
        if subscribers == self.subscribers.len() && publishers == self.publishers.len() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(format!(
                "redis {}: {subscribers}/{} subscriber and {publishers}/{} publisher connections up and answering",
                self.addr,
                self.subscribers.len(),
                self.publishers.len()
            )))
        }
    }

    async fn shutdown(&self) {
        // Stops the publishers and the subscriber tasks alike.
        self.stop.cancel();
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
