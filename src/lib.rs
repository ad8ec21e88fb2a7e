//! switchyard: a WebSocket messaging broker for chat/IM and real-time apps.
//!
//! # Data path
//!
//! ```text
//! WebSocket client ─► gateway (hyper upgrade; one task per connection: gateway::session)
//!                        │ decoded client frame (protocol) ─► node::client (per connection)
//!                        ▼
//!                     routing: channel name ─► Route (backend, backend channel, permissions, limits)
//!                        │ publish                              ▲ subscribe / unsubscribe
//!                        ▼                                      │
//!                     Backend trait ─► memory | redis | redis-cluster | nats   (plugins/*)
//!                        │ messages from the backend, possibly from other nodes
//!                        ▼
//!                     hub: backend channel ─► local subscribers; one backend subscription per
//!                          channel per node; each message framed ONCE, the same bytes queued
//!                          to every subscriber
//!                        ▼
//!                     outbox (bounded, per connection) ─► socket, everything queued in one write
//! ```
//!
//! # Layout
//!
//! Each module depends only on those listed before it (no cycles):
//!
//! - [`channel`]: the validated channel-name newtype. [`routing`]: compiled rules (a segment
//!   trie) that resolve a channel to a route; pure. [`config`]: the TOML file, validated, with
//!   located errors.
//! - [`protocol`]: client frames in, server frames out, and [`protocol::wire`], the RFC 6455
//!   framing; `ijson` checks the `data` they carry. `auth`: JWT identities and API keys.
//!   `metrics`: every metric, defined once.
//! - `outbox`: the per-connection bounded queue, and who writes a socket when.
//! - `hub`: who on this node listens to what; fan-out; the node inbox for `send`.
//! - `node`: the state connections share, and what a client or the HTTP API may do
//!   (`node::client`, `node::ops`); knows nothing of HTTP or sockets.
//! - `gateway`: the HTTP server, the upgrade (with its origin check), WebSocket sessions, the
//!   HTTP API and the demo page; sees the broker only through `node::Node`.
//! - [`broker`]: starts, reloads and stops it all ([`broker::Broker::start`]); `backends`
//!   builds the backends a config names. [`reload`] watches the config file; [`shutdown`]
//!   waits for the signals that stop the broker.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

// The public API: start and stop a broker, its config, channel names and routing rules, the
// wire protocol (for client authors and the benches), and config watching.
pub mod broker;
pub mod channel;
pub mod config;
pub mod protocol;
pub mod reload;
pub mod routing;
pub mod shutdown;

#[doc(hidden)]
pub mod bench;

mod auth;
mod backends;
mod gateway;
mod hub;
mod ijson;
mod metrics;
mod node;
mod outbox;
