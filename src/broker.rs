//! Starting, reloading and stopping a broker: the public entry points.
//!
//! [`Broker::start`] builds the backends, the hub and the [`Node`] (the state connections
//! share), binds the listener and returns a [`BrokerHandle`] that reloads rules and shuts the
//! broker down; the CLI and the integration tests use the same entry point.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_backend::{Backend, BackendError};

use crate::auth::{ApiKeys, AuthSetupError, Authenticator};
use crate::config::{AuthConfig, BackendConfig, Config};
use crate::gateway::accept::OpenSockets;
use crate::hub::{Hub, HubBackend};
use crate::metrics::Metrics;
use crate::node::{Live, Node, Parts};

/// Starts brokers; see [`Broker::start`].
pub struct Broker(());

/// Config sections a reload cannot apply.
struct StartedWith {
    node_id: Option<String>,
    server: crate::config::ServerConfig,
    auth: AuthConfig,
    backends: Vec<BackendConfig>,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("backend {name}: {source}")]
    Backend { name: String, source: BackendError },
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("routes[{route}] keeps history, but backend {backend} keeps none")]
    NoHistory { route: usize, backend: String },
    #[error("routes[{route}] keeps presence, but backend {backend} keeps none")]
    NoPresence { route: usize, backend: String },
}

/// Why a reload was refused; the running rules stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("backends changed ({0}); backend changes take a restart")]
    BackendsChanged(String),
}

impl Broker {
    /// Builds the backends the config names and starts the broker.
    pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
        let mut backends = Vec::new();
        for b in &config.backends {
            let backend = crate::backends::build(b)
                .await
                .map_err(|source| StartError::Backend { name: b.name.to_string(), source })?;
            backends.push(backend);
        }
        Broker::start_with_backends(config, backends).await
    }

    /// Starts the broker on backends built by the caller, one per `config.backends` entry in
    /// order (tests use this to put several brokers on one in-process bus).
    pub async fn start_with_backends(
        config: Config,
        backends: Vec<Arc<dyn Backend>>,
    ) -> Result<BrokerHandle, StartError> {
        for r in config.rules.routes().iter().filter(|r| r.history.is_some()) {
            if !backends.get(r.backend).is_some_and(|b| b.has_history()) {
                return Err(StartError::NoHistory {
                    route: r.index,
                    backend: r.backend_name.to_string(),
                });
            }
        }
        for r in config.rules.routes().iter().filter(|r| r.presence.is_some()) {
            if !backends.get(r.backend).is_some_and(|b| b.has_presence()) {
                return Err(StartError::NoPresence {
                    route: r.index,
                    backend: r.backend_name.to_string(),
                });
            }
        }
        let id: Arc<str> = Arc::from(config.node_id.clone().unwrap_or_else(generated_node_id));
        let auth = Authenticator::from_config(&config.auth)?;
        let api_keys = ApiKeys::from_config(&config.auth)?;
        // The recorder must exist before any handle is created, or the handles go nowhere.
        crate::metrics::prometheus();
        let metrics = Metrics::new();
        let unreachable = wait_reachable(&config, &backends).await;
        let watched: Vec<(Arc<str>, Arc<dyn Backend>)> = unreachable
            .iter()
            .map(|&i| (config.backends[i].name.clone(), backends[i].clone()))
            .collect();
        let hub = start_hub(&config, id.clone(), backends, metrics.clone()).await?;
        let listen = config.server.listen;
        let listener = crate::gateway::accept::bind(listen, config.server.listen_backlog)
            .map_err(|source| StartError::Bind { addr: listen, source })?;
        let addr =
            listener.local_addr().map_err(|source| StartError::Bind { addr: listen, source })?;
        let node = Arc::new(Node::new(Parts {
            id,
            hub,
            live: Live::new(config.rules.clone(), config.limits.clone()),
            server: config.server.clone(),
            auth,
            api_keys,
            send_permission: config.auth.send,
            metrics,
        }));
        tracing::info!(node = %node.id(), %addr, "switchyard listening");
        if config.server.demo_page {
            tracing::info!("demo chat page: http://{addr}/ (server.demo_page)");
        }
        for (name, backend) in watched {
            node.spawn(announce_reachable(node.clone(), name, backend));
        }
        let open_sockets = OpenSockets::default();
        let server =
            tokio::spawn(crate::gateway::serve(node.clone(), listener, open_sockets.clone()));
        let reloader = Reloader { node: node.clone(), started: Arc::new(StartedWith::of(&config)) };
        let server = std::sync::Mutex::new(Some(server));
        Ok(BrokerHandle { node, reloader, addr, server, open_sockets })
    }
}

/// How long a starting broker waits for its backends to connect before it starts anyway. A
/// reachable Redis connects in milliseconds (a cluster also needs its slot map); waiting for
/// that keeps the node's first subscription, its inbox, from being reported as pending on
/// every healthy start.
const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// Waits up to [`STARTUP_WAIT`] for every backend to be ready; logs and returns the indexes
/// of those that are not (the broker starts anyway; they apply their subscriptions once up).
async fn wait_reachable(config: &Config, backends: &[Arc<dyn Backend>]) -> Vec<usize> {
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    let mut waiting: Vec<(usize, String)> =
        (0..backends.len()).map(|i| (i, String::new())).collect();
    loop {
        let mut still = Vec::new();
        for (i, _) in waiting {
            match tokio::time::timeout_at(deadline, backends[i].ready()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => still.push((i, e.to_string())),
                Err(_) => still.push((i, "no answer yet".to_string())),
            }
        }
        waiting = still;
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, why) in &waiting {
        tracing::warn!(backend = %config.backends[*i].name, error = %why, "backend not reachable at start; starting anyway: /readyz answers 503 and its subscriptions (this node's inbox among them) wait until it is");
    }
    waiting.into_iter().map(|(i, _)| i).collect()
}

/// Logs, once, that a backend unreachable at start has become reachable (so the warnings of
/// the start are followed by the news that they are over).
async fn announce_reachable(node: Arc<Node>, name: Arc<str>, backend: Arc<dyn Backend>) {
    loop {
        tokio::select! {
            _ = node.shutting_down() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if backend.ready().await.is_ok() {
            tracing::info!(backend = %name, "backend reachable: its pending subscriptions, this node's inbox among them, are applied");
            return;
        }
    }
}

/// The hub over `backends`, subscribed to this node's inbox with its dispatch tasks running.
async fn start_hub(
    config: &Config,
    id: Arc<str>,
    backends: Vec<Arc<dyn Backend>>,
    metrics: Metrics,
) -> Result<Arc<Hub>, StartError> {
    let hub_backends: Vec<HubBackend> = config
        .backends
        .iter()
        .zip(backends)
        .map(|(c, backend)| HubBackend { name: c.name.clone(), backend })
        .collect();
    // `send` travels on a networked backend when there is one: that is the one that reaches
    // other nodes.
    let inbox = config
        .backends
        .iter()
        .position(|b| !matches!(b.kind, crate::config::BackendKind::Memory))
        .or(if config.backends.is_empty() { None } else { Some(0) });
    let hub = Arc::new(Hub::new(id, hub_backends, inbox, metrics));
    hub.start().await.map_err(|source| StartError::Backend { name: "inbox".into(), source })?;
    Ok(hub)
}

impl StartedWith {
    fn of(config: &Config) -> StartedWith {
        StartedWith {
            node_id: config.node_id.clone(),
            server: config.server.clone(),
            auth: config.auth.clone(),
            backends: config.backends.clone(),
        }
    }
}

/// Applies new rules to a running broker; cheap to clone, for a config watcher.
#[derive(Clone)]
pub struct Reloader {
    node: Arc<Node>,
    started: Arc<StartedWith>,
}

impl Reloader {
    /// Swaps in the rules and limits of `config`; refused when it changes the backends. Other
    /// restart-only edits are applied at the next restart, and a warning names them.
    pub fn reload(&self, config: &Config) -> Result<(), ReloadError> {
        let started = &self.started;
        if config.backends != started.backends {
            let names: Vec<String> =
                config.backends.iter().map(|b| format!("{}={}", b.name, b.kind.name())).collect();
            return Err(ReloadError::BackendsChanged(format!("now: {}", names.join(", "))));
        }
        let waiting: Vec<&str> = [
            ("[node]", config.node_id != started.node_id),
            ("[server]", config.server != started.server),
            ("[auth]", config.auth != started.auth),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect();
        if !waiting.is_empty() {
            tracing::warn!(sections = %waiting.join(" "), "these config changes take a restart; routes and limits were reloaded");
        }
        self.node.set_live(Live::new(config.rules.clone(), config.limits.clone()));
        Ok(())
    }

    /// Counts a reload's outcome in `switchyard_config_reloads_total`.
    pub(crate) fn count(&self, ok: bool) {
        let m = self.node.metrics();
        if ok { &m.reload_ok } else { &m.reload_failed }.increment(1);
    }

    /// Resolves once the broker begins shutting down.
    pub(crate) async fn stopped(&self) {
        self.node.shutting_down().await
    }
}

fn generated_node_id() -> String {
    format!("n{:08x}", rand::random::<u32>())
}

/// What a connection holds right now (see [`BrokerHandle::connection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Bytes queued to the connection and not yet taken by its socket.
    pub queued_bytes: usize,
    /// Whether a close was requested (slow consumer, ping timeout, expiry, shutdown).
    pub closing: bool,
}

/// A running broker.
pub struct BrokerHandle {
    node: Arc<Node>,
    reloader: Reloader,
    addr: SocketAddr,
    /// The accept loop; taken by the first [`BrokerHandle::shutdown`].
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    open_sockets: OpenSockets,
}

impl BrokerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node id (`node_id` in the config, or a generated one).
    pub fn node(&self) -> &str {
        self.node.id()
    }

    /// Loads `config`'s rules into the running broker.
    pub fn reload(&self, config: &Config) -> Result<(), ReloadError> {
        self.reloader.reload(config)
    }

    /// A handle that reloads this broker, for a config watcher ([`crate::reload::watch`]).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Accepted sockets that are not WebSocket sessions (yet).
    pub fn open_sockets(&self) -> usize {
        self.open_sockets.get()
    }

    /// The state of local connection `id` (as its welcome frame gave it); None when it is not
    /// connected to this node.
    pub fn connection(&self, id: &str) -> Option<ConnectionInfo> {
        let (node, key) = crate::node::ops::parse_conn_id(id)?;
        if node != self.node.id() {
            return None;
        }
        let outbox = self.node.outbox_of(key)?;
        Some(ConnectionInfo { queued_bytes: outbox.queued_bytes(), closing: outbox.is_closing() })
    }

    /// Stops accepting, closes clients with 1001, waits for them to drain (at most the
    /// configured shutdown timeout), then closes backends. The handle still answers
    /// [`BrokerHandle::connection`] afterwards.
    pub async fn shutdown(&self) {
        self.node.begin_shutdown();
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            let _ = server.await;
        }
        self.node.drain().await;
    }
}
