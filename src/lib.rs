//! switchyard: a WebSocket messaging broker for chat/IM and real-time apps.
//!
//! # Data path
//!
//! ```text
//! WebSocket client ─► gateway (hyper upgrade; one task per connection: gateway::session)
//!                        │ decoded client frame (protocol)
//!                        ▼
//!                     routing: channel name ─► Route (backend, backend channel, permissions, limits)
//!                        │ publish                              ▲ subscribe / unsubscribe
//!                        ▼                                      │
//!                     Backend trait ─► memory | redis | redis-cluster   (plugins/*)
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
//! - [`config`]: the TOML file, validated, with located errors; [`reload`] watches it.
//! - [`channel`]: the validated channel-name newtype.
//! - [`routing`]: compiled rules (a segment trie) that resolve a channel to a route; pure.
//! - [`protocol`]: client frames in, server frames out; [`ijson`] checks the `data` they carry.
//! - [`auth`]: JWT identities and API keys.
//! - [`hub`]: who on this node listens to what; fan-out; the node inbox for `send`.
//! - [`outbox`]: the per-connection bounded queue and slow-consumer rule.
//! - [`gateway`]: HTTP server, WebSocket sessions and framing, HTTP API, metrics endpoint.
//! - [`broker`]: wires it all together ([`broker::Broker::start`]); [`backends`] builds the
//!   backends a config names; [`metrics`] defines every metric once; [`shutdown`] waits for
//!   the signals that stop the broker.

#![forbid(unsafe_code)]

pub mod auth;
pub mod backends;
pub mod broker;
pub mod channel;
pub mod config;
pub mod gateway;
pub mod hub;
pub mod ijson;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod reload;
pub mod routing;
pub mod shutdown;
