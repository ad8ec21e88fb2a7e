//! Publisher connections: a multiplexed redis-rs connection per server, kept alive by a small
//! reconnect task.
//!
//! Why not a deadpool-redis checkout per publish: a checkout costs a round trip of its own on
//! recycle (and on Redis Cluster a PING to every master), while one multiplexed connection
//! pipelines any number of concurrent publishes on one socket. So each publisher is a
//! long-lived connection that many tasks use at once, with commands gathered into batches
//! while the previous batch is answered (`batch`); when it breaks, publishes answer
//! `Unavailable` at once (never a hang) and the task reconnects with backoff.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, RedisError, Value};
use switchyard_backend::backoff::Backoff;
use switchyard_backend::BackendError;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batcher;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::options::{ConnectionOptions, Endpoint};

struct Live {
    generation: u64,
    /// The multiplexed connection, behind automatic pipelining (see `batch`).
    conn: Batcher,
    /// Commands sent on this connection and not answered yet (publishes and pings).
    in_flight: AtomicUsize,
    /// Whether Redis has owed this connection an answer for too long (see `health`).
    health: Health,
}

impl Live {
    fn new(generation: u64, conn: MultiplexedConnection, linger: Duration) -> Live {
        let health = Health::default();
        health.set_connected(true);
        Live {
            generation,
            conn: Batcher::spawn(conn, linger),
            in_flight: AtomicUsize::new(0),
            health,
        }
    }

    /// Sends one command, waiting for the reply until `deadline`; `None` if Redis did not
    /// answer by then. Keeps the health clock: it runs while any command is unanswered.
    async fn call(&self, cmd: &Cmd, deadline: Instant) -> Option<Result<Value, RedisError>> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.health.sent();
        }
        // The batcher hands a Redis error reply back as `Ok(Value::ServerError)`;
        // turned into `Err` here so that MOVED, NOSCRIPT, CLUSTERDOWN … reach `classify`
        // instead of looking like an odd successful reply.
        let result = tokio::time::timeout_at(deadline, self.conn.call(cmd))
            .await
            .ok()
            .map(|r| r.and_then(Value::extract_error));
        let left = self.in_flight.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        if result.is_some() {
            self.health.heard(left > 0);
        }
        result
    }
}

/// One publisher connection to one Redis server.
pub(crate) struct Publisher {
    addr: String,
    live: ArcSwapOption<Live>,
    broken: Notify,
    generation: AtomicU64,
    options: ConnectionOptions,
    metrics: Metrics,
}

/// What a cluster sends to the master of a channel's slot: a command, or a history script.
pub(crate) enum Call<'a> {
    Command(&'a Cmd),
    Script(&'a crate::history::ScriptCall),
}

impl Call<'_> {
    /// Runs it on `publisher`, answering by `deadline` at the latest.
    pub(crate) async fn on(
        &self,
        publisher: &Publisher,
        deadline: Instant,
    ) -> Result<Value, PublishError> {
        match self {
            Call::Command(cmd) => publisher.run(cmd, deadline).await,
            Call::Script(script) => script.run(publisher, deadline).await,
        }
    }
}

/// Why a publish failed.
pub(crate) enum PublishError {
    /// Redis answered MOVED (or ASK): the slot belongs to the master at `host:port`.
    Moved(String),
    /// Nothing could be handed to Redis.
    Unavailable(String),
    /// Redis does not have the script an EVALSHA named (restarted, or SCRIPT FLUSH): the
    /// caller sends the whole script with EVAL instead.
    NoScript,
    /// Redis refused the command for good.
    Refused(String),
}

impl From<PublishError> for BackendError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Moved(addr) => BackendError::Unavailable(format!("slot moved to {addr}")),
            PublishError::Unavailable(m) => BackendError::Unavailable(m),
            PublishError::NoScript => {
                BackendError::Unavailable("redis lost a script while it was being called".into())
            }
            PublishError::Refused(m) => BackendError::Invalid(m),
        }
    }
}

impl Publisher {
    /// Starts the connection task; the first connect happens in the background, so a Redis
    /// that is down at start does not block or fail the broker's start.
    pub(crate) fn spawn(
        endpoint: &Endpoint,
        options: &ConnectionOptions,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Result<Arc<Publisher>, BackendError> {
        let client = endpoint.client()?;
        let publisher = Arc::new(Publisher {
            addr: endpoint.addr(),
            live: ArcSwapOption::empty(),
            broken: Notify::new(),
            generation: AtomicU64::new(0),
            options: options.clone(),
            metrics,
        });
        tokio::spawn(reconnect_loop(Arc::downgrade(&publisher), client, stop));
        Ok(publisher)
    }

    /// Connected, and no command unanswered for longer than the command timeout: a frozen
    /// Redis turns this false as soon as one publish (or ping) has waited that long, before
    /// the publish itself gives up.
    pub(crate) fn is_up(&self) -> bool {
        let live = self.live.load();
        live.as_ref().is_some_and(|l| l.health.stalled() <= self.options.command_timeout)
    }

    /// Sends one publishing command on the shared connection; answers by `deadline` at the
    /// latest.
    pub(crate) async fn run(&self, cmd: &Cmd, deadline: Instant) -> Result<Value, PublishError> {
        self.send(cmd, deadline, true).await
    }

    /// Like [`Publisher::run`] for a command that publishes nothing (a history read), so it
    /// counts in neither the messages-out nor the publish-error metric.
    pub(crate) async fn read(&self, cmd: &Cmd, deadline: Instant) -> Result<Value, PublishError> {
        self.send(cmd, deadline, false).await
    }

    async fn send(
        &self,
        cmd: &Cmd,
        deadline: Instant,
        publishes: bool,
    ) -> Result<Value, PublishError> {
        let failed = || {
            if publishes {
                self.metrics.publish_errors.increment(1);
            }
        };
        let Some(live) = self.live.load_full() else {
            failed();
            return Err(PublishError::Unavailable(format!("redis {} is not connected", self.addr)));
        };
        match live.call(cmd, deadline).await {
            Some(Ok(value)) => {
                if publishes {
                    self.metrics.published();
                }
                Ok(value)
            }
            Some(Err(e)) => {
                let e = self.classify(live.generation, e);
                // NOSCRIPT is answered by sending the script itself: not a failed publish.
                if !matches!(e, PublishError::NoScript) {
                    failed();
                }
                Err(e)
            }
            None => {
                failed();
                self.mark_broken(live.generation);
                Err(PublishError::Unavailable(format!(
                    "redis {} did not answer within {:?}",
                    self.addr, self.options.command_timeout
                )))
            }
        }
    }

    fn classify(&self, generation: u64, e: RedisError) -> PublishError {
        // redis-rs gives `(addr, slot)` here, the address being `host:port` already.
        if let Some((addr, _slot)) = e.redirect_node() {
            return PublishError::Moved(addr.to_owned());
        }
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_timeout()
            || e.is_connection_refusal()
        {
            self.mark_broken(generation);
            return PublishError::Unavailable(format!("redis {}: {e}", self.addr));
        }
        match e.code() {
            Some("NOSCRIPT") => PublishError::NoScript,
            // Transient cluster states: the caller may retry.
            Some("CLUSTERDOWN" | "TRYAGAIN" | "LOADING" | "MASTERDOWN" | "READONLY") => {
                PublishError::Unavailable(format!("redis {}: {e}", self.addr))
            }
            _ => PublishError::Refused(format!("redis {}: {e}", self.addr)),
        }
    }

    /// Drops the connection of `generation` (not a newer one) and wakes the reconnect task.
    fn mark_broken(&self, generation: u64) {
        let current = self.live.load();
        if current.as_ref().is_some_and(|l| l.generation == generation) {
            self.live.store(None);
            self.broken.notify_one();
        }
    }
}

async fn reconnect_loop(
    publisher: std::sync::Weak<Publisher>,
    client: redis::Client,
    stop: CancellationToken,
) {
    let mut attempts = Attempts::default();
    let mut backoff = {
        let Some(p) = publisher.upgrade() else { return };
        Backoff::new(p.options.reconnect_min, p.options.reconnect_max)
    };
    loop {
        let Some(p) = publisher.upgrade() else { return };
        if let Some(live) = p.live.load_full() {
            let (ping_interval, command_timeout) =
                (p.options.ping_interval, p.options.command_timeout);
            drop(p);
            if !watch(&publisher, &live, ping_interval, command_timeout, &stop).await {
                return;
            }
            continue;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(p.options.connect_timeout))
            .set_response_timeout(Some(p.options.command_timeout));
        let attempt = tokio::select! {
            r = client.get_multiplexed_async_connection_with_config(&config) => r,
            _ = stop.cancelled() => return,
        };
        match attempt {
            Ok(conn) => {
                attempts.connected(&p);
                backoff.reset();
                let generation = p.generation.fetch_add(1, Ordering::Relaxed) + 1;
                p.live.store(Some(Arc::new(Live::new(generation, conn, p.options.batch_delay))));
            }
            Err(e) => {
                attempts.failed(&p, &e);
                drop(p);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {},
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Waits until a publish finds the live connection broken, PINGing now and then so an idle
/// connection that died is noticed (and `ready()` turns false) without waiting for the next
/// publish to fail. False once the publisher is stopped.
async fn watch(
    publisher: &std::sync::Weak<Publisher>,
    live: &Live,
    ping_interval: Duration,
    command_timeout: Duration,
    stop: &CancellationToken,
) -> bool {
    let broken = tokio::select! {
        _ = async {
            match publisher.upgrade() {
                Some(p) => p.broken.notified().await,
                None => std::future::pending().await,
            }
        } => false,
        _ = tokio::time::sleep(ping_interval) => {
            let deadline = Instant::now() + command_timeout;
            let reply = live.call(&redis::cmd("PING"), deadline).await;
            !matches!(reply, Some(Ok(Value::SimpleString(_) | Value::Okay)))
        }
        _ = stop.cancelled() => return false,
    };
    if broken {
        if let Some(p) = publisher.upgrade() {
            p.mark_broken(live.generation);
        }
    }
    true
}

/// Connection attempts of one publisher, for logs and the reconnect counter.
#[derive(Default)]
struct Attempts {
    ever_connected: bool,
    failures: u32,
}

impl Attempts {
    fn connected(&mut self, p: &Publisher) {
        if self.ever_connected {
            p.metrics.reconnects.increment(1);
            tracing::info!(addr = %p.addr, "redis publisher reconnected");
        }
        self.ever_connected = true;
        self.failures = 0;
    }

    /// Logs the first failure and then ever rarer ones (1, 2, 4, 8, ...).
    fn failed(&mut self, p: &Publisher, e: &redis::RedisError) {
        self.failures += 1;
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(addr = %p.addr, attempt = self.failures, error = %e,
                "redis publisher connection failed; publishes answer unavailable until it is back");
        }
    }
}

/// The receiver count of a PUBLISH/SPUBLISH reply: how many subscriber connections (one per
/// subscribed broker node) got the message.
pub(crate) fn receivers(reply: &Value) -> Result<u64, BackendError> {
    match reply {
        Value::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
        other => Err(BackendError::Invalid(format!("unexpected reply to a publish: {other:?}"))),
    }
}
