//! `kind = "redis-cluster"`: Redis Cluster with sharded pub/sub.
//!
//! A message is published with SPUBLISH on the master owning its channel's slot, so it travels
//! only within that shard; subscriptions are SSUBSCRIBEd on one subscriber connection per
//! master. The subscription *manager* (one task) owns the channel → master assignment. When a
//! channel is lost on a master (connection down for good, `MOVED`, or a `sunsubscribe` pushed
//! by Redis after a slot migration) it re-reads the slot map and subscribes the channel, alone,
//! on its new owner. The redis crate's own automatic resubscription is not used: it re-sends
//! one SSUBSCRIBE with every channel of a node, which Redis rejects as CROSSSLOT.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_backend::backoff::Backoff;
use switchyard_backend::{
    Backend, BackendError, Changes, Incoming, Member, Message, Page, Position, Retention, Roster,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::history;
use crate::metrics::Metrics;
use crate::options::{Addr, Endpoint, RedisClusterOptions};
use crate::presence;
use crate::publisher::{Call, PublishError, Publisher};
use crate::slot::key_slot;
use crate::subscriber::{
    await_confirmation, Command, Event, Mode, Sinks, SubscriberHandle, Waiter, COMMAND_QUEUE,
};
use crate::topology::{fetch_slot_map, SlotMap};

pub(crate) const KIND: &str = "redis-cluster";

/// What publishers need, swapped atomically whenever the topology changes.
#[derive(Default)]
struct Routing {
    map: Option<SlotMap>,
    publishers: HashMap<String, Vec<Arc<Publisher>>>,
    subscribers_up: Vec<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// Each master's subscriber connection, by address (see `RedisClusterBackend::publish`).
    subscribers: HashMap<String, Arc<crate::health::Health>>,
}

enum Request {
    Subscribe(Arc<str>, Waiter),
    Unsubscribe(Arc<str>, Waiter),
    Refresh,
    Topology(Result<SlotMap, String>),
}

/// The `redis-cluster` backend. See [`RedisClusterBackend::connect`].
pub struct RedisClusterBackend {
    options: RedisClusterOptions,
    routing: Arc<ArcSwap<Routing>>,
    manager: mpsc::Sender<Request>,
    incoming: Mutex<Option<Incoming>>,
    stop: CancellationToken,
}

impl RedisClusterBackend {
    /// Builds the backend and starts discovering the cluster in the background.
    ///
    /// Fails only for invalid options (no seed, a malformed URL), as
    /// [`BackendError::Invalid`]. An unreachable cluster is *not* an error: the backend starts
    /// degraded (warning logged, `ready()` failing, publishes `Unavailable`) and keeps trying
    /// the seeds with backoff. Must be called inside a tokio runtime.
    pub fn connect(options: RedisClusterOptions) -> Result<RedisClusterBackend, BackendError> {
        if options.nodes.is_empty() {
            return Err(BackendError::Invalid(
                "redis-cluster backend needs at least one node URL".into(),
            ));
        }
        if options.publisher_connections_per_master == 0 {
            return Err(BackendError::Invalid(
                "redis-cluster backend needs at least one publisher connection per master".into(),
            ));
        }
        let tls = &options.connection.tls;
        let seeds =
            options.nodes.iter().map(|u| Endpoint::parse(u, tls)).collect::<Result<Vec<_>, _>>()?;
        if let Some(unix) = seeds.iter().find(|e| matches!(e.addr, Addr::Unix(_))) {
            return Err(BackendError::Invalid(format!(
                "redis-cluster cannot use the unix socket {}: the other nodes are reached over \
                 TCP",
                unix.addr()
            )));
        }
        let metrics = Metrics::new(KIND);
        let stop = CancellationToken::new();
        let (tx, incoming) = Incoming::channel(options.connection.incoming_capacity);
        let routing = Arc::new(ArcSwap::from_pointee(Routing::default()));
        // Bounded like the subscriber queues (see `COMMAND_QUEUE`): callers wait for room only
        // until their deadline, and hints (`Refresh`) are dropped when the queue is full.
        let (requests, requests_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, events_rx) = mpsc::unbounded_channel();
        let manager = Manager {
            options: options.clone(),
            seeds,
            metrics,
            stop: stop.clone(),
            routing: routing.clone(),
            requests: requests.clone(),
            events,
            incoming: tx,
            map: None,
            subscribers: HashMap::new(),
            publishers: HashMap::new(),
            assigned: HashMap::new(),
            orphans: HashMap::new(),
            refreshing: false,
            refresh_again: false,
            failures: 0,
            urgent: Backoff::new(
                options.connection.reconnect_min,
                options.connection.reconnect_max,
            ),
            next_refresh: Instant::now(),
        };
        tokio::spawn(manager.run(requests_rx, events_rx));
        Ok(RedisClusterBackend {
            options,
            routing,
            manager: requests,
            incoming: Mutex::new(Some(incoming)),
            stop,
        })
    }

    /// Like [`RedisClusterBackend::connect`], then waits up to `within` for
    /// [`Backend::ready`], for callers that prefer to fail fast.
    pub async fn connect_and_wait(
        options: RedisClusterOptions,
        within: std::time::Duration,
    ) -> Result<RedisClusterBackend, BackendError> {
        let backend = RedisClusterBackend::connect(options)?;
        crate::wait_ready(&backend, within).await?;
        Ok(backend)
    }

    /// Runs `call` on the master owning `channel`'s slot. A MOVED reply refreshes the
    /// topology and is followed once if that master is known; anything unavailable refreshes
    /// it too. Answers by `deadline` at the latest.
    async fn routed(
        &self,
        channel: &str,
        call: Call<'_>,
        deadline: Instant,
    ) -> Result<redis::Value, BackendError> {
        let routing = self.routing.load();
        let slot = key_slot(channel.as_bytes());
        let Some(addr) = routing.map.as_ref().and_then(|m| m.owner_addr(slot)) else {
            let _ = self.manager.try_send(Request::Refresh);
            return Err(BackendError::Unavailable("redis cluster topology not known yet".into()));
        };
        let Some(publisher) = self.publisher_for(&routing, &addr, channel) else {
            return Err(BackendError::Unavailable(format!("no connection to {addr}")));
        };
        match call.on(&publisher, deadline).await {
            Ok(reply) => Ok(reply),
            Err(PublishError::Moved(target)) => {
                let _ = self.manager.try_send(Request::Refresh);
                match self.publisher_for(&self.routing.load(), &target, channel) {
                    Some(p) => Ok(call.on(&p, deadline).await?),
                    None => Err(PublishError::Moved(target).into()),
                }
            }
            Err(e) => {
                if matches!(e, PublishError::Unavailable(_)) {
                    let _ = self.manager.try_send(Request::Refresh);
                }
                Err(e.into())
            }
        }
    }

    fn publisher_for(
        &self,
        routing: &Routing,
        addr: &str,
        channel: &str,
    ) -> Option<Arc<Publisher>> {
        let pubs = routing.publishers.get(addr)?;
        // No publisher started for this master (its spawns failed): the publish is refused as
        // unavailable rather than dividing by zero.
        let index = usize::from(key_slot(channel.as_bytes())).checked_rem(pubs.len())?;
        pubs.get(index).cloned()
    }
}

#[async_trait]
impl Backend for RedisClusterBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<u64, BackendError> {
        // One budget for the whole call, redirect included: the caller hears back within the
        // command timeout however the publish goes.
        let deadline = Instant::now() + self.options.connection.command_timeout;
        // Without history nothing heals a message this node's own subscribers miss: while the
        // owning master's subscriber connection is re-subscribing, the publish is not known to
        // reach them.
        let routing = self.routing.load();
        let owner = routing.map.as_ref().and_then(|m| m.owner_addr(key_slot(channel.as_bytes())));
        if let Some(addr) = owner {
            if routing.subscribers.get(&addr).is_some_and(|h| !h.is_settled()) {
                let message = format!("redis {addr}: this node's subscriptions are not back yet");
                return Err(BackendError::Unavailable(message));
            }
        }
        let cmd = history::publish_cmd("SPUBLISH", channel, &payload);
        crate::publisher::receivers(&self.routed(channel, Call::Command(&cmd), deadline).await?)
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
        // SPUBLISH from inside the script: the keys are hash-tagged on the channel, so the
        // script, its keys and the shard channel all belong to the master of the channel's slot.
        let call = history::publish_call(channel, &payload, retention, "SPUBLISH")?;
        history::parse_position(&self.routed(channel, Call::Script(&call), deadline).await?)
    }

    async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        retention: Retention,
    ) -> Result<Page, BackendError> {
        let deadline = Instant::now() + self.options.connection.command_timeout;
        // On the owning master's publisher connections, as in the standalone backend (see
        // there why not a pool); never a replica: the read may create the stream's metadata.
        let call = history::read_call(channel, since, limit, retention)?;
        history::parse_page(&self.routed(channel, Call::Script(&call), deadline).await?)
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
        // On the master of the channel's slot, where its hash-tagged keys live.
        let call = presence::update_call(channel, add, remove, ttl)?;
        presence::parse_changes(&self.routed(channel, Call::Script(&call), deadline).await?)
    }

    async fn presence_read(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Roster, BackendError> {
        let deadline = Instant::now() + self.options.connection.command_timeout;
        // The master, never a replica: a read purges ended leases.
        let call = presence::read_call(channel, after, limit)?;
        presence::parse_roster(&self.routed(channel, Call::Script(&call), deadline).await?)
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BackendError> {
        let timeout = self.options.connection.command_timeout;
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let request = Request::Subscribe(Arc::from(channel), tx);
        match tokio::time::timeout_at(deadline, self.manager.send(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(BackendError::Unavailable("redis-cluster backend is shut down".into()))
            }
            Err(_) => return Err(behind("subscribe", timeout)),
        }
        // No topology yet means no master is reachable: say so at once; the manager keeps the
        // channel and subscribes it when the cluster is back.
        if self.routing.load().map.is_none() {
            return Err(BackendError::Unavailable(
                "redis cluster not reachable yet; the subscription is applied when it is".into(),
            ));
        }
        await_confirmation(rx, deadline, timeout, "subscribe").await
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BackendError> {
        let timeout = self.options.connection.command_timeout;
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let request = Request::Unsubscribe(Arc::from(channel), tx);
        match tokio::time::timeout_at(deadline, self.manager.send(request)).await {
            Ok(Ok(())) => await_confirmation(rx, deadline, timeout, "unsubscribe").await,
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(behind("unsubscribe", timeout)),
        }
    }

    fn take_incoming(&self) -> Option<Incoming> {
        self.incoming.lock().ok()?.take()
    }

    async fn ready(&self) -> Result<(), BackendError> {
        let routing = self.routing.load();
        let Some(map) = routing.map.as_ref() else {
            return Err(BackendError::Unavailable("redis cluster topology not known yet".into()));
        };
        if !map.is_complete() {
            return Err(BackendError::Unavailable("redis cluster slots not all served".into()));
        }
        let publishers_down = routing.publishers.values().flatten().filter(|p| !p.is_up()).count();
        let subscribers_down = routing.subscribers_up.iter().filter(|up| !up()).count();
        if publishers_down + subscribers_down > 0 {
            return Err(BackendError::Unavailable(format!(
                "redis cluster: {publishers_down} publisher and {subscribers_down} subscriber connections down"
            )));
        }
        Ok(())
    }

    async fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for RedisClusterBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The manager's queue stayed full until the deadline.
fn behind(what: &str, timeout: std::time::Duration) -> BackendError {
    BackendError::Unavailable(format!(
        "{what}: the redis cluster subscription manager did not keep up within {timeout:?}"
    ))
}

struct Manager {
    options: RedisClusterOptions,
    seeds: Vec<Endpoint>,
    metrics: Metrics,
    stop: CancellationToken,
    routing: Arc<ArcSwap<Routing>>,
    requests: mpsc::Sender<Request>,
    events: mpsc::UnboundedSender<Event>,
    incoming: mpsc::Sender<Message>,
    map: Option<SlotMap>,
    /// One subscriber connection per master; each has its own child of `stop`, so a master
    /// that leaves the topology can be stopped alone.
    subscribers: HashMap<String, SubscriberHandle>,
    publishers: HashMap<String, (Vec<Arc<Publisher>>, CancellationToken)>,
    /// Every subscribed channel and the master (`host:port`) it is subscribed on; `None`
    /// while it waits for a topology refresh (its waiters are in `orphans`).
    assigned: HashMap<Arc<str>, Option<String>>,
    orphans: HashMap<Arc<str>, Vec<Waiter>>,
    refreshing: bool,
    refresh_again: bool,
    failures: u32,
    urgent: Backoff,
    next_refresh: Instant,
}

impl Manager {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(request) = requests.recv() => self.on_request(request).await,
                Some(event) = events.recv() => self.on_event(event).await,
                _ = tokio::time::sleep_until(self.next_refresh) => {
                    self.next_refresh = Instant::now() + self.options.topology_refresh_interval;
                    self.refresh();
                }
            }
        }
        // The subscribers' tokens are children of `stop`: they are stopping already.
        for (_, token) in self.publishers.values() {
            token.cancel();
        }
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::Subscribe(channel, waiter) => match self.assigned.get(&channel).cloned() {
                Some(Some(addr)) => self.send_subscribe(&addr, channel, vec![waiter]).await,
                Some(None) => self.orphans.entry(channel).or_default().push(waiter),
                None => self.route(channel, vec![waiter], None).await,
            },
            Request::Unsubscribe(channel, done) => match self.assigned.remove(&channel) {
                Some(Some(addr)) => match self.subscribers.get(&addr) {
                    Some(s) => {
                        // Awaiting room here is the back-pressure of a subscriber that does
                        // not keep up; the caller's deadline bounds what it waits for.
                        s.send(Command::Unsubscribe { channel, done }).await;
                    }
                    None => {
                        let _ = done.send(Ok(()));
                    }
                },
                _ => {
                    for w in self.orphans.remove(&channel).unwrap_or_default() {
                        let _ = w.send(Ok(()));
                    }
                    let _ = done.send(Ok(()));
                }
            },
            Request::Refresh => self.refresh_soon(),
            Request::Topology(result) => self.on_topology(result).await,
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Down { from } => {
                tracing::debug!(node = %from, "subscriber connection down; refreshing topology");
                self.refresh_soon();
            }
            Event::Lost { from, channel, waiters } => match self.assigned.get(&channel).cloned() {
                Some(Some(addr)) if *addr == *from => {
                    self.metrics.resubscribes.increment(1);
                    self.route(channel, waiters, Some(&from)).await;
                }
                Some(Some(addr)) => self.send_subscribe(&addr, channel, waiters).await,
                Some(None) => self.orphans.entry(channel).or_default().extend(waiters),
                None => {
                    for w in waiters {
                        let _ = w.send(Ok(()));
                    }
                }
            },
        }
    }

    /// Subscribes `channel` on the master owning its slot, unless that is `not_on` (the node
    /// that just lost it with a topology we have not refreshed yet): then it waits as an
    /// orphan for the next refresh, which comes soon.
    async fn route(&mut self, channel: Arc<str>, waiters: Vec<Waiter>, not_on: Option<&str>) {
        let owner = self.map.as_ref().and_then(|m| m.owner_addr(key_slot(channel.as_bytes())));
        match owner {
            Some(owner)
                if Some(owner.as_str()) != not_on && self.subscribers.contains_key(&owner) =>
            {
                self.assigned.insert(channel.clone(), Some(owner.clone()));
                self.send_subscribe(&owner, channel, waiters).await;
            }
            _ => {
                self.assigned.insert(channel.clone(), None);
                self.orphans.entry(channel).or_default().extend(waiters);
                self.refresh_soon();
            }
        }
    }

    async fn send_subscribe(&mut self, addr: &str, channel: Arc<str>, waiters: Vec<Waiter>) {
        match self.subscribers.get(addr) {
            Some(s) => {
                s.send(Command::Subscribe { channel, waiters }).await;
            }
            None => {
                self.assigned.insert(channel.clone(), None);
                self.orphans.entry(channel).or_default().extend(waiters);
                self.refresh_soon();
            }
        }
    }

    /// Asks for a refresh after a short (backed-off) delay: something looked wrong.
    fn refresh_soon(&mut self) {
        let at = Instant::now() + self.urgent.next_delay();
        if at < self.next_refresh {
            self.next_refresh = at;
        }
    }

    fn refresh(&mut self) {
        if self.refreshing {
            self.refresh_again = true;
            return;
        }
        self.refreshing = true;
        // Known masters first (they are the most likely to be up), then the seeds.
        let mut candidates: Vec<Endpoint> = Vec::new();
        if let Some(map) = &self.map {
            candidates.extend(map.masters.iter().map(|(h, p)| self.seeds[0].with_addr(h, *p)));
        }
        candidates.extend(self.seeds.iter().cloned());
        let timeout = self.options.connection.connect_timeout;
        let requests = self.requests.clone();
        tokio::spawn(async move {
            let result = fetch_slot_map(&candidates, timeout).await;
            // Awaited, never dropped: the manager counts on every refresh reporting back.
            let _ = requests.send(Request::Topology(result)).await;
        });
    }

    async fn on_topology(&mut self, result: Result<SlotMap, String>) {
        self.refreshing = false;
        let map = match result {
            Ok(map) => map,
            Err(e) => {
                self.failures += 1;
                if self.failures == 1 || self.failures.is_power_of_two() {
                    tracing::warn!(error = %e, attempt = self.failures,
                        "redis cluster topology unavailable; retrying with backoff");
                }
                self.refresh_soon();
                return;
            }
        };
        self.failures = 0;
        if self.map.as_ref() != Some(&map) {
            tracing::info!(masters = ?map.masters, "redis cluster topology updated");
        }
        let masters: Vec<String> = map.masters.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        self.drop_departed(&masters);
        for (addr, (host, port)) in masters.iter().zip(map.masters.iter()) {
            self.connect_master(addr, host, *port);
        }
        self.map = Some(map);
        self.publish_routing();
        self.release_moved().await;
        for (channel, waiters) in std::mem::take(&mut self.orphans) {
            self.route(channel, waiters, None).await;
        }
        let healthy =
            self.orphans.is_empty() && self.map.as_ref().is_some_and(SlotMap::is_complete);
        if healthy {
            self.urgent.reset();
        } else {
            self.refresh_soon();
        }
        if std::mem::take(&mut self.refresh_again) {
            self.refresh_soon();
        }
    }

    /// Connections to nodes that are no longer masters go; their channels come back as
    /// `Lost` events and are routed again.
    fn drop_departed(&mut self, masters: &[String]) {
        let gone: Vec<String> =
            self.subscribers.keys().filter(|a| !masters.contains(a)).cloned().collect();
        for addr in gone {
            if let Some(s) = self.subscribers.remove(&addr) {
                s.shutdown();
            }
            if let Some((_, token)) = self.publishers.remove(&addr) {
                token.cancel();
            }
        }
    }

    /// A subscriber connection and publishers for master `addr`, unless it has them.
    fn connect_master(&mut self, addr: &str, host: &str, port: u16) {
        let endpoint = self.seeds[0].with_addr(host, port);
        if !self.subscribers.contains_key(addr) {
            let handle = SubscriberHandle::spawn(
                endpoint.clone(),
                Mode::Sharded,
                self.options.connection.clone(),
                Sinks { incoming: self.incoming.clone(), events: Some(self.events.clone()) },
                self.metrics.clone(),
                self.stop.child_token(),
            );
            self.subscribers.insert(addr.to_string(), handle);
        }
        if self.publishers.contains_key(addr) {
            return;
        }
        let token = self.stop.child_token();
        let pubs = (0..self.options.publisher_connections_per_master)
            .filter_map(|_| {
                let spawned = Publisher::spawn(
                    &endpoint,
                    &self.options.connection,
                    self.metrics.clone(),
                    token.clone(),
                );
                spawned
                    .inspect_err(|e| {
                        tracing::error!(master = %addr, error = %e, "cannot start a publisher connection; publishes to this master answer unavailable");
                    })
                    .ok()
            })
            .collect();
        self.publishers.insert(addr.to_string(), (pubs, token));
    }

    /// Channels whose slot now has another owner are released; they come back as `Lost`.
    async fn release_moved(&self) {
        let Some(map) = &self.map else { return };
        for (channel, addr) in &self.assigned {
            let Some(addr) = addr else { continue };
            if map.owner_addr(key_slot(channel.as_bytes())).as_deref() != Some(addr.as_str()) {
                if let Some(s) = self.subscribers.get(addr) {
                    s.send(Command::Release { channel: channel.clone() }).await;
                }
            }
        }
    }

    fn publish_routing(&self) {
        let subscribers_up = self
            .subscribers
            .values()
            .map(|s| {
                // Up means connected and Redis not owing an answer past the command timeout.
                let (health, limit) = (s.health(), self.options.connection.command_timeout);
                Arc::new(move || health.is_up(limit)) as Arc<dyn Fn() -> bool + Send + Sync>
            })
            .collect();
        self.routing.store(Arc::new(Routing {
            map: self.map.clone(),
            publishers: self.publishers.iter().map(|(a, (p, _))| (a.clone(), p.clone())).collect(),
            subscribers_up,
            subscribers: self.subscribers.iter().map(|(a, s)| (a.clone(), s.health())).collect(),
        }));
    }
}
