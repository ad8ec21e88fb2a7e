//! The TOML file's shape, as serde reads it. Values that later checks may reject are kept
//! `Spanned` so those errors can point at them too.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::units::{Bytes, Count, Millis, Seconds};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub node: RawNode,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub backends: BTreeMap<String, Spanned<RawBackend>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub id: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<Count>>,
    pub max_frame_bytes: Option<Spanned<Bytes>>,
    pub outbound_queue: Option<Spanned<Count>>,
    pub outbound_queue_bytes: Option<Spanned<Bytes>>,
    pub shutdown_timeout_ms: Option<Spanned<Millis>>,
    pub ping_interval_ms: Option<Spanned<Millis>>,
    pub header_timeout_ms: Option<Spanned<Millis>>,
    pub body_timeout_ms: Option<Spanned<Millis>>,
    pub max_header_bytes: Option<Spanned<Bytes>>,
    pub listen_backlog: Option<Spanned<Count>>,
    pub demo_page: Option<bool>,
    pub allowed_origins: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub publish_rate: Option<Spanned<f64>>,
    pub publish_burst: Option<Spanned<f64>>,
    pub max_subscriptions: Option<Spanned<Count>>,
    pub max_data_depth: Option<Spanned<Count>>,
    pub subscribe_rate: Option<Spanned<f64>>,
    pub subscribe_burst: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub jwt_hs256_secret_env: Option<Spanned<String>>,
    pub jwt_hs256_secret_file: Option<Spanned<String>>,
    pub jwt_rs256_public_key_file: Option<Spanned<String>>,
    pub jwt_es256_public_key_file: Option<Spanned<String>>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub api_keys_env: Option<Spanned<String>>,
    pub api_keys_file: Option<Spanned<String>>,
    pub send: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub kind: Spanned<String>,
    pub url: Option<Spanned<String>>,
    pub nodes: Option<Spanned<Vec<String>>>,
    pub subscriber_connections: Option<Spanned<Count>>,
    pub publisher_connections: Option<Spanned<Count>>,
    pub batch_delay_ms: Option<Spanned<Millis>>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
    /// NATS only: seed server URLs, and credentials.
    pub servers: Option<Spanned<Vec<String>>>,
    pub token: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(rename = "match")]
    pub pattern: Spanned<String>,
    pub backend: Option<Spanned<String>>,
    pub channel: Option<Spanned<String>>,
    pub subscribe: Option<Spanned<String>>,
    pub publish: Option<Spanned<String>>,
    pub max_message_bytes: Option<Spanned<Bytes>>,
    pub history_size: Option<Spanned<Count>>,
    pub history_ttl_s: Option<Spanned<Seconds>>,
    pub recovery_max: Option<Spanned<Count>>,
    pub presence: Option<Spanned<bool>>,
    pub join_leave: Option<Spanned<bool>>,
    pub presence_ttl_s: Option<Spanned<Seconds>>,
}
