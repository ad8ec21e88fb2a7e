//! One subscriber connection: a task that owns a socket to one Redis server and the set of
//! channels subscribed on it, and re-applies that set (one command per channel) after every
//! reconnect.
//!
//! `Plain` connections use SUBSCRIBE (standalone Redis), `Sharded` ones SSUBSCRIBE (one master
//! of a cluster). A sharded connection hands a channel back to its owner (the cluster
//! subscription manager) as [`Event::Lost`] when Redis says the channel is not, or no longer,
//! served here: a `MOVED` reply, or a `sunsubscribe` pushed after a slot migrated away.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchyard_backend::{BackendError, Message};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::options::{ConnectionOptions, Endpoint};
use crate::resp::{Frame, RespCodec};

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
    /// Hand every channel back as [`Event::Lost`] and stop.
    Shutdown,
}

/// What a sharded connection tells its owner.
pub(crate) enum Event {
    /// The channel is no longer subscribed here and must be routed again.
    Lost { from: Arc<str>, channel: Arc<str>, waiters: Vec<Waiter> },
    /// The connection dropped; it reconnects by itself, but the topology may have changed.
    Down { from: Arc<str> },
}

/// The handle to a running subscriber connection task.
pub(crate) struct SubscriberHandle {
    commands: mpsc::UnboundedSender<Command>,
    connected: Arc<AtomicBool>,
}

impl SubscriberHandle {
    pub(crate) fn spawn(
        endpoint: Endpoint,
        mode: Mode,
        options: ConnectionOptions,
        incoming: mpsc::Sender<Message>,
        events: Option<mpsc::UnboundedSender<Event>>,
        metrics: Metrics,
    ) -> SubscriberHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(false));
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
            connected: connected.clone(),
            desired: HashMap::new(),
            pending: VecDeque::new(),
        };
        tokio::spawn(actor.run());
        SubscriberHandle { commands: tx, connected }
    }

    /// Sends a command; false if the task has stopped.
    pub(crate) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    pub(crate) fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
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
}

type Conn = Framed<TcpStream, RespCodec>;

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
    commands: mpsc::UnboundedReceiver<Command>,
    incoming: mpsc::Sender<Message>,
    events: Option<mpsc::UnboundedSender<Event>>,
    metrics: Metrics,
    connected: Arc<AtomicBool>,
    /// The channels this connection is responsible for; the source of truth on reconnect.
    desired: HashMap<Arc<str>, ChannelState>,
    pending: VecDeque<Pending>,
}

impl Actor {
    async fn run(mut self) {
        let mut ever_connected = false;
        let mut failures = 0u32;
        loop {
            let (endpoint, options) = (self.endpoint.clone(), self.options.clone());
            let connect = connect(&endpoint, &options);
            tokio::pin!(connect);
            let conn: Result<Conn, String> = loop {
                tokio::select! {
                    result = &mut connect => break result,
                    command = self.commands.recv() => {
                        if !self.offline(command) {
                            return self.stop();
                        }
                    }
                }
            };
            let mut conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    failures += 1;
                    // The first failure of a streak is a warning; repeats are logged sparsely
                    // so a long outage does not flood the log.
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(addr = %self.addr, attempt = failures, error = %e,
                            "redis subscriber connection failed; retrying with backoff");
                    }
                    let sleep = tokio::time::sleep(self.backoff.next_delay());
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            command = self.commands.recv() => {
                                if !self.offline(command) {
                                    return self.stop();
                                }
                            }
                        }
                    }
                    continue;
                }
            };
            if ever_connected {
                self.metrics.reconnects.increment(1);
                tracing::info!(addr = %self.addr, channels = self.desired.len(),
                    "redis subscriber reconnected; re-subscribing");
            }
            failures = 0;
            self.backoff.reset();
            let end = match self.resubscribe(&mut conn, ever_connected).await {
                Ok(()) => {
                    self.connected.store(true, Ordering::Relaxed);
                    self.session(&mut conn).await
                }
                Err(e) => End::Lost(e),
            };
            ever_connected = true;
            self.connected.store(false, Ordering::Relaxed);
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
        conn.flush().await.map_err(|e| e.to_string())?;
        if count && !channels.is_empty() {
            self.metrics.resubscribes.increment(channels.len() as u64);
        }
        Ok(())
    }

    async fn session(&mut self, conn: &mut Conn) -> End {
        let mut ping = tokio::time::interval(self.options.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut ping_sent: Option<Instant> = None;
        loop {
            tokio::select! {
                frame = conn.next() => match frame {
                    Some(Ok(frame)) => {
                        if let Err(e) = self.on_frame(frame, conn, &mut ping_sent).await {
                            return End::Lost(e);
                        }
                    }
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    None => return End::Lost("connection closed by peer".into()),
                },
                command = self.commands.recv() => {
                    let Some(command) = command else { return End::Stop };
                    match self.online(command, conn).await {
                        Ok(true) => {}
                        Ok(false) => return End::Stop,
                        Err(e) => return End::Lost(e),
                    }
                }
                _ = ping.tick() => {
                    if let Some(sent) = ping_sent {
                        if sent.elapsed() >= self.options.ping_interval * 2 {
                            return End::Lost("PING unanswered".into());
                        }
                    } else {
                        if let Err(e) = send(conn, &[b"PING"]).await {
                            return End::Lost(e);
                        }
                        self.pending.push_back(Pending::Ping);
                        ping_sent = Some(Instant::now());
                    }
                }
            }
        }
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
        self.connected.store(false, Ordering::Relaxed);
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
            None | Some(Command::Shutdown) => false,
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

    /// Handles a command while connected; Ok(false) to stop.
    async fn online(&mut self, command: Command, conn: &mut Conn) -> Result<bool, String> {
        match command {
            Command::Shutdown => return Ok(false),
            Command::Subscribe { channel, waiters } => {
                if let Some(state) = self.desired.get_mut(&channel) {
                    if state.confirmed {
                        for w in waiters {
                            let _ = w.send(Ok(()));
                        }
                    } else {
                        state.waiters.extend(waiters);
                    }
                    return Ok(true);
                }
                send(conn, &[self.mode.subscribe(), channel.as_bytes()]).await?;
                self.pending.push_back(Pending::Subscribe(channel.clone()));
                self.desired.insert(channel, ChannelState { confirmed: false, waiters });
            }
            Command::Unsubscribe { channel, done } => {
                if self.forget(&channel) {
                    send(conn, &[self.mode.unsubscribe(), channel.as_bytes()]).await?;
                    self.pending.push_back(Pending::Unsubscribe(channel, Some(done)));
                } else {
                    let _ = done.send(Ok(()));
                }
            }
            Command::Release { channel } => {
                if self.release(&channel) {
                    send(conn, &[self.mode.unsubscribe(), channel.as_bytes()]).await?;
                    self.pending.push_back(Pending::Unsubscribe(channel, None));
                }
            }
        }
        Ok(true)
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

    async fn on_frame(
        &mut self,
        frame: Frame,
        conn: &mut Conn,
        ping_sent: &mut Option<Instant>,
    ) -> Result<(), String> {
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
                    b"pong" => self.ponged(ping_sent),
                    _ => tracing::debug!(addr = %self.addr, "unexpected frame on subscriber"),
                }
            }
            Frame::Simple(s) if &s[..] == b"PONG" => self.ponged(ping_sent),
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
        // Awaiting here pushes back on Redis (through TCP) when the hub falls behind.
        let _ = self.incoming.send(Message { channel: name.clone(), payload }).await;
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
                send(conn, &[self.mode.subscribe(), name.as_bytes()]).await?;
                self.pending.push_back(Pending::Subscribe(name.clone()));
                self.desired.insert(name, state);
                self.metrics.resubscribes.increment(1);
            }
        }
        Ok(())
    }

    fn ponged(&mut self, ping_sent: &mut Option<Instant>) {
        if let Some(i) = self.pending.iter().position(|p| matches!(p, Pending::Ping)) {
            self.pending.remove(i);
        }
        *ping_sent = None;
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
            Some(Pending::Ping) | None => {
                tracing::debug!(addr = %self.addr, %error, "redis error on subscriber connection")
            }
        }
    }
}

async fn send(conn: &mut Conn, args: &[&[u8]]) -> Result<(), String> {
    conn.send(args).await.map_err(|e| e.to_string())
}

/// Opens a connection and authenticates if the URL carried credentials.
async fn connect(endpoint: &Endpoint, options: &ConnectionOptions) -> Result<Conn, String> {
    let setup = async {
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut conn = Framed::new(stream, RespCodec::default());
        let settings = endpoint.info.redis_settings();
        if let Some(password) = settings.password() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            send(&mut conn, &args).await?;
            match conn.next().await {
                Some(Ok(Frame::Simple(_))) => {}
                Some(Ok(Frame::Error(e))) => return Err(format!("AUTH failed: {e}")),
                Some(Ok(_)) => return Err("unexpected reply to AUTH".into()),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection closed during AUTH".into()),
            }
        }
        Ok(conn)
    };
    match tokio::time::timeout(options.connect_timeout, setup).await {
        Ok(result) => result,
        Err(_) => Err(format!("connect timed out after {:?}", options.connect_timeout)),
    }
}

/// Waits for a waiter's answer within `timeout`.
pub(crate) async fn await_confirmation(
    rx: oneshot::Receiver<Result<(), BackendError>>,
    timeout: Duration,
    what: &str,
) -> Result<(), BackendError> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(BackendError::Unavailable(format!("{what}: backend shut down"))),
        Err(_) => Err(BackendError::Unavailable(format!(
            "{what}: redis did not confirm within {timeout:?}"
        ))),
    }
}
