//! Configuration: one TOML file (docs/config.md), read into [`Config`].
//!
//! Unknown keys are errors, and every error names the file, line, column and key
//! ([`ConfigError`]). The commented built-in default lives in `config/default.toml` and is
//! compiled into the binary.

mod build;
mod error;
mod origins;
mod raw;
mod units;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, Located};
pub use origins::{AllowedOrigins, OriginPattern};
use raw::{RawConfig, RawRoute};
pub use switchyard_backend::{Credentials, TlsFiles};

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
    /// Serve the demo chat page at `/` and the JavaScript client at `/switchyard.js`.
    pub demo_page: bool,
    /// Which browser pages (`Origin` headers) may open WebSockets.
    pub allowed_origins: AllowedOrigins,
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

impl AuthConfig {
    /// Whether a JWT key is configured; without one every WebSocket client is anonymous.
    pub fn has_jwt(&self) -> bool {
        self.jwt_hs256_secret_env.is_some()
            || self.jwt_hs256_secret_file.is_some()
            || self.jwt_rs256_public_key_file.is_some()
            || self.jwt_es256_public_key_file.is_some()
    }
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
        batch_delay: Option<Duration>,
        tls: TlsFiles,
    },
    /// One subscriber connection per master; `publisher_connections` is per master too.
    RedisCluster {
        nodes: Vec<String>,
        publisher_connections: Option<usize>,
        batch_delay: Option<Duration>,
        tls: TlsFiles,
    },
    /// Core NATS, one server or a cluster; no history, no presence.
    Nats {
        servers: Vec<String>,
        auth: Credentials,
        tls: TlsFiles,
    },
}

impl BackendKind {
    pub fn name(&self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redis { .. } => "redis",
            BackendKind::RedisCluster { .. } => "redis-cluster",
            BackendKind::Nats { .. } => "nats",
        }
    }

    /// Whether backends of this kind keep history (routes with `history_size` need it); `check`
    /// refuses such routes on a kind that does not, naming the key and the backend.
    pub fn has_history(&self) -> bool {
        match self {
            BackendKind::Memory | BackendKind::Redis { .. } | BackendKind::RedisCluster { .. } => {
                true
            }
            BackendKind::Nats { .. } => false,
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
            BackendKind::Nats { .. } => false,
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
    let offset = e.span().map_or(0, |s| s.start).min(text.len());
    let message = e.message().trim().to_string();
    // serde's "unknown field" names the key itself; for the rest the path says where. Syntax
    // errors come without a path: the key is read off the text.
    if !key.is_empty() {
        return ConfigError::at(file, text, offset, key, message);
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let message = syntax_message(line, message);
    ConfigError::at(file, text, offset, &key_at(&text[..line_start], line), message)
}

/// The dotted key of `line` in the table the lines `before` it leave open (`server.listen`,
/// `routes[2].match`), for errors serde reports without a path.
fn key_at(before: &str, line: &str) -> String {
    let table = open_table(before);
    let key = match line.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() && !k.trim_start().starts_with('[') => Some(k.trim()),
        _ => None,
    };
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k.to_string(),
        (Some(t), None) => t,
        (None, None) => "(syntax)".to_string(),
    }
}

/// The table the header lines of `before` leave open: `server`, `backends.main`, or the
/// `n`th `[[routes]]` as `routes[n]` (counted from 0, as every other error names routes).
fn open_table(before: &str) -> Option<String> {
    let mut table = None;
    let mut arrays: std::collections::HashMap<&str, usize> = Default::default();
    for line in before.lines().map(str::trim) {
        if let Some((name, _)) = line.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let seen = arrays.entry(name.trim()).or_insert(0);
            table = Some(format!("{}[{seen}]", name.trim()));
            *seen += 1;
        } else if let Some((name, _)) = line.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = Some(name.trim().to_string());
        }
    }
    table
}

/// toml's syntax message, or what is really wrong when toml's text would mislead: `key =`
/// with nothing after it is reported as an unquoted string.
fn syntax_message(line: &str, message: String) -> String {
    let Some((_, value)) = line.split_once('=') else { return message };
    let value = value.split('#').next().unwrap_or("").trim();
    if value.is_empty() {
        return "no value after `=`: write a quoted string, a number, true or false, or remove \
                the line"
            .to_string();
    }
    let parses = |v: &str| toml::from_str::<toml::Table>(&format!("v = {v}")).is_ok();
    let quotable = !value.starts_with(['"', '\'', '[', '{']) && !value.contains('"');
    if quotable && !parses(value) && parses(&format!("\"{value}\"")) {
        return format!("{value} is not a TOML value; strings are quoted: write \"{value}\"");
    }
    if value.starts_with('"') && value.matches('"').count() == 1 {
        return "string not closed: the `\"` at its end is missing".to_string();
    }
    message
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
mod tests_nats;

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
        let routes = c.rules.routes();
        assert_eq!(routes.len(), 2, "rooms, then everything else");
        assert!(routes.iter().all(|r| r.subscribe == Permission::Anyone));
        let rooms = routes[0].presence.expect("the demo page's rooms list who is in them");
        assert!(rooms.join_leave);
        assert!(routes[1].presence.is_none() && routes[1].history.is_some());
    }

    #[test]
    fn the_demo_page_is_on_in_the_builtin_default_only() {
        let c = Config::builtin().expect("default config");
        assert!(c.server.demo_page);
        assert_eq!(
            c.server.allowed_origins.to_string(),
            "http://127.0.0.1:8080, http://localhost:8080"
        );
        assert!(c.server.allowed_origins.allows("http://localhost:8080", None));
        let c = Config::parse("test.toml", "").expect("empty config");
        assert!(!c.server.demo_page);
        assert_eq!(c.server.allowed_origins, AllowedOrigins::SameOrigin);
    }

    #[test]
    fn allowed_origins_are_checked_at_load() {
        let c = Config::parse("t.toml", "[server]\nallowed_origins = [\"*\"]\n").expect("valid");
        assert_eq!(c.server.allowed_origins, AllowedOrigins::Any);
        let l = located(
            "[server]\nallowed_origins = [\n  \"https://chat.example.com\",\n  \"chat.example.com\",\n]\n",
        );
        assert_eq!((l.line, l.column, l.key.as_str()), (4, 3, "server.allowed_origins[1]"));
        assert!(l.message.contains("write scheme://host[:port]"), "{}", l.message);
        let l = located("[server]\nallowed_origins = \"https://chat.example.com\"\n");
        assert_eq!(l.key, "server.allowed_origins");
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
            BackendKind::Redis { tls, .. } => {
                assert_eq!(tls.ca_file.as_deref(), Some(Path::new(&ca)))
            }
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
    fn batch_delay_is_bounded_and_redis_only() {
        let head = "[backends.r]\nkind = \"redis-cluster\"\nnodes = [\"redis://h:7000\"]\n";
        let delay =
            |text: &str| match Config::parse("t.toml", text).expect("valid").backends[0].kind {
                BackendKind::RedisCluster { batch_delay, .. } => batch_delay,
                ref other => panic!("{other:?}"),
            };
        assert_eq!(delay(head), None, "the backend's default");
        assert_eq!(delay(&format!("{head}batch_delay_ms = 0\n")), Some(Duration::ZERO));
        assert_eq!(delay(&format!("{head}batch_delay_ms = 50\n")), Some(Duration::from_millis(50)));
        let l = located(&format!("{head}batch_delay_ms = 51\n"));
        assert_eq!((l.line, l.key.as_str()), (4, "backends.r.batch_delay_ms"));
        assert!(l.message.contains("at most 50"), "{}", l.message);
        let memory = "[backends.m]\nkind = \"memory\"\nbatch_delay_ms = 2\n";
        assert_eq!(located(memory).key, "backends.m.batch_delay_ms");
        let nats =
            "[backends.n]\nkind = \"nats\"\nservers = [\"nats://h:4222\"]\nbatch_delay_ms = 2\n";
        assert_eq!(located(nats).key, "backends.n.batch_delay_ms");
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
        assert_eq!((l.line, l.key.as_str()), (2, "server.listen"));
        assert!(l.message.starts_with("no value after `=`"), "{}", l.message);
    }

    #[test]
    fn syntax_errors_name_the_dotted_key_and_the_real_problem() {
        let l = located("[server]\nlisten = 127.0.0.1:8080\n");
        assert_eq!(l.key, "server.listen");
        assert!(
            l.message.contains("strings are quoted: write \"127.0.0.1:8080\""),
            "{}",
            l.message
        );
        let routes = "[[routes]]\nmatch = \"a\"\n[backends.m]\nkind = \"memory\"\n[[routes]]\n";
        let l = located(&format!("{routes}match = \"b\n"));
        assert_eq!((l.line, l.key.as_str()), (6, "routes[1].match"));
        assert!(l.message.contains("string not closed"), "{}", l.message);
        let l = located("[backends.main]\nkind = memory\n");
        assert_eq!(l.key, "backends.main.kind");
        // A problem toml describes well keeps toml's words.
        let l = located("[server]\nlisten = \"a\" \"b\"\n");
        assert!(l.message.contains("expected newline"), "{}", l.message);
    }

    #[test]
    fn numbers_with_units_say_which_unit_they_want() {
        let l = located("[server]\nmax_frame_bytes = \"64k\"\n");
        assert_eq!(l.key, "server.max_frame_bytes");
        assert!(
            l.message.ends_with("expected a number of bytes without quotes or units, like 65536"),
            "{}",
            l.message
        );
        let l = located("[server]\nping_interval_ms = 2.5\n");
        assert!(l.message.contains("a number of milliseconds"), "{}", l.message);
        let l = located("[backends.m]\nkind = \"memory\"\n[[routes]]\nmatch = \"a\"\nhistory_size = 5\nhistory_ttl_s = \"5m\"\n");
        assert_eq!(l.key, "routes[0].history_ttl_s");
        assert!(l.message.contains("a number of seconds"), "{}", l.message);
        let l = located("[limits]\nmax_subscriptions = -3\n");
        assert!(l.message.contains("integer `-3`, expected a whole number"), "{}", l.message);
    }
}
