//! Configuration: one TOML file (docs/config.md), read into [`Config`].
//!
//! Unknown keys are errors, and every error names the file, line, column and key
//! ([`ConfigError`]). The commented built-in default lives in `config/default.toml` and is
//! compiled into the binary.

mod build;
mod error;
mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, Located};
use raw::{RawConfig, RawRoute};

use crate::routing::{
    Collision, HistorySettings, Pattern, Permission, PresenceSettings, Route, Rules, Template,
};

/// The built-in default configuration's text.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a file path, or `<built-in default>`.
    pub source: String,
    pub node_id: Option<String>,
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    /// Backends in name order; routes refer to them by index.
    pub backends: Vec<BackendConfig>,
    pub rules: Arc<Rules>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub outbound_queue: usize,
    /// Bytes queued per connection; past either queue bound the connection is closed (4001).
    pub outbound_queue_bytes: usize,
    pub shutdown_timeout: Duration,
    /// A connection silent this long is pinged; silent for another interval, it is closed.
    pub ping_interval: Duration,
    /// How long a client may take to send a request's headers, counted from the connection
    /// or, on a kept-alive connection, from the previous response (so it is also the idle
    /// keep-alive timeout).
    pub header_timeout: Duration,
    /// How long an HTTP API request may take to send its body once its headers are in.
    pub body_timeout: Duration,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Connections the kernel queues before the broker accepts them.
    pub listen_backlog: u32,
}

/// Per-connection limits (route limits live on each [`Route`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Publishes per second per connection.
    pub publish_rate: f64,
    /// Token-bucket size for publishes.
    pub publish_burst: f64,
    pub max_subscriptions: usize,
    /// Deepest nesting of arrays and objects in published or sent `data`.
    pub max_data_depth: usize,
    /// Subscribes and unsubscribes per second per connection.
    pub subscribe_rate: f64,
    /// Token-bucket size for subscribes and unsubscribes; `?channel=` draws on it too.
    pub subscribe_burst: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    /// The environment variable holding the HS256 secret.
    pub jwt_hs256_secret_env: Option<String>,
    /// Or the file holding it (a mounted Kubernetes or Docker secret); one trailing newline
    /// is not part of the secret.
    pub jwt_hs256_secret_file: Option<String>,
    pub jwt_rs256_public_key_file: Option<String>,
    pub jwt_es256_public_key_file: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// The environment variable holding comma-separated API keys.
    pub api_keys_env: Option<String>,
    /// Or the file holding them, in the same format.
    pub api_keys_file: Option<String>,
    /// Who may `send` over WebSocket (the HTTP API is trusted by its key).
    pub send: SendPermission,
}

/// `auth.send`: which WebSocket clients may `send` direct messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SendPermission {
    Anyone,
    /// Clients with a verified token; anonymous ones are refused.
    #[default]
    Authenticated,
    Nobody,
}

impl SendPermission {
    pub fn allows(self, user: Option<&str>) -> bool {
        match self {
            SendPermission::Anyone => true,
            SendPermission::Authenticated => user.is_some(),
            SendPermission::Nobody => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub name: Arc<str>,
    pub kind: BackendKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackendKind {
    Memory,
    Redis {
        url: String,
        subscriber_connections: Option<usize>,
        publisher_connections: Option<usize>,
        tls: RedisTls,
    },
    /// One subscriber connection per master; `publisher_connections` is per master too.
    RedisCluster {
        nodes: Vec<String>,
        publisher_connections: Option<usize>,
        tls: RedisTls,
    },
}

/// TLS files of a `rediss://` Redis backend; checked to exist at load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

impl BackendKind {
    pub fn name(&self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redis { .. } => "redis",
            BackendKind::RedisCluster { .. } => "redis-cluster",
        }
    }

    /// Whether backends of this kind keep history (routes with `history_size` need it). Every
    /// kind does; a new kind that does not makes `check` refuse such routes by name.
    pub fn has_history(&self) -> bool {
        match self {
            BackendKind::Memory | BackendKind::Redis { .. } | BackendKind::RedisCluster { .. } => {
                true
            }
        }
    }
}

impl BackendKind {
    /// Whether backends of this kind keep presence (routes with `presence` need it).
    pub fn has_presence(&self) -> bool {
        match self {
            BackendKind::Memory | BackendKind::Redis { .. } | BackendKind::RedisCluster { .. } => {
                true
            }
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { file: file.clone(), source })?;
        Config::parse(&file, &text)
    }

    /// The built-in default.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::parse("<built-in default>", DEFAULT_CONFIG)
    }

    /// Validates `text`, naming it `file` in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let raw = parse_raw(file, text)?;
        build::Builder { file, text }.build(raw)
    }
}

fn parse_raw(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| toml_error(file, text, &e, ""))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // Spanned values add a private serde field to the path; it is not a key the user wrote.
        let key = e.path().to_string().replace(".$__serde_spanned_private_value", "");
        let key = if key == "." { String::new() } else { key };
        toml_error(file, text, e.inner(), &key)
    })
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error, key: &str) -> ConfigError {
    let offset = e.span().map_or(0, |s| s.start);
    let message = e.message().trim().to_string();
    // serde's "unknown field" names the key itself; for the rest the path says where.
    let key = if key.is_empty() { key_at(text, offset) } else { key.to_string() };
    ConfigError::at(file, text, offset, &key, message)
}

/// The key written at `offset`, for errors serde reports without a path (syntax errors).
fn key_at(text: &str, offset: usize) -> String {
    let line_start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() => k.trim().to_string(),
        _ => "(syntax)".to_string(),
    }
}

/// The largest `history_size`: a recovery or `history` read of that many messages is still one
/// bounded request.
pub const MAX_HISTORY_SIZE: u64 = 100_000;

/// The shortest `presence_ttl_s`: members are renewed every third of it, and a lease shorter
/// than a few seconds would expire members of a node that is merely slow.
pub const MIN_PRESENCE_TTL_S: u64 = 3;

/// The longest `presence_ttl_s`: a day.
pub const MAX_PRESENCE_TTL_S: u64 = 86_400;

/// The smallest `server.max_header_bytes`: hyper's minimum read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    fn located(text: &str) -> Located {
        match Config::parse("test.toml", text) {
            Err(ConfigError::Invalid(l)) => *l,
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    #[test]
    fn builtin_default_loads() {
        let c = Config::builtin().expect("default config");
        assert_eq!(c.server.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.backends[0].kind, BackendKind::Memory);
        assert_eq!(c.rules.routes().len(), 1);
        assert_eq!(c.rules.routes()[0].subscribe, Permission::Anyone);
    }

    #[test]
    fn http_bounds_have_defaults_and_located_errors() {
        let c = Config::parse("test.toml", "").expect("empty config");
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.server.body_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_header_bytes, 16_384);
        assert_eq!(c.server.listen_backlog, 1024);
        let l = located("[server]\nmax_header_bytes = 4096\n");
        assert_eq!((l.key.as_str(), l.line), ("server.max_header_bytes", 2));
        assert!(l.message.contains("at least 8192"), "{}", l.message);
        let l = located("[server]\nheader_timeout_ms = 0\n");
        assert_eq!(l.key, "server.header_timeout_ms");
        let l = located("[server]\nlisten_backlog = 4294967296\n");
        assert_eq!(l.key, "server.listen_backlog");
    }

    #[test]
    fn unknown_key_names_line_column_and_key() {
        let l = located("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
        assert_eq!((l.line, l.column), (3, 1));
        assert!(l.message.contains("unknown field `lisen`"), "{}", l.message);
        assert!(l.key.contains("lisen") || l.message.contains("lisen"));
        let shown = ConfigError::Invalid(Box::new(l)).to_string();
        assert!(shown.starts_with("test.toml:3:1: "), "{shown}");
    }

    #[test]
    fn unknown_backend_points_at_the_value() {
        let l = located(
            "[backends.main]\nkind = \"memory\"\n\n[[routes]]\nmatch = \"**\"\nbackend = \"mian\"\n",
        );
        assert_eq!((l.line, l.column, l.key.as_str()), (6, 11, "routes[0].backend"));
        assert!(l.message.contains("mian") && l.message.contains("main"), "{}", l.message);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let l = located("[server]\nmax_frame_bytes = \"big\"\n");
        assert_eq!(l.key, "server.max_frame_bytes");
        assert_eq!(l.line, 2);
    }

    #[test]
    fn template_with_unknown_capture_is_rejected() {
        let l = located(
            "[backends.m]\nkind = \"memory\"\n[[routes]]\nmatch = \"room.{id}\"\nchannel = \"im:{room}\"\n",
        );
        assert_eq!((l.line, l.key.as_str()), (5, "routes[0].channel"));
    }

    #[test]
    fn routes_that_share_a_backend_channel_are_refused_at_the_later_one() {
        let l = located(
            "[backends.m]\nkind = \"memory\"\n[[routes]]\nmatch = \"user.{id}\"\nchannel = \"im:user:{id}\"\n[[routes]]\nmatch = \"**\"\n",
        );
        assert_eq!((l.line, l.column, l.key.as_str()), (7, 9, "routes[1].match"));
        for want in [
            "routes[1] (match = \"**\", no channel template)",
            "routes[0] (match = \"user.{id}\", channel = \"im:user:{id}\")",
            "\"im:user:a\" would carry both \"user.a\" (routes[0]) and \"im:user:a\" (routes[1])",
        ] {
            assert!(l.message.contains(want), "missing {want:?} in {}", l.message);
        }
    }

    /// Prints how long 10,000 distinct routes take to load (the collision check included).
    #[test]
    fn ten_thousand_routes_load() {
        let mut toml = String::from("[backends.local]\nkind = \"memory\"\n");
        for i in 0..10_000 {
            toml.push_str(&format!(
                "[[routes]]\nmatch = \"tenant{i}.room.{{room}}\"\nchannel = \"t{i}:room:{{room}}\"\n"
            ));
        }
        toml.push_str("[[routes]]\nmatch = \"user.{id}\"\n[[routes]]\nmatch = \"**\"\nchannel = \"app:{**}\"\n");
        let started = std::time::Instant::now();
        let c = Config::parse("big.toml", &toml).expect("10,000 routes load");
        println!("Config::parse of {} routes: {:?}", c.rules.routes().len(), started.elapsed());
        assert_eq!(c.rules.routes().len(), 10_002);
    }

    #[test]
    fn new_bounds_have_defaults_and_located_errors() {
        let c = Config::builtin().expect("default config");
        assert_eq!(c.server.outbound_queue_bytes, 1024 * 1024);
        assert_eq!((c.limits.subscribe_rate, c.limits.subscribe_burst), (100.0, 1000.0));
        assert_eq!(c.auth.send, SendPermission::Authenticated);
        let l = located("[auth]\nsend = \"everyone\"\n");
        assert_eq!((l.line, l.column, l.key.as_str()), (2, 8, "auth.send"));
        assert!(l.message.contains("anyone, authenticated, nobody"), "{}", l.message);
        let l = located("[server]\noutbound_queue_bytes = 0\n");
        assert_eq!((l.line, l.key.as_str()), (2, "server.outbound_queue_bytes"));
        let l = located("[limits]\nsubscribe_rate = -1.0\n");
        assert_eq!((l.line, l.key.as_str()), (2, "limits.subscribe_rate"));
    }

    #[test]
    fn secrets_come_from_an_env_var_or_a_file_never_both() {
        let c = Config::parse(
            "test.toml",
            "[auth]\njwt_hs256_secret_file = \"/run/secrets/jwt\"\napi_keys_file = \"keys\"\n",
        )
        .expect("file-based secrets");
        assert_eq!(c.auth.jwt_hs256_secret_file.as_deref(), Some("/run/secrets/jwt"));
        assert_eq!(c.auth.api_keys_file.as_deref(), Some("keys"));
        assert_eq!(
            (c.auth.jwt_hs256_secret_env.as_deref(), c.auth.api_keys_env.as_deref()),
            (None, None)
        );

        let l = located("[auth]\njwt_hs256_secret_env = \"S\"\njwt_hs256_secret_file = \"s\"\n");
        assert_eq!((l.line, l.column, l.key.as_str()), (3, 25, "auth"));
        assert!(l.message.contains("jwt_hs256_secret_file"), "{}", l.message);
        let l = located("[auth]\napi_keys_env = \"K\"\napi_keys_file = \"k\"\n");
        assert_eq!((l.line, l.column, l.key.as_str()), (3, 17, "auth.api_keys_file"));
        assert!(l.message.contains("one of api_keys_env, api_keys_file"), "{}", l.message);
    }

    #[test]
    fn redis_tls_files_are_checked_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not parsed here").expect("write");
        let ca = ca.display().to_string();
        let head = "[backends.r]\nkind = \"redis\"\n";
        let ok = format!("{head}url = \"rediss://h:6380\"\ntls_ca_file = \"{ca}\"\n");
        let c = Config::parse("t.toml", &ok).expect("valid");
        match &c.backends[0].kind {
            BackendKind::Redis { tls, .. } => assert_eq!(tls.ca_file.as_deref(), Some(ca.as_str())),
            other => panic!("{other:?}"),
        }
        let missing =
            format!("{head}url = \"rediss://h\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n");
        let l = located(&missing);
        assert_eq!((l.line, l.key.as_str()), (4, "backends.r.tls_ca_file"));
        assert!(l.message.contains("/nonexistent/ca.pem"), "{}", l.message);
        let half = format!("{head}url = \"rediss://h\"\ntls_cert_file = \"{ca}\"\n");
        assert_eq!(located(&half).key, "backends.r.tls_key_file");
        let plain = format!("{head}url = \"redis://h\"\ntls_ca_file = \"{ca}\"\n");
        assert!(located(&plain).message.contains("rediss://"));
        let memory = format!("[backends.m]\nkind = \"memory\"\ntls_ca_file = \"{ca}\"\n");
        assert_eq!(located(&memory).key, "backends.m.tls_ca_file");
    }

    #[test]
    fn presence_keys_have_defaults_bounds_and_located_errors() {
        let route = "[backends.m]\nkind = \"memory\"\n[[routes]]\nmatch = \"c.{id}\"\n";
        let c = Config::parse("t.toml", &format!("{route}presence = true\n")).expect("valid");
        let p = c.rules.routes()[0].presence.expect("presence on");
        assert_eq!((p.ttl.as_secs(), p.join_leave), (30, false));
        let on = format!("{route}presence = true\njoin_leave = true\npresence_ttl_s = 10\n");
        let p = Config::parse("t.toml", &on).expect("valid").rules.routes()[0].presence;
        assert_eq!(p.map(|p| (p.ttl.as_secs(), p.join_leave)), Some((10, true)));
        let c = Config::parse("t.toml", route).expect("valid");
        assert_eq!(c.rules.routes()[0].presence, None, "off by default");
        let l = located(&format!("{route}join_leave = true\n"));
        assert_eq!((l.line, l.key.as_str()), (5, "routes[0].join_leave"));
        assert!(l.message.contains("presence = true"), "{}", l.message);
        let l = located(&format!("{route}presence_ttl_s = 10\n"));
        assert_eq!(l.key, "routes[0].presence_ttl_s");
        let l = located(&format!("{route}presence = true\npresence_ttl_s = 2\n"));
        assert_eq!((l.line, l.key.as_str()), (6, "routes[0].presence_ttl_s"));
        let l = located(&format!("{route}presence = \"yes\"\n"));
        assert_eq!(l.line, 5, "{}", l.message);
    }

    #[test]
    fn history_keys_have_defaults_bounds_and_located_errors() {
        let route = "[backends.m]\nkind = \"memory\"\n[[routes]]\nmatch = \"c.{id}\"\n";
        let c = Config::parse("t.toml", &format!("{route}history_size = 50\n")).expect("valid");
        let h = c.rules.routes()[0].history.expect("history on");
        assert_eq!((h.retention.size, h.retention.ttl.as_secs(), h.recovery_max), (50, 300, 1000));
        let c = Config::parse("t.toml", route).expect("valid");
        assert_eq!(c.rules.routes()[0].history, None, "off by default");
        let l = located(&format!("{route}history_ttl_s = 5\n"));
        assert_eq!((l.line, l.key.as_str()), (5, "routes[0].history_ttl_s"));
        assert!(l.message.contains("history_size"), "{}", l.message);
        let l = located(&format!("{route}history_size = 100001\n"));
        assert_eq!(l.key, "routes[0].history_size");
        let l = located(&format!("{route}history_size = 5\nrecovery_max = 0\n"));
        assert_eq!(l.key, "routes[0].recovery_max");
    }

    #[test]
    fn syntax_errors_are_located() {
        let l = located("[server]\nlisten = \n");
        assert_eq!(l.line, 2);
    }
}
