//! Configuration: one TOML file (docs/config.md), read into [`Config`].
//!
//! Unknown keys are errors, and every error names the file, line, column and key
//! ([`ConfigError`]). The commented built-in default lives in `config/default.toml` and is
//! compiled into the binary.

mod error;
mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

pub use error::{ConfigError, Located};
use raw::{RawBackend, RawConfig, RawRoute};

use crate::routing::{Collision, Pattern, Permission, Route, Rules, Template};

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
        Builder { file, text }.build(raw)
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

/// The smallest `server.max_header_bytes`: hyper's minimum read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

struct Builder<'a> {
    file: &'a str,
    text: &'a str,
}

impl Builder<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: String,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.file, self.text, span.start, key, message))
    }

    fn positive(
        &self,
        v: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
    ) -> Result<usize, ConfigError> {
        match v {
            None => Ok(default as usize),
            Some(s) if *s.get_ref() == 0 => self.err(s.span(), key, "must be at least 1".into()),
            Some(s) => usize::try_from(*s.get_ref())
                .or_else(|_| self.err(s.span(), key, "is too large".into())),
        }
    }

    fn data_depth(&self, v: &Option<Spanned<u64>>) -> Result<usize, ConfigError> {
        let key = "limits.max_data_depth";
        let depth = self.positive(v, key, 64)?;
        match v {
            Some(s) if depth > crate::ijson::MAX_DEPTH_LIMIT => self.err(
                s.span(),
                key,
                format!("must be at most {}", crate::ijson::MAX_DEPTH_LIMIT),
            ),
            _ => Ok(depth),
        }
    }

    fn millis(
        &self,
        v: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.positive(v, key, default)? as u64))
    }

    fn max_header_bytes(&self, v: &Option<Spanned<u64>>) -> Result<usize, ConfigError> {
        let key = "server.max_header_bytes";
        match v {
            // hyper's read buffer cannot be smaller than this.
            Some(s) if *s.get_ref() < MIN_HEADER_BYTES as u64 => self.err(
                s.span(),
                key,
                format!("must be at least {MIN_HEADER_BYTES} (a request line and a few headers)"),
            ),
            _ => self.positive(v, key, 16_384),
        }
    }

    fn listen_backlog(&self, v: &Option<Spanned<u64>>) -> Result<u32, ConfigError> {
        let key = "server.listen_backlog";
        let n = self.positive(v, key, 1024)?;
        // listen(2) takes an int.
        match (i32::try_from(n), v) {
            (Ok(_), _) => Ok(n as u32),
            (Err(_), Some(s)) => self.err(s.span(), key, "is too large".into()),
            (Err(_), None) => Ok(1024),
        }
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let node_id = match raw.node.id {
            None => None,
            Some(id) => {
                let v = id.get_ref();
                if v.is_empty()
                    || v.len() > 64
                    || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return self.err(
                        id.span(),
                        "node.id",
                        format!("{v:?} must be 1 to 64 characters of A-Z a-z 0-9 _ -"),
                    );
                }
                Some(v.clone())
            }
        };
        let s = &raw.server;
        let listen = match &s.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(l) => match l.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    return self.err(
                        l.span(),
                        "server.listen",
                        format!("{:?} is not an address such as \"127.0.0.1:8080\"", l.get_ref()),
                    )
                }
            },
        };
        let server = ServerConfig {
            listen,
            max_connections: self.positive(
                &s.max_connections,
                "server.max_connections",
                100_000,
            )?,
            max_frame_bytes: self.positive(&s.max_frame_bytes, "server.max_frame_bytes", 65_536)?,
            outbound_queue: self.positive(&s.outbound_queue, "server.outbound_queue", 1024)?,
            outbound_queue_bytes: self.positive(
                &s.outbound_queue_bytes,
                "server.outbound_queue_bytes",
                1024 * 1024,
            )?,
            ping_interval: Duration::from_millis(self.positive(
                &s.ping_interval_ms,
                "server.ping_interval_ms",
                25_000,
            )? as u64),
            shutdown_timeout: Duration::from_millis(self.positive(
                &s.shutdown_timeout_ms,
                "server.shutdown_timeout_ms",
                5000,
            )? as u64),
            header_timeout: self.millis(
                &s.header_timeout_ms,
                "server.header_timeout_ms",
                10_000,
            )?,
            body_timeout: self.millis(&s.body_timeout_ms, "server.body_timeout_ms", 10_000)?,
            max_header_bytes: self.max_header_bytes(&s.max_header_bytes)?,
            listen_backlog: self.listen_backlog(&s.listen_backlog)?,
        };
        let rate = |v: &Option<Spanned<f64>>, key: &str, default: f64| match v {
            None => Ok(default),
            Some(r) if r.get_ref().is_finite() && *r.get_ref() > 0.0 => Ok(*r.get_ref()),
            Some(r) => self.err(r.span(), key, "must be a number above 0".into()),
        };
        let limits = LimitsConfig {
            publish_rate: rate(&raw.limits.publish_rate, "limits.publish_rate", 1000.0)?,
            publish_burst: rate(&raw.limits.publish_burst, "limits.publish_burst", 2000.0)?,
            max_subscriptions: self.positive(
                &raw.limits.max_subscriptions,
                "limits.max_subscriptions",
                1000,
            )?,
            max_data_depth: self.data_depth(&raw.limits.max_data_depth)?,
            subscribe_rate: rate(&raw.limits.subscribe_rate, "limits.subscribe_rate", 100.0)?,
            subscribe_burst: rate(&raw.limits.subscribe_burst, "limits.subscribe_burst", 1000.0)?,
        };
        let auth = self.auth(raw.auth)?;
        let mut backends = Vec::new();
        for (name, b) in raw.backends {
            backends.push(self.backend(&name, b)?);
        }
        let rules = self.rules(&backends, raw.routes)?;
        Ok(Config {
            source: self.file.to_string(),
            node_id,
            server,
            limits,
            auth,
            backends,
            rules: Arc::new(rules),
        })
    }

    /// `[auth]`: at most one JWT key source, and each secret named by environment variable or
    /// by file, not both (which one wins would be a guess).
    fn auth(&self, a: raw::RawAuth) -> Result<AuthConfig, ConfigError> {
        let jwt_sources = [
            &a.jwt_hs256_secret_env,
            &a.jwt_hs256_secret_file,
            &a.jwt_rs256_public_key_file,
            &a.jwt_es256_public_key_file,
        ];
        if let Some(second) = jwt_sources.iter().filter_map(|x| x.as_ref()).nth(1) {
            return self.err(
                second.span(),
                "auth",
                "configure one of jwt_hs256_secret_env, jwt_hs256_secret_file, \
                 jwt_rs256_public_key_file, jwt_es256_public_key_file"
                    .into(),
            );
        }
        if let (Some(_), Some(file)) = (&a.api_keys_env, &a.api_keys_file) {
            return self.err(
                file.span(),
                "auth.api_keys_file",
                "configure one of api_keys_env, api_keys_file".into(),
            );
        }
        Ok(AuthConfig {
            jwt_hs256_secret_env: a.jwt_hs256_secret_env.map(Spanned::into_inner),
            jwt_hs256_secret_file: a.jwt_hs256_secret_file.map(Spanned::into_inner),
            jwt_rs256_public_key_file: a.jwt_rs256_public_key_file.map(Spanned::into_inner),
            jwt_es256_public_key_file: a.jwt_es256_public_key_file.map(Spanned::into_inner),
            jwt_issuer: a.jwt_issuer,
            jwt_audience: a.jwt_audience,
            api_keys_env: a.api_keys_env.map(Spanned::into_inner),
            api_keys_file: a.api_keys_file.map(Spanned::into_inner),
            send: self.send_permission(&a.send)?,
        })
    }

    fn send_permission(&self, v: &Option<Spanned<String>>) -> Result<SendPermission, ConfigError> {
        let Some(v) = v else { return Ok(SendPermission::default()) };
        match v.get_ref().trim() {
            "anyone" => Ok(SendPermission::Anyone),
            "authenticated" => Ok(SendPermission::Authenticated),
            "nobody" => Ok(SendPermission::Nobody),
            other => self.err(
                v.span(),
                "auth.send",
                format!("{other:?} is not one of: anyone, authenticated, nobody"),
            ),
        }
    }

    fn backend(&self, name: &str, b: Spanned<RawBackend>) -> Result<BackendConfig, ConfigError> {
        let key = format!("backends.{name}");
        if !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            || name.is_empty()
        {
            return self.err(b.span(), &key, "backend names are letters, digits, _ and -".into());
        }
        let span = b.span();
        let b = b.into_inner();
        let count = |v: &Option<Spanned<u64>>, k: &str| -> Result<Option<usize>, ConfigError> {
            v.as_ref().map(|_| self.positive(v, &format!("{key}.{k}"), 1)).transpose()
        };
        let subscriber_connections = count(&b.subscriber_connections, "subscriber_connections")?;
        let publisher_connections = count(&b.publisher_connections, "publisher_connections")?;
        let kind = match b.kind.get_ref().as_str() {
            "memory" => {
                let extra = [
                    b.url.as_ref().map(|u| (u.span(), "url")),
                    b.nodes.as_ref().map(|n| (n.span(), "nodes")),
                    b.tls_ca_file.as_ref().map(|v| (v.span(), "tls_ca_file")),
                    b.tls_cert_file.as_ref().map(|v| (v.span(), "tls_cert_file")),
                    b.tls_key_file.as_ref().map(|v| (v.span(), "tls_key_file")),
                ];
                if let Some((span, k)) = extra.into_iter().flatten().next() {
                    return self.err(span, &format!("{key}.{k}"), "the memory backend takes no address".into());
                }
                BackendKind::Memory
            }
            "redis" => {
                let url = match (&b.url, &b.nodes) {
                    (Some(u), None) => u.get_ref().clone(),
                    (None, Some(n)) if n.get_ref().len() == 1 => n.get_ref()[0].clone(),
                    (None, Some(n)) => {
                        return self.err(
                            n.span(),
                            &format!("{key}.nodes"),
                            "kind \"redis\" is one server: give `url`, or use kind \"redis-cluster\"".into(),
                        )
                    }
                    (Some(_), Some(n)) => {
                        return self.err(n.span(), &format!("{key}.nodes"), "give either `url` or `nodes`".into())
                    }
                    (None, None) => {
                        return self.err(span, &format!("{key}.url"), "kind \"redis\" needs `url = \"redis://host:port\"`".into())
                    }
                };
                let tls = self.redis_tls(&key, &b, std::slice::from_ref(&url))?;
                BackendKind::Redis { url, subscriber_connections, publisher_connections, tls }
            }
            "redis-cluster" => {
                if let Some(s) = &b.subscriber_connections {
                    return self.err(
                        s.span(),
                        &format!("{key}.subscriber_connections"),
                        "redis-cluster keeps one subscriber connection per master; remove this key".into(),
                    );
                }
                let nodes = match (&b.nodes, &b.url) {
                    (Some(n), _) if !n.get_ref().is_empty() => n.get_ref().clone(),
                    (None, Some(u)) => vec![u.get_ref().clone()],
                    (Some(n), _) => return self.err(n.span(), &format!("{key}.nodes"), "needs at least one seed node URL".into()),
                    (None, None) => {
                        return self.err(span, &format!("{key}.nodes"), "kind \"redis-cluster\" needs `nodes = [\"redis://host:port\", ...]`".into())
                    }
                };
                let tls = self.redis_tls(&key, &b, &nodes)?;
                BackendKind::RedisCluster { nodes, publisher_connections, tls }
            }
            other => {
                return self.err(
                    b.kind.span(),
                    &format!("{key}.kind"),
                    format!("unknown backend kind {other:?}; expected \"memory\", \"redis\" or \"redis-cluster\""),
                )
            }
        };
        Ok(BackendConfig { name: Arc::from(name), kind })
    }

    /// `tls_ca_file`, `tls_cert_file`, `tls_key_file`: each must name a readable file, the
    /// client certificate needs its key (and the other way round), and they only make sense
    /// with `rediss://` URLs. The backend parses the PEM when it starts.
    fn redis_tls(
        &self,
        key: &str,
        b: &RawBackend,
        urls: &[String],
    ) -> Result<RedisTls, ConfigError> {
        let file = |v: &Option<Spanned<String>>, k: &str| -> Result<Option<String>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            match std::fs::metadata(v.get_ref()) {
                Ok(m) if m.is_file() => Ok(Some(v.get_ref().clone())),
                Ok(_) => self.err(
                    v.span(),
                    &format!("{key}.{k}"),
                    format!("{:?} is not a file", v.get_ref()),
                ),
                Err(e) => self.err(
                    v.span(),
                    &format!("{key}.{k}"),
                    format!("cannot read {:?}: {e}", v.get_ref()),
                ),
            }
        };
        let tls = RedisTls {
            ca_file: file(&b.tls_ca_file, "tls_ca_file")?,
            cert_file: file(&b.tls_cert_file, "tls_cert_file")?,
            key_file: file(&b.tls_key_file, "tls_key_file")?,
        };
        match (&b.tls_cert_file, &b.tls_key_file) {
            (Some(c), None) => {
                return self.err(
                    c.span(),
                    &format!("{key}.tls_key_file"),
                    "tls_cert_file needs tls_key_file (the client certificate's private key)"
                        .into(),
                )
            }
            (None, Some(k)) => {
                return self.err(
                    k.span(),
                    &format!("{key}.tls_cert_file"),
                    "tls_key_file needs tls_cert_file (the client certificate)".into(),
                )
            }
            _ => {}
        }
        let first =
            [&b.tls_ca_file, &b.tls_cert_file, &b.tls_key_file].into_iter().flatten().next();
        if let (Some(v), Some(url)) = (first, urls.iter().find(|u| !u.starts_with("rediss://"))) {
            return self.err(
                v.span(),
                key,
                format!("TLS files need rediss:// URLs, but {url:?} is not one"),
            );
        }
        Ok(tls)
    }

    fn rules(
        &self,
        backends: &[BackendConfig],
        routes: Vec<Spanned<RawRoute>>,
    ) -> Result<Rules, ConfigError> {
        let mut compiled = Vec::with_capacity(routes.len());
        // Where each route decides its backend channels: its template, else its pattern.
        let mut places = Vec::with_capacity(routes.len());
        for (index, r) in routes.into_iter().enumerate() {
            let key = |k: &str| format!("routes[{index}].{k}");
            let span = r.span();
            let r = r.into_inner();
            places.push(match &r.channel {
                Some(c) => (c.span(), key("channel")),
                None => (r.pattern.span(), key("match")),
            });
            let pattern = Pattern::parse(r.pattern.get_ref())
                .or_else(|m| self.err(r.pattern.span(), &key("match"), m))?;
            let backend = match &r.backend {
                Some(b) => match backends.iter().position(|x| *x.name == **b.get_ref()) {
                    Some(i) => i,
                    None => {
                        let known: Vec<&str> = backends.iter().map(|x| &*x.name).collect();
                        return self.err(
                            b.span(),
                            &key("backend"),
                            format!(
                                "unknown backend {:?}; defined: {}",
                                b.get_ref(),
                                if known.is_empty() { "none".into() } else { known.join(", ") }
                            ),
                        );
                    }
                },
                None if backends.len() == 1 => 0,
                None => {
                    return self.err(
                        span,
                        &key("backend"),
                        format!("required: {} backends are defined", backends.len()),
                    )
                }
            };
            let template = r
                .channel
                .as_ref()
                .map(|t| {
                    Template::parse(t.get_ref(), &pattern)
                        .or_else(|m| self.err(t.span(), &key("channel"), m))
                })
                .transpose()?;
            let permission = |v: &Option<Spanned<String>>, k: &str| match v {
                None => Ok(Permission::Authenticated),
                Some(p) => Permission::parse(p.get_ref(), &pattern)
                    .or_else(|m| self.err(p.span(), &key(k), m)),
            };
            let subscribe = permission(&r.subscribe, "subscribe")?;
            let publish = permission(&r.publish, "publish")?;
            let max_message_bytes =
                self.positive(&r.max_message_bytes, &key("max_message_bytes"), 65_536)?;
            compiled.push(Route {
                index,
                pattern,
                backend,
                backend_name: backends[backend].name.clone(),
                template,
                subscribe,
                publish,
                max_message_bytes,
            });
        }
        let rules = Rules::new(compiled);
        match rules.collision() {
            None => Ok(rules),
            Some(c) => {
                let (span, key) = places.swap_remove(c.later);
                self.err(span, &key, collision_message(&rules, &c))
            }
        }
    }
}

/// Names both routes, the backend, and a backend channel they would share with the two client
/// channels that would produce it.
fn collision_message(rules: &Rules, c: &Collision) -> String {
    let describe = |i: usize| {
        let r = &rules.routes()[i];
        match &r.template {
            Some(t) => format!(
                "routes[{i}] (match = {:?}, channel = {:?})",
                r.pattern.source(),
                t.source()
            ),
            None => format!("routes[{i}] (match = {:?}, no channel template)", r.pattern.source()),
        }
    };
    let backend = &rules.routes()[c.later].backend_name;
    format!(
        "{} and {} can put different channels on the same backend channel of backend {backend:?}: {:?} would carry both {:?} (routes[{}]) and {:?} (routes[{}]); give one of them a `channel` template whose text the other cannot produce, e.g. channel = \"app:{{**}}\" for a `**` route",
        describe(c.later),
        describe(c.earlier),
        c.backend_channel,
        c.channels[0],
        c.earlier,
        c.channels[1],
        c.later,
    )
}

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
    fn syntax_errors_are_located() {
        let l = located("[server]\nlisten = \n");
        assert_eq!(l.line, 2);
    }
}
