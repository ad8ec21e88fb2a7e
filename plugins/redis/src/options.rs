//! Options of the Redis backends, with defaults, and parsing of Redis URLs.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use switchyard_backend::{BackendError, Incoming};

/// Connection behaviour shared by both Redis backends.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// How long one TCP connect (plus AUTH) may take before it counts as failed.
    pub connect_timeout: Duration,
    /// Upper bound for `publish`, `subscribe` and `unsubscribe`; past it they answer
    /// `Unavailable`, so a dead Redis never makes the broker hang.
    pub command_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt (with jitter) up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Subscriber connections send PING this often; a PING unanswered for two intervals ends
    /// the connection, so a silently dead peer is noticed even without traffic.
    pub ping_interval: Duration,
    /// Capacity of the incoming stream handed to the hub (see [`Incoming::DEFAULT_CAPACITY`]).
    pub incoming_capacity: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            incoming_capacity: Incoming::DEFAULT_CAPACITY,
        }
    }
}

/// Options of [`crate::RedisBackend`] (`kind = "redis"`, one standalone Redis).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]`. TLS (`rediss://`) and unix sockets are not
    /// supported yet and are rejected as invalid.
    pub url: String,
    /// Subscriber connections; each channel lives on one of them, chosen by a hash of its name,
    /// so one huge subscription set does not sit behind a single socket.
    pub subscriber_connections: usize,
    /// Publisher connections. Each is multiplexed: concurrent publishes are pipelined on it
    /// without waiting for each other's replies. A channel always uses the same one, which keeps
    /// one publisher's messages to one channel in order even when it does not await each reply.
    pub publisher_connections: usize,
    /// Timeouts, reconnect backoff and buffer sizes.
    pub connection: ConnectionOptions,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379".into(),
            subscriber_connections: 4,
            publisher_connections: 2,
            connection: ConnectionOptions::default(),
        }
    }
}

/// Options of [`crate::RedisClusterBackend`] (`kind = "redis-cluster"`).
#[derive(Debug, Clone)]
pub struct RedisClusterOptions {
    /// Seed node URLs; any reachable one is enough to learn the topology. Credentials of the
    /// first URL are used for every node.
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

/// One Redis server address plus the credentials to use on it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) info: ConnectionInfo,
}

impl Endpoint {
    /// Parses a `redis://` URL; anything else is [`BackendError::Invalid`].
    pub(crate) fn parse(url: &str) -> Result<Endpoint, BackendError> {
        if !url.starts_with("redis://") {
            return Err(BackendError::Invalid(format!(
                "invalid Redis URL {url:?}: expected redis://host[:port] (rediss:// and unix \
                 sockets are not supported)"
            )));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| BackendError::Invalid(format!("invalid Redis URL {url:?}: {e}")))?;
        match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) => Ok(Endpoint { host, port, info }),
            _ => Err(BackendError::Invalid(format!(
                "invalid Redis URL {url:?}: only plain TCP is supported"
            ))),
        }
    }

    /// The same credentials on another node (cluster nodes learned from the topology).
    pub(crate) fn with_addr(&self, host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            port,
            info: self.info.clone().set_addr(ConnectionAddr::Tcp(host.to_owned(), port)),
        }
    }

    /// `host:port`, the node's identity in logs and in the cluster topology.
    pub(crate) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_urls() {
        let e = Endpoint::parse("redis://127.0.0.1:7001").expect("valid");
        assert_eq!(e.addr(), "127.0.0.1:7001");
        let e = Endpoint::parse("redis://:secret@localhost").expect("valid");
        assert_eq!((e.host.as_str(), e.port), ("localhost", 6379));
        assert_eq!(e.info.redis_settings().password(), Some("secret"));
        for bad in ["", "localhost:6379", "http://x", "rediss://h:1", "redis://h:notaport"] {
            assert!(
                matches!(Endpoint::parse(bad), Err(BackendError::Invalid(_))),
                "{bad:?} should be invalid"
            );
        }
    }
}
