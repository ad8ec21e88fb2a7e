//! The broker: wires config, backends, hub and gateway together, and owns what they share.
//!
//! [`Broker::start`] binds the listener and returns a [`BrokerHandle`] that reloads rules and
//! shuts the broker down; the CLI and the integration tests use the same entry point.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram};
use switchyard_backend::{Backend, BackendError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{ApiKeys, AuthSetupError, Authenticator};
use crate::config::{AuthConfig, BackendConfig, Config, LimitsConfig, ServerConfig};
use crate::hub::{Hub, HubBackend};
use crate::metrics::Metrics;
use crate::routing::Rules;

/// What a reload can change: rules (routes, permissions, route limits) and connection limits.
pub struct Live {
    pub rules: Arc<Rules>,
    pub limits: LimitsConfig,
    /// `switchyard_messages_published_total` per route, by route index.
    pub published: Vec<Counter>,
}

impl Live {
    fn new(rules: Arc<Rules>, limits: LimitsConfig) -> Live {
        let published =
            rules.routes().iter().map(|r| Metrics::published(r.pattern.source())).collect();
        Live { rules, limits, published }
    }
}

/// Config sections a reload cannot apply.
struct StartedWith {
    node_id: Option<String>,
    auth: AuthConfig,
    backends: Vec<BackendConfig>,
}

/// State shared by every connection and request.
pub struct Broker {
    pub node: Arc<str>,
    pub hub: Arc<Hub>,
    pub live: ArcSwap<Live>,
    pub server: ServerConfig,
    pub auth: Option<Authenticator>,
    pub api_keys: ApiKeys,
    pub metrics: Metrics,
    pub publish_latency: Vec<Histogram>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Bumped on every successful reload; sessions re-check their subscriptions.
    pub rules_version: watch::Sender<u64>,
    /// Accepted sockets not (yet) WebSocket sessions; with the hub's sessions they stay
    /// within `server.max_connections`.
    pub open_sockets: crate::gateway::accept::OpenSockets,
    /// The restart-only parts the broker started with, so a reload can tell which edits wait
    /// for a restart (`server` is above).
    started: StartedWith,
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
        let node: Arc<str> = Arc::from(config.node_id.clone().unwrap_or_else(generated_node_id));
        let auth = Authenticator::from_config(&config.auth)?;
        let api_keys = ApiKeys::from_config(&config.auth)?;
        // The recorder must exist before any handle is created, or the handles go nowhere.
        crate::metrics::prometheus();
        let metrics = Metrics::new();
        let hub_backends: Vec<HubBackend> = config
            .backends
            .iter()
            .zip(backends)
            .map(|(c, backend)| HubBackend { name: c.name.clone(), backend })
            .collect();
        let publish_latency =
            hub_backends.iter().map(|b| Metrics::publish_latency(&b.name)).collect();
        // `send` travels on a networked backend when there is one: that is the one that
        // reaches other nodes.
        let inbox = config
            .backends
            .iter()
            .position(|b| !matches!(b.kind, crate::config::BackendKind::Memory))
            .or(if config.backends.is_empty() { None } else { Some(0) });
        let hub = Arc::new(Hub::new(node.clone(), hub_backends, inbox, metrics.clone()));
        let tracker = TaskTracker::new();
        hub.start().await.map_err(|source| StartError::Backend { name: "inbox".into(), source })?;
        let listener =
            crate::gateway::accept::bind(config.server.listen, config.server.listen_backlog)
                .map_err(|source| StartError::Bind { addr: config.server.listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: config.server.listen, source })?;
        let broker = Arc::new(Broker {
            node,
            hub,
            live: ArcSwap::from_pointee(Live::new(config.rules.clone(), config.limits.clone())),
            server: config.server.clone(),
            auth,
            api_keys,
            metrics,
            publish_latency,
            shutdown: CancellationToken::new(),
            tracker,
            rules_version: watch::Sender::new(0),
            open_sockets: Default::default(),
            started: StartedWith {
                node_id: config.node_id.clone(),
                auth: config.auth.clone(),
                backends: config.backends.clone(),
            },
        });
        tracing::info!(node = %broker.node, %addr, "switchyard listening");
        let server = tokio::spawn(crate::gateway::serve(broker.clone(), listener));
        Ok(BrokerHandle { broker, addr, server })
    }

    /// A candidate connection key: 64 random bits, so that connection ids cannot be guessed
    /// from one another. The caller re-draws when the hub already has it (see `Hub::register`).
    pub fn next_conn(&self) -> u64 {
        rand::random::<u64>()
    }

    /// Who may `send` over WebSocket (`auth.send`, read once at start like the rest of `[auth]`).
    pub fn send_permission(&self) -> crate::config::SendPermission {
        self.started.auth.send
    }

    /// Swaps in the rules and limits of `config`; refused when it changes the backends.
    pub fn reload(&self, config: &Config) -> Result<(), ReloadError> {
        if config.backends != self.started.backends {
            let names: Vec<String> =
                config.backends.iter().map(|b| format!("{}={}", b.name, b.kind.name())).collect();
            return Err(ReloadError::BackendsChanged(format!("now: {}", names.join(", "))));
        }
        // Everything else outside routes and limits is read once at start: apply the rules, and
        // say plainly which edits are still waiting for a restart.
        let waiting: Vec<&str> = [
            ("[node]", config.node_id != self.started.node_id),
            ("[server]", config.server != self.server),
            ("[auth]", config.auth != self.started.auth),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect();
        if !waiting.is_empty() {
            tracing::warn!(sections = %waiting.join(" "), "these config changes take a restart; routes and limits were reloaded");
        }
        self.live.store(Arc::new(Live::new(config.rules.clone(), config.limits.clone())));
        self.rules_version.send_modify(|v| *v += 1);
        Ok(())
    }
}

fn generated_node_id() -> String {
    format!("n{:08x}", rand::random::<u32>())
}

/// A running broker.
pub struct BrokerHandle {
    broker: Arc<Broker>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl BrokerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub fn node(&self) -> &str {
        &self.broker.node
    }

    /// Loads `config`'s rules into the running broker.
    pub fn reload(&self, config: &Config) -> Result<(), ReloadError> {
        self.broker.reload(config)
    }

    /// Stops accepting, closes clients with 1001, waits for them to drain (at most the
    /// configured shutdown timeout), then closes backends.
    pub async fn shutdown(self) {
        self.broker.shutdown.cancel();
        let _ = self.server.await;
        self.broker.tracker.close();
        if tokio::time::timeout(self.broker.server.shutdown_timeout, self.broker.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.broker.hub.connection_count(),
                "shutdown deadline passed with connections still open"
            );
        }
        self.broker.hub.shutdown().await;
    }
}
