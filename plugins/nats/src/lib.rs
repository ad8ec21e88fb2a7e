//! The NATS backend for switchyard: `kind = "nats"`, one server or a cluster, core NATS only.
//!
//! Layout:
//! - [`backend`]: [`NatsBackend`], publish/subscribe over one async-nats client connection.
//! - `receipts`: round trips through the server, so publish and subscribe resolve only once
//!   the server has taken them, and publish tells "no subscriber" from "some".
//! - [`subject`]: backend channel names to NATS subjects and back.
//! - `options`: [`NatsOptions`] (seed URLs, token or user and password, TLS files).
//! - `testing` (feature `testing`): starts real `nats-server` processes for tests.
//!
//! # Channels and subjects
//!
//! Backend channel `a.b.c` travels on subject `sy.a.b.c`: one token per `.`-separated
//! segment, under the prefix `sy`. Whitespace, control characters, `*`, `>` and `%` are
//! escaped as `%XX` (upper-case hex), and an empty segment becomes the token `%`, so
//! `room 1.*` is `sy.room%201.%2A` and `a..b` is `sy.a.%.b`. The scheme is reversible
//! ([`subject::to_channel`]), so two channels never share a subject. A node's inbox
//! (`#switchyard:inbox:<node id>`, which `send` publishes to) is an ordinary channel here:
//! `sy.#switchyard:inbox:<node id>`.
//!
//! The payload (the already-encoded server frame) is the NATS message body, unchanged.
//!
//! # Guarantees, and where they differ from Redis
//!
//! - Each subscribed channel is one NATS subscription of this node's connection, however many
//!   local clients hold it. async-nats restores all of them after a reconnect, to whichever
//!   member of the cluster it reached.
//! - `subscribe` resolves once the server this node is connected to has the subscription.
//!   The other members of a cluster learn of it over their routes a moment later; a message
//!   published through another member in that moment can miss it. Redis Cluster has no such
//!   window; NATS gives no way to wait for the routes.
//! - `publish` resolves once the server has taken the message, and answers 0 when no node
//!   anywhere is subscribed (the server's "no responders" answer) and 1 otherwise: core NATS
//!   does not say how many nodes a message reached, so
//!   [`counts_nodes`](switchyard_backend::Backend::counts_nodes) is false. `send` only needs
//!   "none or some" to answer `not_found` for a node that is gone.
//! - While no server is reachable, `publish` and `subscribe` answer `Unavailable` at once and
//!   [`ready`](switchyard_backend::Backend::ready) fails; all of them wait at most
//!   `command_timeout` (3 s) for a server that is connected but does not answer.
//! - No history and no presence: see `docs/nats.md` in the repository for why JetStream and
//!   KV were not used, and what they would take. The broker refuses routes that need them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
mod options;
mod receipts;
pub mod subject;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::NatsBackend;
pub use options::NatsOptions;
pub use switchyard_backend::wait_ready;
pub use switchyard_backend::{Credentials, TlsFiles};
