//! Redis backends for switchyard: `redis` (one standalone server) and `redis-cluster`
//! (Redis Cluster with sharded pub/sub).
//!
//! Layout:
//! - [`standalone`]: [`RedisBackend`], PUBLISH/SUBSCRIBE on one server.
//! - [`cluster`]: [`RedisClusterBackend`], SPUBLISH/SSUBSCRIBE routed by slot to the owning
//!   master, with a subscription manager that re-routes channels after failover and slot
//!   migration.
//! - `subscriber`: one hand-driven subscriber connection that owns its channel set and
//!   re-applies it channel by channel after reconnects.
//! - `publisher`: long-lived multiplexed publisher connections (pipelined, no per-message
//!   pool checkout) with background reconnect.
//! - `history`: history (`publish_kept`, `history`) as a stream and a metadata hash per
//!   channel, written and read by Lua scripts; the position header on the wire.
//! - `dial`: opening a subscriber connection (TCP, TLS or unix socket, then AUTH).
//! - `tls`: CA and client certificate for `rediss://`, loaded once for both stacks.
//! - `health`: whether Redis has owed a connection an answer for too long (drives `ready()`).
//! - `slot`, `topology`, `resp`: cluster key slots, the slot map, the RESP2 codec
//!   of the subscriber connections, reconnect backoff.
//! - [`metrics`]: metric names and descriptions.
//! - `testing` (feature `testing`): starts real `redis-server` processes for tests.
//!
//! Both backends start even when Redis is unreachable: they log a warning, fail
//! [`Backend::ready`](switchyard_backend::Backend::ready), answer `publish` with
//! `Unavailable` and heal by themselves when Redis comes back.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
pub mod cluster;
mod dial;
mod health;
mod history;
pub mod metrics;
mod options;
mod presence;
mod publisher;
mod resp;
pub mod slot;
pub mod standalone;
mod subscriber;
mod tls;
mod topology;

#[cfg(feature = "testing")]
pub mod testing;

pub use cluster::RedisClusterBackend;
pub use options::{ConnectionOptions, RedisClusterOptions, RedisOptions};
pub use standalone::RedisBackend;
pub use switchyard_backend::wait_ready;
pub use switchyard_backend::TlsFiles;
