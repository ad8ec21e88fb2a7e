//! switchyard: a WebSocket messaging broker for chat/IM and real-time apps.
pub mod channel;
pub mod config;
pub mod protocol;
pub mod routing;
pub mod gateway {
    pub mod wsframe;
}
pub mod metrics;
pub mod outbox;
