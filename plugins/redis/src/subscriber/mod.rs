//! One subscriber connection: a task that owns a socket to one Redis server and the set of
//! channels subscribed on it, and re-applies that set (one command per channel) after every
//! reconnect.
//!
//! `Plain` connections use SUBSCRIBE (standalone Redis), `Sharded` ones SSUBSCRIBE (one master
//! of a cluster). A sharded connection hands a channel back to its owner (the cluster
//! subscription manager) as [`Event::Lost`] when Redis says the channel is not, or no longer,
//! served here: a `MOVED` reply, or a `sunsubscribe` pushed after a slot migrated away.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchyard_backend::backoff::Backoff;
use switchyard_backend::{BackendError, Message};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dial::{connect, send, Conn};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::options::{ConnectionOptions, Endpoint};
mod replies;

/// Capacity of a subscriber task's command queue (and of the cluster manager's request queue).
/// Bounded so that a task that cannot keep up (its Redis is frozen, or it is blocked handing
/// messages to a slow hub) pushes back on its callers instead of queueing without limit:
/// `subscribe`/`unsubscribe` wait for room only until their command deadline and then answer
/// `Unavailable`. Each caller has one command in flight, so the queue holds about as many
/// commands as there are concurrent callers; 1024 absorbs bursts (a hub re-subscribing many
/// channels at once) without ever being the bottleneck of a healthy connection.
pub(crate) const COMMAND_QUEUE: usize = 1024;

/// Answers one `subscribe`/`unsubscribe` call once Redis confirmed it.
pub(crate) type Waiter = oneshot::Sender<Result<(), BackendError>>;

/// Which pub/sub flavour a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Plain,
    Sharded,
}

impl Mode {
    fn subscribe(self) -> &'static [u8] {
        match self {
            Mode::Plain => b"SUBSCRIBE",
            Mode::Sharded => b"SSUBSCRIBE",
        }
    }
    fn unsubscribe(self) -> &'static [u8] {
        match self {
            Mode::Plain => b"UNSUBSCRIBE",
            Mode::Sharded => b"SUNSUBSCRIBE",
        }
    }
}

/// Requests to a subscriber connection task.
pub(crate) enum Command {
    /// Subscribe (idempotent); every waiter is answered once Redis confirmed.
    Subscribe { channel: Arc<str>, waiters: Vec<Waiter> },
    /// Unsubscribe; `done` is answered once Redis confirmed (or at once while disconnected).
    Unsubscribe { channel: Arc<str>, done: Waiter },
    /// Drop the channel here and hand it back as [`Event::Lost`] (its slot has a new owner).
    Release { channel: Arc<str> },
}

/// What a sharded connection tells its owner.
pub(crate) enum Event {
    /// The channel is no longer subscribed here and must be routed again.
    Lost { from: Arc<str>, channel: Arc<str>, waiters: Vec<Waiter> },
    /// The connection dropped; it reconnects by itself, but the topology may have changed.
    Down { from: Arc<str> },
}

/// The handle to a running subscriber connection task. The task stops (handing every channel
/// back as [`Event::Lost`]) when its `stop` token is cancelled: a token rather than a queued
/// command, so stopping never waits behind a full queue and works from `Drop`.
pub(crate) struct SubscriberHandle {
    commands: mpsc::Sender<Command>,
    health: Arc<Health>,
    stop: CancellationToken,
}

/// Where a subscriber task's messages and events go.
pub(crate) struct Sinks {
    /// Messages for the hub.
    pub(crate) incoming: mpsc::Sender<Message>,
    /// Events for the cluster manager (sharded connections only). Unbounded on purpose: the
    /// manager also sends to this task, and awaiting each other could deadlock; what flows
    /// here is bounded anyway (one `Lost` per subscribed channel, one `Down` per reconnect).
    pub(crate) events: Option<mpsc::UnboundedSender<Event>>,
}

impl SubscriberHandle {
    pub(crate) fn spawn(
        endpoint: Endpoint,
        mode: Mode,
        options: ConnectionOptions,
        sinks: Sinks,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> SubscriberHandle {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let health = Arc::new(Health::default());
        let Sinks { incoming, events } = sinks;
        let actor = Actor {
            addr: Arc::from(endpoint.addr()),
            endpoint,
            mode,
            backoff: Backoff::new(options.reconnect_min, options.reconnect_max),
            options,
            commands: rx,
            incoming,
            events,
            metrics,
            health: health.clone(),
            stop: stop.clone(),
            desired: HashMap::new(),
            pending: VecDeque::new(),
        };
        tokio::spawn(actor.run());
        SubscriberHandle { commands: tx, health, stop }
    }

    /// Queues a command, waiting for room (callers bound the wait by their deadline); false
    /// if the task has stopped.
    pub(crate) async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    pub(crate) fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.health.is_connected()
    }

    /// Connected with its whole channel set confirmed again since the last (re)connect.
    pub(crate) fn is_settled(&self) -> bool {
        self.health.is_settled()
    }

    /// Connected, and Redis not owing this connection an answer for longer than `limit`.
    pub(crate) fn is_up(&self, limit: Duration) -> bool {
        self.health.is_up(limit)
    }

    /// Stops the task; its channels come back as [`Event::Lost`].
    pub(crate) fn shutdown(&self) {
        self.stop.cancel();
    }
}

struct ChannelState {
    confirmed: bool,
    waiters: Vec<Waiter>,
}

/// A command sent to Redis whose reply has not arrived yet (replies come in order).
enum Pending {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>, Option<Waiter>),
    Ping,
    /// A PING sent right after re-subscribing a whole set: Redis answers in order, so its
    /// PONG means every SUBSCRIBE before it is confirmed.
    Settle,
}

/// Why a connected session ended.
enum End {
    Lost(String),
    Stop,
}

struct Actor {
    addr: Arc<str>,
    endpoint: Endpoint,
    mode: Mode,
    options: ConnectionOptions,
    backoff: Backoff,
    commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Message>,
    events: Option<mpsc::UnboundedSender<Event>>,
    metrics: Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
    /// The channels this connection is responsible for; the source of truth on reconnect.
    desired: HashMap<Arc<str>, ChannelState>,
    pending: VecDeque<Pending>,
}

impl Actor {
    async fn run(mut self) {
        let mut ever_connected = false;
        loop {
            let Some(mut conn) = self.connect_with_backoff().await else { return self.stop() };
            if ever_connected {
                self.metrics.reconnects.increment(1);
                tracing::info!(addr = %self.addr, channels = self.desired.len(),
                    "redis subscriber reconnected; re-subscribing");
            }
            self.backoff.reset();
            let end = match self.resubscribe(&mut conn, ever_connected).await {
                Ok(()) => {
                    self.health.set_connected(true);
                    self.session(&mut conn).await
                }
                Err(e) => End::Lost(e),
            };
            ever_connected = true;
            self.health.set_connected(false);
            self.after_session();
            match end {
                End::Stop => return self.stop(),
                End::Lost(reason) => {
                    tracing::warn!(addr = %self.addr, %reason,
                        "redis subscriber connection lost; reconnecting");
                    if let Some(events) = &self.events {
                        let _ = events.send(Event::Down { from: self.addr.clone() });
                    }
                }
            }
        }
    }

    /// Connects, retrying with backoff and answering commands meanwhile; `None` to stop.
    async fn connect_with_backoff(&mut self) -> Option<Conn> {
        let mut failures = 0u32;
        loop {
            let (endpoint, options) = (self.endpoint.clone(), self.options.clone());
            match self.while_offline(connect(&endpoint, &options)).await? {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    failures += 1;
                    // The first failure of a streak is a warning; repeats are logged sparsely
                    // so a long outage does not flood the log.
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(addr = %self.addr, attempt = failures, error = %e,
                            "redis subscriber connection failed; retrying with backoff");
                    }
                }
            }
            let delay = self.backoff.next_delay();
            self.while_offline(tokio::time::sleep(delay)).await?;
        }
    }

    /// Drives `work` while answering commands as a disconnected connection; `None` to stop.
    async fn while_offline<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                command = self.commands.recv() => {
                    if !self.offline(command) {
                        return None;
                    }
                }
                _ = self.stop.cancelled() => return None,
            }
        }
    }

    /// Re-applies the whole subscription set, one command per channel: in a cluster a
    /// multi-channel SSUBSCRIBE must not span slots, and per channel is always safe.
    async fn resubscribe(&mut self, conn: &mut Conn, count: bool) -> Result<(), String> {
        let channels: Vec<Arc<str>> = self.desired.keys().cloned().collect();
        for channel in &channels {
            if let Some(state) = self.desired.get_mut(channel) {
                state.confirmed = false;
            }
            let args: [&[u8]; 2] = [self.mode.subscribe(), channel.as_bytes()];
            conn.feed(&args[..]).await.map_err(|e| e.to_string())?;
            self.pending.push_back(Pending::Subscribe(channel.clone()));
        }
        let ping: [&[u8]; 1] = [b"PING"];
        conn.feed(&ping[..]).await.map_err(|e| e.to_string())?;
        self.pending.push_back(Pending::Settle);
        conn.flush().await.map_err(|e| e.to_string())?;
        if !channels.is_empty() {
            self.health.sent();
            if count {
                self.metrics.resubscribes.increment(channels.len() as u64);
            }
        }
        Ok(())
    }

    async fn session(&mut self, conn: &mut Conn) -> End {
        let mut ping = tokio::time::interval(self.options.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                frame = conn.next() => match frame {
                    Some(Ok(frame)) => {
                        if let Err(e) = self.on_frame(frame, conn).await {
                            return End::Lost(e);
                        }
                        // Any frame is a sign of life, not only a PONG: Redis answers in order,
                        // so a PING stuck behind a burst of messages is not a dead server.
                        self.health.heard(!self.pending.is_empty());
                    }
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    None => return End::Lost("connection closed by peer".into()),
                },
                command = self.commands.recv() => {
                    let Some(command) = command else { return End::Stop };
                    if let Err(e) = self.online(command, conn).await {
                        return End::Lost(e);
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = self.ping(conn).await {
                        return End::Lost(e);
                    }
                }
                _ = self.stop.cancelled() => return End::Stop,
            }
        }
    }

    /// Ends the connection if Redis has owed a reply for two ping intervals (time blocked on
    /// the hub excluded); otherwise sends a PING unless one is already out.
    async fn ping(&mut self, conn: &mut Conn) -> Result<(), String> {
        let silent = self.health.stalled();
        if silent >= self.options.ping_interval * 2 {
            return Err(format!("redis owed a reply for {silent:?}"));
        }
        if !self.pending.iter().any(|p| matches!(p, Pending::Ping | Pending::Settle)) {
            self.request(conn, &[b"PING"], Pending::Ping).await?;
        }
        Ok(())
    }

    /// Sends a command whose reply is awaited, and starts the health clock.
    async fn request(
        &mut self,
        conn: &mut Conn,
        args: &[&[u8]],
        pending: Pending,
    ) -> Result<(), String> {
        send(conn, args).await?;
        self.pending.push_back(pending);
        self.health.sent();
        Ok(())
    }

    /// Clears per-connection state; subscribe waiters stay and are answered after reconnect.
    fn after_session(&mut self) {
        for pending in self.pending.drain(..) {
            if let Pending::Unsubscribe(_, Some(done)) = pending {
                // The connection is gone, so nothing is delivered for the channel any more.
                let _ = done.send(Ok(()));
            }
        }
    }

    /// Hands every channel back to the owner (cluster) before the task ends.
    fn stop(mut self) {
        self.health.set_connected(false);
        for (channel, state) in self.desired.drain() {
            if let Some(events) = &self.events {
                let _ = events.send(Event::Lost {
                    from: self.addr.clone(),
                    channel,
                    waiters: state.waiters,
                });
            }
        }
    }

    /// Handles a command while disconnected; false to stop.
    fn offline(&mut self, command: Option<Command>) -> bool {
        match command {
            None => false,
            Some(Command::Subscribe { channel, waiters }) => {
                // Kept in the set and applied on reconnect; the caller's timeout bounds its wait.
                self.desired
                    .entry(channel)
                    .or_insert_with(|| ChannelState { confirmed: false, waiters: Vec::new() })
                    .waiters
                    .extend(waiters);
                true
            }
            Some(Command::Unsubscribe { channel, done }) => {
                self.forget(&channel);
                let _ = done.send(Ok(()));
                true
            }
            Some(Command::Release { channel }) => {
                self.release(&channel);
                true
            }
        }
    }

    /// Handles a command while connected.
    async fn online(&mut self, command: Command, conn: &mut Conn) -> Result<(), String> {
        match command {
            Command::Subscribe { channel, waiters } => {
                if let Some(state) = self.desired.get_mut(&channel) {
                    if state.confirmed {
                        for w in waiters {
                            let _ = w.send(Ok(()));
                        }
                    } else {
                        state.waiters.extend(waiters);
                    }
                    return Ok(());
                }
                let args = [self.mode.subscribe(), channel.as_bytes()];
                self.request(conn, &args, Pending::Subscribe(channel.clone())).await?;
                self.desired.insert(channel, ChannelState { confirmed: false, waiters });
            }
            Command::Unsubscribe { channel, done } => {
                if self.forget(&channel) {
                    let args = [self.mode.unsubscribe(), channel.as_bytes()];
                    let pending = Pending::Unsubscribe(channel.clone(), Some(done));
                    self.request(conn, &args, pending).await?;
                } else {
                    let _ = done.send(Ok(()));
                }
            }
            Command::Release { channel } => {
                if self.release(&channel) {
                    let args = [self.mode.unsubscribe(), channel.as_bytes()];
                    self.request(conn, &args, Pending::Unsubscribe(channel.clone(), None)).await?;
                }
            }
        }
        Ok(())
    }

    /// Removes a channel; pending subscribers are answered (they subscribed, then left).
    /// Messages for it are filtered out from now on. True if it was present.
    fn forget(&mut self, channel: &str) -> bool {
        match self.desired.remove(channel) {
            Some(state) => {
                for w in state.waiters {
                    let _ = w.send(Ok(()));
                }
                true
            }
            None => false,
        }
    }

    /// Removes a channel and hands it (with its waiters) back to the owner. True if present.
    fn release(&mut self, channel: &str) -> bool {
        match self.desired.remove_entry(channel) {
            Some((channel, state)) => {
                self.lost(channel, state.waiters);
                true
            }
            None => false,
        }
    }

    fn lost(&self, channel: Arc<str>, waiters: Vec<Waiter>) {
        match &self.events {
            Some(events) => {
                let _ = events.send(Event::Lost { from: self.addr.clone(), channel, waiters });
            }
            None => {
                for w in waiters {
                    let _ = w.send(Err(BackendError::Unavailable(format!(
                        "redis dropped the subscription to {channel}"
                    ))));
                }
            }
        }
    }
}

/// Waits for a waiter's answer until `deadline` (the caller's whole command budget, of which
/// queueing may already have used some); `timeout` is the configured budget, for the message.
pub(crate) async fn await_confirmation(
    rx: oneshot::Receiver<Result<(), BackendError>>,
    deadline: Instant,
    timeout: Duration,
    what: &str,
) -> Result<(), BackendError> {
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(BackendError::Unavailable(format!("{what}: backend shut down"))),
        Err(_) => Err(BackendError::Unavailable(format!(
            "{what}: redis did not confirm within {timeout:?}"
        ))),
    }
}
