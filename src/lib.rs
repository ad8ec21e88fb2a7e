//! switchyard: a WebSocket messaging broker for chat/IM and real-time apps.
pub mod auth;
pub mod backends;
pub mod broker;
pub mod channel;
pub mod config;
pub mod gateway;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod reload;
pub mod routing;
pub mod shutdown;
