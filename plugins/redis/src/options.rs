//! Options of the Redis backends, with defaults, and parsing of Redis URLs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use switchyard_backend::{BackendError, Incoming, TlsFiles};

use crate::tls::Tls;

/// Connection behaviour shared by both Redis backends.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// How long one TCP connect (plus AUTH) may take before it counts as failed.
    pub connect_timeout: Duration,
    /// Upper bound for the whole of one `publish`, `subscribe` or `unsubscribe` (queueing and a
    /// cluster redirect included); past it they answer `Unavailable`, so a dead or frozen Redis
    /// never makes the broker hang. `ready()` fails as soon as any command or ping has been
    /// unanswered for longer than this.
    pub command_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt (with jitter) up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Connections send PING this often, so a silently dead peer is noticed even without
    /// traffic. A subscriber connection to which Redis has owed a reply for two intervals (any
    /// frame counts as an answer; time blocked on a slow hub does not count) is reconnected.
    pub ping_interval: Duration,
    /// How long after the previous batch a busy publisher connection (its previous batch
    /// carried more than one command) sends the next, so that more commands share one write
    /// and Redis reads once for all of them. A connection that is not busy sends at once.
    /// Zero: batches only gather during the round trip of the previous one.
    pub batch_delay: Duration,
    /// Capacity of the incoming stream handed to the hub (see [`Incoming::DEFAULT_CAPACITY`]).
    pub incoming_capacity: usize,
    /// CA and client certificate for `rediss://` URLs; only allowed with them.
    pub tls: TlsFiles,
}

/// The default of [`ConnectionOptions::batch_delay`], in milliseconds.
pub const DEFAULT_BATCH_DELAY_MS: u64 = 4;

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            batch_delay: Duration::from_millis(DEFAULT_BATCH_DELAY_MS),
            incoming_capacity: Incoming::DEFAULT_CAPACITY,
            tls: TlsFiles::default(),
        }
    }
}

/// Options of [`crate::RedisBackend`] (`kind = "redis"`, one standalone Redis).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://...` for TLS (see
    /// [`ConnectionOptions::tls`] for a private CA or a client certificate), or
    /// `unix:///path/to/redis.sock` (also `redis+unix://`) for a unix socket.
    pub url: String,
    /// Subscriber connections; each channel lives on one of them, chosen by a hash of its name.
    /// One by default: Redis then writes the messages of many channels to a node in one
    /// system call (measured on the rooms shape: 0.22 Redis writes per publish with one
    /// connection per node, 0.56 with four). More spread a huge subscription set's re-subscribe
    /// after a reconnect over several sockets.
    pub subscriber_connections: usize,
    /// Publisher connections. Each is multiplexed: concurrent publishes are pipelined on it
    /// without waiting for each other's replies. A channel always uses the same one, which keeps
    /// one publisher's messages to one channel in order even when it does not await each reply.
    /// One by default, so batches (see [`ConnectionOptions::batch_delay`]) gather all of a
    /// node's commands; a second connection halves every batch.
    pub publisher_connections: usize,
    /// Timeouts, reconnect backoff and buffer sizes.
    pub connection: ConnectionOptions,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379".into(),
            subscriber_connections: 1,
            publisher_connections: 1,
            connection: ConnectionOptions::default(),
        }
    }
}

/// Options of [`crate::RedisClusterBackend`] (`kind = "redis-cluster"`).
#[derive(Debug, Clone)]
pub struct RedisClusterOptions {
    /// Seed node URLs (`redis://` or, for a cluster with `tls-cluster yes`, `rediss://`); any
    /// reachable one is enough to learn the topology. Credentials and scheme of the first URL
    /// are used for every node. Unix sockets cannot reach a cluster's other nodes.
    pub nodes: Vec<String>,
    /// Publisher connections per master (multiplexed, pipelined).
    pub publisher_connections_per_master: usize,
    /// How often the slot map is re-read from the cluster when nothing prompts it. A `MOVED`
    /// reply, a lost connection or a `sunsubscribe` from Redis triggers a refresh at once.
    pub topology_refresh_interval: Duration,
    /// Timeouts, reconnect backoff and buffer sizes.
    pub connection: ConnectionOptions,
}

impl Default for RedisClusterOptions {
    fn default() -> Self {
        RedisClusterOptions {
            nodes: vec!["redis://127.0.0.1:7000".into()],
            publisher_connections_per_master: 1,
            topology_refresh_interval: Duration::from_secs(10),
            connection: ConnectionOptions::default(),
        }
    }
}

/// How to reach one Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16 },
    Unix(PathBuf),
}

/// One Redis server address plus the credentials (and TLS material) to use on it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: Addr,
    pub(crate) info: ConnectionInfo,
    /// Loaded once per backend, shared by every endpoint (`Some` exactly for `Addr::Tls`).
    pub(crate) tls: Option<Arc<Tls>>,
}

impl Endpoint {
    /// Parses a `redis://`, `rediss://`, `unix://` or `redis+unix://` URL and, for TLS, loads
    /// the TLS files; anything wrong is [`BackendError::Invalid`]. TLS files without a TLS
    /// URL are refused rather than silently ignored.
    pub(crate) fn parse(url: &str, tls: &TlsFiles) -> Result<Endpoint, BackendError> {
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://") || !["redis", "rediss", "unix", "redis+unix"].contains(&scheme) {
            return Err(BackendError::Invalid(format!(
                "invalid Redis URL {url:?}: expected redis://host[:port], rediss://host[:port] \
                 or unix:///path/to/redis.sock"
            )));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| BackendError::Invalid(format!("invalid Redis URL {url:?}: {e}")))?;
        let addr = match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp { host, port },
            ConnectionAddr::TcpTls { host, port, .. } => Addr::Tls { host, port },
            ConnectionAddr::Unix(path) => Addr::Unix(path),
            other => {
                return Err(BackendError::Invalid(format!(
                    "invalid Redis URL {url:?}: unsupported address {other:?}"
                )))
            }
        };
        let tls = match &addr {
            Addr::Tls { .. } => Some(Arc::new(Tls::load(tls)?)),
            _ if !tls.is_empty() => {
                return Err(BackendError::Invalid(format!(
                    "redis TLS files are set but {url:?} is not a rediss:// URL"
                )))
            }
            _ => None,
        };
        Ok(Endpoint { addr, info, tls })
    }

    /// The same credentials and transport on another node (cluster nodes learned from the
    /// topology).
    pub(crate) fn with_addr(&self, host: &str, port: u16) -> Endpoint {
        let (addr, conn_addr) = match &self.addr {
            Addr::Tls { .. } => (
                Addr::Tls { host: host.to_owned(), port },
                ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: false,
                    tls_params: None,
                },
            ),
            _ => (
                Addr::Tcp { host: host.to_owned(), port },
                ConnectionAddr::Tcp(host.to_owned(), port),
            ),
        };
        Endpoint { addr, info: self.info.clone().set_addr(conn_addr), tls: self.tls.clone() }
    }

    /// `host:port` (or the socket path), the node's identity in logs and in the topology.
    pub(crate) fn addr(&self) -> String {
        match &self.addr {
            Addr::Tcp { host, port } | Addr::Tls { host, port } => format!("{host}:{port}"),
            Addr::Unix(path) => path.display().to_string(),
        }
    }

    /// A redis-rs client for this endpoint, with the loaded CA and client certificate.
    pub(crate) fn client(&self) -> Result<redis::Client, BackendError> {
        let certificates = self.tls.as_ref().and_then(|t| t.certificates.clone());
        let client = match certificates {
            Some(certs) => redis::Client::build_with_tls(self.info.clone(), certs),
            None => redis::Client::open(self.info.clone()),
        };
        client.map_err(|e| BackendError::Invalid(format!("redis {}: {e}", self.addr())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_urls() {
        let none = TlsFiles::default();
        let e = Endpoint::parse("redis://127.0.0.1:7001", &none).expect("valid");
        assert_eq!(e.addr(), "127.0.0.1:7001");
        let e = Endpoint::parse("redis://:secret@localhost", &none).expect("valid");
        assert_eq!(e.addr, Addr::Tcp { host: "localhost".into(), port: 6379 });
        assert_eq!(e.info.redis_settings().password(), Some("secret"));
        let e = Endpoint::parse("rediss://h:1", &none).expect("valid");
        assert!(e.tls.is_some() && e.addr == Addr::Tls { host: "h".into(), port: 1 });
        assert_eq!(e.with_addr("n", 2).addr, Addr::Tls { host: "n".into(), port: 2 });
        for url in ["unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"] {
            let e = Endpoint::parse(url, &none).expect("valid");
            assert_eq!(e.addr, Addr::Unix("/tmp/r.sock".into()), "{url}");
        }
        for bad in ["", "localhost:6379", "http://x", "redis://h:notaport"] {
            assert!(
                matches!(Endpoint::parse(bad, &none), Err(BackendError::Invalid(_))),
                "{bad:?} should be invalid"
            );
        }
        let missing =
            TlsFiles { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsFiles::default() };
        for url in ["rediss://h:1", "redis://h:1"] {
            assert!(matches!(Endpoint::parse(url, &missing), Err(BackendError::Invalid(_))));
        }
    }
}
