//! One broker node's shared state, and everything a connection or the HTTP API may do with it.
//!
//! The gateway holds an `Arc<Node>` and sees only the methods here: it can authenticate,
//! register a connection, subscribe it through the hub, publish and send, but it cannot reach
//! the hub's tables, swap the rules or stop the backends. [`crate::broker`] builds the node,
//! reloads its rules and shuts it down.
//!
//! - [`ops`]: publish and send, shared by WebSocket clients and the HTTP API.
//! - [`client`]: one WebSocket client's protocol state (its subscriptions and rate limits),
//!   with no socket in it.
//! - [`membership`]: a connection's place in the hub, given back on drop whatever happens.
//! - [`presence`]: who is subscribed to presence channels, kept in the backends.

mod bucket;
pub(crate) mod client;
mod membership;
pub(crate) mod ops;
pub(crate) mod presence;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use metrics::{Counter, Histogram};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use crate::auth::{ApiKeys, Authenticator, Identity, TokenError};
use crate::config::{LimitsConfig, SendPermission, ServerConfig};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::routing::Rules;

pub(crate) use membership::Membership;

/// What a reload can change: rules (routes, permissions, route limits) and connection limits.
pub(crate) struct Live {
    pub(crate) rules: Arc<Rules>,
    pub(crate) limits: LimitsConfig,
    /// `switchyard_messages_published_total` per route, by route index.
    pub(crate) published: Vec<Counter>,
}

impl Live {
    pub(crate) fn new(rules: Arc<Rules>, limits: LimitsConfig) -> Live {
        let published =
            rules.routes().iter().map(|r| Metrics::published(r.pattern.source())).collect();
        Live { rules, limits, published }
    }
}

/// The parts a node is made of; [`crate::broker`] assembles them.
pub(crate) struct Parts {
    pub(crate) id: Arc<str>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) live: Live,
    pub(crate) server: ServerConfig,
    pub(crate) auth: Option<Authenticator>,
    pub(crate) api_keys: ApiKeys,
    pub(crate) send_permission: SendPermission,
    pub(crate) metrics: Metrics,
}

/// State shared by every connection and request of one broker node.
pub(crate) struct Node {
    id: Arc<str>,
    hub: Arc<Hub>,
    live: ArcSwap<Live>,
    server: ServerConfig,
    auth: Option<Authenticator>,
    api_keys: ApiKeys,
    send_permission: SendPermission,
    metrics: Metrics,
    /// `switchyard_publish_duration_seconds` per backend, by backend index.
    publish_latency: Vec<Histogram>,
    shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them to drain.
    tracker: TaskTracker,
    /// Bumped on every successful reload; sessions re-check their subscriptions.
    rules_version: watch::Sender<u64>,
    presence: presence::Presence,
}

impl Node {
    pub(crate) fn new(parts: Parts) -> Node {
        let publish_latency = parts.hub.backend_names().map(Metrics::publish_latency).collect();
        let presence = presence::Presence::start(parts.hub.clone(), parts.metrics.presence.clone());
        Node {
            presence,
            id: parts.id,
            hub: parts.hub,
            live: ArcSwap::from_pointee(parts.live),
            server: parts.server,
            auth: parts.auth,
            api_keys: parts.api_keys,
            send_permission: parts.send_permission,
            metrics: parts.metrics,
            publish_latency,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            rules_version: watch::Sender::new(0),
        }
    }

    /// The node id, as connection ids and welcome frames carry it.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The `[server]` section the node started with (it takes a restart to change).
    pub(crate) fn server(&self) -> &ServerConfig {
        &self.server
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The rules and limits in force now; cheap, for one operation.
    pub(crate) fn live(&self) -> Guard<Arc<Live>> {
        self.live.load()
    }

    /// The rules and limits in force now, kept across awaits.
    pub(crate) fn live_full(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in new rules and limits and tells every session to re-check its subscriptions.
    pub(crate) fn set_live(&self, live: Live) {
        self.live.store(Arc::new(live));
        self.rules_version.send_modify(|v| *v += 1);
    }

    /// Notified after every reload.
    pub(crate) fn rules_changed(&self) -> watch::Receiver<u64> {
        self.rules_version.subscribe()
    }

    /// Who presents `token` (None: anonymous).
    pub(crate) fn authenticate(&self, token: Option<&str>) -> Result<Identity, TokenError> {
        match (&self.auth, token) {
            (_, None) => Ok(Identity::anonymous()),
            (None, Some(_)) => Err(TokenError::NotAccepted),
            (Some(auth), Some(t)) => auth.verify(t),
        }
    }

    pub(crate) fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// Who may `send` over WebSocket (`auth.send`, read once at start like the rest of `[auth]`).
    pub(crate) fn send_permission(&self) -> SendPermission {
        self.send_permission
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn shutting_down(&self) -> WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// Runs a connection task that shutdown waits for.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// WebSocket sessions on this node.
    pub(crate) fn connection_count(&self) -> usize {
        self.hub.connection_count()
    }

    /// Registers a connection whose frames go to `outbox`, under a fresh random key.
    pub(crate) fn join(self: &Arc<Self>, outbox: Arc<Outbox>) -> Membership {
        Membership::new(self.clone(), outbox)
    }

    /// The outbox of local connection `key`, for [`crate::broker::BrokerHandle::connection`].
    pub(crate) fn outbox_of(&self, key: crate::hub::ConnKey) -> Option<Arc<Outbox>> {
        self.hub.outbox(key)
    }

    /// This node's presence keeper.
    pub(crate) fn presence(&self) -> &presence::Presence {
        &self.presence
    }

    /// Whether every backend is reachable and every dispatch task runs (drives `/readyz`).
    pub(crate) async fn ready(&self) -> Result<(), String> {
        self.hub.ready().await
    }

    /// Begins shutdown: the accept loop stops and every session closes with 1001.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits (at most `server.shutdown_timeout`) for the sessions to drain, then closes the
    /// backends.
    pub(crate) async fn drain(&self) {
        self.tracker.close();
        if tokio::time::timeout(self.server.shutdown_timeout, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                remaining = self.hub.connection_count(),
                "shutdown deadline passed with connections still open"
            );
        }
        // The connections that closed queued their leaves; they go out before the backends
        // close.
        self.presence.close().await;
        self.hub.shutdown().await;
    }

    fn publish_latency(&self, backend: usize) -> Option<&Histogram> {
        self.publish_latency.get(backend)
    }
}
