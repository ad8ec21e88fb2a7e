//! Turning the raw TOML into a validated [`Config`]: every check, with the file, line, column
//! and key of what it refuses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::raw::{self, RawBackend, RawConfig};
use super::units::{Amount, Bytes, Count, Millis};
use super::*;

/// Largest `batch_delay_ms` of a Redis backend.
const MAX_BATCH_DELAY_MS: u64 = 50;

pub(super) struct Builder<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
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

    fn positive<U>(
        &self,
        v: &Option<Spanned<Amount<U>>>,
        key: &str,
        default: u64,
    ) -> Result<usize, ConfigError> {
        match v {
            None => Ok(default as usize),
            Some(s) if s.get_ref().get() == 0 => {
                self.err(s.span(), key, "must be at least 1".into())
            }
            Some(s) => usize::try_from(s.get_ref().get())
                .or_else(|_| self.err(s.span(), key, "is too large".into())),
        }
    }

    fn data_depth(&self, v: &Option<Spanned<Count>>) -> Result<usize, ConfigError> {
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
        v: &Option<Spanned<Millis>>,
        key: &str,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.positive(v, key, default)? as u64))
    }

    fn max_header_bytes(&self, v: &Option<Spanned<Bytes>>) -> Result<usize, ConfigError> {
        let key = "server.max_header_bytes";
        match v {
            // hyper's read buffer cannot be smaller than this.
            Some(s) if s.get_ref().get() < MIN_HEADER_BYTES as u64 => self.err(
                s.span(),
                key,
                format!("must be at least {MIN_HEADER_BYTES} (a request line and a few headers)"),
            ),
            _ => self.positive(v, key, 16_384),
        }
    }

    fn listen_backlog(&self, v: &Option<Spanned<Count>>) -> Result<u32, ConfigError> {
        let key = "server.listen_backlog";
        let n = self.positive(v, key, 1024)?;
        // listen(2) takes an int.
        match (i32::try_from(n), v) {
            (Ok(_), _) => Ok(n as u32),
            (Err(_), Some(s)) => self.err(s.span(), key, "is too large".into()),
            (Err(_), None) => Ok(1024),
        }
    }

    pub(super) fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let node_id = self.node_id(raw.node.id)?;
        let server = self.server(&raw.server)?;
        let limits = self.limits(&raw.limits)?;
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

    /// `node.id`: 1 to 64 characters that are safe in connection ids and Redis channel names.
    fn node_id(&self, id: Option<Spanned<String>>) -> Result<Option<String>, ConfigError> {
        let Some(id) = id else { return Ok(None) };
        let v = id.get_ref();
        let valid = !v.is_empty()
            && v.len() <= 64
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            let message = format!("{v:?} must be 1 to 64 characters of A-Z a-z 0-9 _ -");
            return self.err(id.span(), "node.id", message);
        }
        Ok(Some(v.clone()))
    }

    fn server(&self, s: &raw::RawServer) -> Result<ServerConfig, ConfigError> {
        let listen = match &s.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(l) => match l.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    let message =
                        format!("{:?} is not an address such as \"127.0.0.1:8080\"", l.get_ref());
                    return self.err(l.span(), "server.listen", message);
                }
            },
        };
        Ok(ServerConfig {
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
            ping_interval: self.millis(&s.ping_interval_ms, "server.ping_interval_ms", 25_000)?,
            shutdown_timeout: self.millis(
                &s.shutdown_timeout_ms,
                "server.shutdown_timeout_ms",
                5000,
            )?,
            header_timeout: self.millis(
                &s.header_timeout_ms,
                "server.header_timeout_ms",
                10_000,
            )?,
            body_timeout: self.millis(&s.body_timeout_ms, "server.body_timeout_ms", 10_000)?,
            max_header_bytes: self.max_header_bytes(&s.max_header_bytes)?,
            listen_backlog: self.listen_backlog(&s.listen_backlog)?,
            // Off unless a file asks for it: a production broker serves no pages.
            demo_page: s.demo_page.unwrap_or(false),
            allowed_origins: self.allowed_origins(&s.allowed_origins)?,
        })
    }

    /// `server.allowed_origins`: absent means same-origin only; each entry is checked here so
    /// a typo is refused at load instead of refusing every browser at run time.
    fn allowed_origins(
        &self,
        v: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Result<AllowedOrigins, ConfigError> {
        let Some(list) = v else { return Ok(AllowedOrigins::SameOrigin) };
        let entries: Vec<&str> = list.get_ref().iter().map(|e| e.get_ref().as_str()).collect();
        AllowedOrigins::parse(&entries).or_else(|(i, why)| {
            let span = list.get_ref()[i].span();
            self.err(span, &format!("server.allowed_origins[{i}]"), why)
        })
    }

    fn limits(&self, l: &raw::RawLimits) -> Result<LimitsConfig, ConfigError> {
        let rate = |v: &Option<Spanned<f64>>, key: &str, default: f64| match v {
            None => Ok(default),
            Some(r) if r.get_ref().is_finite() && *r.get_ref() > 0.0 => Ok(*r.get_ref()),
            Some(r) => self.err(r.span(), key, "must be a number above 0".into()),
        };
        Ok(LimitsConfig {
            publish_rate: rate(&l.publish_rate, "limits.publish_rate", 1000.0)?,
            publish_burst: rate(&l.publish_burst, "limits.publish_burst", 2000.0)?,
            max_subscriptions: self.positive(
                &l.max_subscriptions,
                "limits.max_subscriptions",
                1000,
            )?,
            max_data_depth: self.data_depth(&l.max_data_depth)?,
            subscribe_rate: rate(&l.subscribe_rate, "limits.subscribe_rate", 100.0)?,
            subscribe_burst: rate(&l.subscribe_burst, "limits.subscribe_burst", 1000.0)?,
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
        let count = |v: &Option<Spanned<Count>>, k: &str| -> Result<Option<usize>, ConfigError> {
            v.as_ref().map(|_| self.positive(v, &format!("{key}.{k}"), 1)).transpose()
        };
        let subscriber_connections = count(&b.subscriber_connections, "subscriber_connections")?;
        let publisher_connections = count(&b.publisher_connections, "publisher_connections")?;
        let batch_delay = self.batch_delay(&key, &b.batch_delay_ms)?;
        if b.kind.get_ref() != "nats" {
            self.no_nats_keys(&key, &b)?;
        }
        let kind = match b.kind.get_ref().as_str() {
            "memory" => self.memory_backend(&key, &b)?,
            "nats" => self.nats_backend(&key, &b, span)?,
            "redis" => {
                let url = self.redis_url(&key, &b, span)?;
                let tls = self.redis_tls(&key, &b, std::slice::from_ref(&url))?;
                BackendKind::Redis {
                    url,
                    subscriber_connections,
                    publisher_connections,
                    batch_delay,
                    tls,
                }
            }
            "redis-cluster" => {
                let nodes = self.cluster_nodes(&key, &b, span)?;
                let tls = self.redis_tls(&key, &b, &nodes)?;
                BackendKind::RedisCluster { nodes, publisher_connections, batch_delay, tls }
            }
            other => {
                return self.err(
                    b.kind.span(),
                    &format!("{key}.kind"),
                    format!("unknown backend kind {other:?}; expected \"memory\", \"redis\", \"redis-cluster\" or \"nats\""),
                )
            }
        };
        Ok(BackendConfig { name: Arc::from(name), kind })
    }

    /// `batch_delay_ms` of a Redis backend: 0 (batches gather only during a round trip) up to
    /// [`MAX_BATCH_DELAY_MS`]; longer would hold publishes for a time clients notice.
    fn batch_delay(
        &self,
        key: &str,
        v: &Option<Spanned<Millis>>,
    ) -> Result<Option<Duration>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) if s.get_ref().get() > MAX_BATCH_DELAY_MS => self.err(
                s.span(),
                &format!("{key}.batch_delay_ms"),
                format!("must be at most {MAX_BATCH_DELAY_MS}"),
            ),
            Some(s) => Ok(Some(Duration::from_millis(s.get_ref().get()))),
        }
    }

    /// The memory backend takes no address or TLS keys.
    fn memory_backend(&self, key: &str, b: &RawBackend) -> Result<BackendKind, ConfigError> {
        let extra = [
            b.url.as_ref().map(|u| (u.span(), "url")),
            b.nodes.as_ref().map(|n| (n.span(), "nodes")),
            b.tls_ca_file.as_ref().map(|v| (v.span(), "tls_ca_file")),
            b.tls_cert_file.as_ref().map(|v| (v.span(), "tls_cert_file")),
            b.tls_key_file.as_ref().map(|v| (v.span(), "tls_key_file")),
            b.batch_delay_ms.as_ref().map(|v| (v.span(), "batch_delay_ms")),
        ];
        if let Some((span, k)) = extra.into_iter().flatten().next() {
            let message = "the memory backend takes no address or connection settings".into();
            return self.err(span, &format!("{key}.{k}"), message);
        }
        Ok(BackendKind::Memory)
    }

    /// `servers`, `token`, `user` and `password` belong to kind "nats" only.
    fn no_nats_keys(&self, key: &str, b: &RawBackend) -> Result<(), ConfigError> {
        let stray = [
            b.servers.as_ref().map(|v| (v.span(), "servers")),
            b.token.as_ref().map(|v| (v.span(), "token")),
            b.user.as_ref().map(|v| (v.span(), "user")),
            b.password.as_ref().map(|v| (v.span(), "password")),
        ];
        if let Some((span, k)) = stray.into_iter().flatten().next() {
            let message = format!("only kind \"nats\" takes `{k}`, not {:?}", b.kind.get_ref());
            return self.err(span, &format!("{key}.{k}"), message);
        }
        Ok(())
    }

    /// Kind "nats": `servers` (seed URLs), a `token` or a `user` with a `password`, and TLS
    /// files; no Redis keys.
    fn nats_backend(
        &self,
        key: &str,
        b: &RawBackend,
        span: std::ops::Range<usize>,
    ) -> Result<BackendKind, ConfigError> {
        let redis_only = [
            b.url.as_ref().map(|v| (v.span(), "url", "give the seed URLs as `servers = [...]`")),
            b.nodes
                .as_ref()
                .map(|v| (v.span(), "nodes", "give the seed URLs as `servers = [...]`")),
            b.subscriber_connections.as_ref().map(|v| {
                (v.span(), "subscriber_connections", "a NATS backend keeps one connection")
            }),
            b.publisher_connections.as_ref().map(|v| {
                (v.span(), "publisher_connections", "a NATS backend keeps one connection")
            }),
            b.batch_delay_ms.as_ref().map(|v| {
                (v.span(), "batch_delay_ms", "async-nats batches the writes of its one connection")
            }),
        ];
        if let Some((span, k, why)) = redis_only.into_iter().flatten().next() {
            return self.err(
                span,
                &format!("{key}.{k}"),
                format!("kind \"nats\" takes no `{k}`: {why}"),
            );
        }
        let servers = match &b.servers {
            Some(s) if !s.get_ref().is_empty() => s.get_ref().clone(),
            Some(s) => {
                return self.err(
                    s.span(),
                    &format!("{key}.servers"),
                    "needs at least one server URL".into(),
                )
            }
            None => {
                return self.err(
                    span,
                    &format!("{key}.servers"),
                    "kind \"nats\" needs `servers = [\"nats://host:4222\", ...]`".into(),
                )
            }
        };
        if let Some((i, url)) = servers.iter().enumerate().find(|(_, u)| {
            !["nats://", "tls://", "ws://", "wss://"].iter().any(|scheme| u.starts_with(scheme))
        }) {
            let servers = b.servers.as_ref().map(|s| s.span()).unwrap_or_default();
            let message = format!("{url:?} is not a nats://, tls://, ws:// or wss:// URL");
            return self.err(servers, &format!("{key}.servers[{i}]"), message);
        }
        let auth = match (&b.token, &b.user, &b.password) {
            (None, None, None) => Credentials::None,
            (Some(t), None, None) => Credentials::Token(t.get_ref().clone()),
            (None, Some(u), Some(p)) => Credentials::UserPassword {
                user: u.get_ref().clone(),
                password: p.get_ref().clone(),
            },
            (Some(t), _, _) => {
                return self.err(
                    t.span(),
                    &format!("{key}.token"),
                    "give a token or a user and password, not both".into(),
                )
            }
            (None, Some(u), None) => {
                return self.err(u.span(), &format!("{key}.password"), "user needs password".into())
            }
            (None, None, Some(p)) => {
                return self.err(p.span(), &format!("{key}.user"), "password needs user".into())
            }
        };
        let tls = self.tls_files(key, b)?;
        Ok(BackendKind::Nats { servers, auth, tls })
    }

    /// The one server of kind "redis": `url`, or `nodes` with exactly one entry.
    fn redis_url(
        &self,
        key: &str,
        b: &RawBackend,
        span: std::ops::Range<usize>,
    ) -> Result<String, ConfigError> {
        match (&b.url, &b.nodes) {
            (Some(u), None) => Ok(u.get_ref().clone()),
            (None, Some(n)) if n.get_ref().len() == 1 => Ok(n.get_ref()[0].clone()),
            (None, Some(n)) => self.err(
                n.span(),
                &format!("{key}.nodes"),
                "kind \"redis\" is one server: give `url`, or use kind \"redis-cluster\"".into(),
            ),
            (Some(_), Some(n)) => {
                self.err(n.span(), &format!("{key}.nodes"), "give either `url` or `nodes`".into())
            }
            (None, None) => self.err(
                span,
                &format!("{key}.url"),
                "kind \"redis\" needs `url = \"redis://host:port\"`".into(),
            ),
        }
    }

    /// The seed nodes of kind "redis-cluster" (which takes no `subscriber_connections`).
    fn cluster_nodes(
        &self,
        key: &str,
        b: &RawBackend,
        span: std::ops::Range<usize>,
    ) -> Result<Vec<String>, ConfigError> {
        if let Some(s) = &b.subscriber_connections {
            return self.err(
                s.span(),
                &format!("{key}.subscriber_connections"),
                "redis-cluster keeps one subscriber connection per master; remove this key".into(),
            );
        }
        match (&b.nodes, &b.url) {
            (Some(n), _) if !n.get_ref().is_empty() => Ok(n.get_ref().clone()),
            (None, Some(u)) => Ok(vec![u.get_ref().clone()]),
            (Some(n), _) => self.err(
                n.span(),
                &format!("{key}.nodes"),
                "needs at least one seed node URL".into(),
            ),
            (None, None) => self.err(
                span,
                &format!("{key}.nodes"),
                "kind \"redis-cluster\" needs `nodes = [\"redis://host:port\", ...]`".into(),
            ),
        }
    }

    /// The TLS files of a Redis backend, which only make sense with `rediss://` URLs.
    fn redis_tls(
        &self,
        key: &str,
        b: &RawBackend,
        urls: &[String],
    ) -> Result<TlsFiles, ConfigError> {
        let tls = self.tls_files(key, b)?;
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

    /// `tls_ca_file`, `tls_cert_file`, `tls_key_file`: each must name a readable file, and the
    /// client certificate needs its key (and the other way round). The backend parses the PEM
    /// when it starts.
    fn tls_files(&self, key: &str, b: &RawBackend) -> Result<TlsFiles, ConfigError> {
        let file = |v: &Option<Spanned<String>>, k: &str| -> Result<Option<PathBuf>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            match std::fs::metadata(v.get_ref()) {
                Ok(m) if m.is_file() => Ok(Some(PathBuf::from(v.get_ref()))),
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
        let tls = TlsFiles {
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
        Ok(tls)
    }

    /// The index of the backend a route names; it may be left out when there is only one.
    fn route_backend(
        &self,
        backends: &[BackendConfig],
        r: &RawRoute,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Result<usize, ConfigError> {
        let Some(b) = &r.backend else {
            if backends.len() == 1 {
                return Ok(0);
            }
            return self.err(
                span,
                key,
                format!("required: {} backends are defined", backends.len()),
            );
        };
        if let Some(i) = backends.iter().position(|x| *x.name == **b.get_ref()) {
            return Ok(i);
        }
        let known: Vec<&str> = backends.iter().map(|x| &*x.name).collect();
        let known = if known.is_empty() { "none".into() } else { known.join(", ") };
        self.err(b.span(), key, format!("unknown backend {:?}; defined: {known}", b.get_ref()))
    }

    /// `history_size` (0, the default: none), `history_ttl_s` (300) and `recovery_max`
    /// (1000); the last two only with a history.
    fn history(
        &self,
        r: &RawRoute,
        key: &dyn Fn(&str) -> String,
    ) -> Result<Option<HistorySettings>, ConfigError> {
        let size = r.history_size.as_ref().map_or(0, |s| s.get_ref().get());
        if size == 0 {
            let stray = [
                (r.history_ttl_s.as_ref().map(Spanned::span), "history_ttl_s"),
                (r.recovery_max.as_ref().map(Spanned::span), "recovery_max"),
            ];
            if let Some((Some(span), k)) = stray.into_iter().find(|(v, _)| v.is_some()) {
                return self.err(span, &key(k), "needs history_size above 0".into());
            }
            return Ok(None);
        }
        if size > MAX_HISTORY_SIZE {
            let span = r.history_size.as_ref().map(|s| s.span()).unwrap_or_default();
            let message = format!("at most {MAX_HISTORY_SIZE} messages per channel");
            return self.err(span, &key("history_size"), message);
        }
        let ttl_s = self.positive(&r.history_ttl_s, &key("history_ttl_s"), 300)?;
        let recovery_max = self.positive(&r.recovery_max, &key("recovery_max"), 1000)?;
        let ttl = std::time::Duration::from_secs(ttl_s as u64);
        let retention = switchyard_backend::Retention { size: size as usize, ttl };
        Ok(Some(HistorySettings { retention, recovery_max }))
    }

    /// `presence` (false), `join_leave` (false) and `presence_ttl_s` (30, at least
    /// [`MIN_PRESENCE_TTL_S`]); the last two only with presence.
    fn presence(
        &self,
        r: &RawRoute,
        key: &dyn Fn(&str) -> String,
    ) -> Result<Option<PresenceSettings>, ConfigError> {
        if !r.presence.as_ref().is_some_and(|p| *p.get_ref()) {
            if let Some(v) = &r.presence_ttl_s {
                return self.err(v.span(), &key("presence_ttl_s"), "needs presence = true".into());
            }
            if let Some(v) = r.join_leave.as_ref().filter(|j| *j.get_ref()) {
                return self.err(v.span(), &key("join_leave"), "needs presence = true".into());
            }
            return Ok(None);
        }
        let ttl_s = self.positive(&r.presence_ttl_s, &key("presence_ttl_s"), 30)?;
        if let Some(v) = r
            .presence_ttl_s
            .as_ref()
            .filter(|_| !(MIN_PRESENCE_TTL_S..=MAX_PRESENCE_TTL_S).contains(&(ttl_s as u64)))
        {
            let message = format!(
                "must be {MIN_PRESENCE_TTL_S} to {MAX_PRESENCE_TTL_S} seconds: each node renews its members every third of it"
            );
            return self.err(v.span(), &key("presence_ttl_s"), message);
        }
        let ttl = std::time::Duration::from_secs(ttl_s as u64);
        let join_leave = r.join_leave.as_ref().is_some_and(|j| *j.get_ref());
        Ok(Some(PresenceSettings { ttl, join_leave }))
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
            let backend = self.route_backend(backends, &r, span.clone(), &key("backend"))?;
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
            let history = self.history(&r, &key)?;
            if history.is_some() && !backends[backend].kind.has_history() {
                let message = format!(
                    "backend {} ({}) keeps no history; remove history_size or use another backend",
                    backends[backend].name,
                    backends[backend].kind.name()
                );
                let at = r.history_size.as_ref().map_or(span.clone(), |v| v.span());
                return self.err(at, &key("history_size"), message);
            }
            let presence = self.presence(&r, &key)?;
            if presence.is_some() && !backends[backend].kind.has_presence() {
                // join_leave needs presence, so a route with both is refused at presence.
                let extra = if presence.as_ref().is_some_and(|p| p.join_leave) {
                    " (and join_leave)"
                } else {
                    ""
                };
                let message = format!(
                    "backend {} ({}) keeps no presence; remove presence{extra} or use another backend",
                    backends[backend].name,
                    backends[backend].kind.name()
                );
                let at = r.presence.as_ref().map_or(span.clone(), |v| v.span());
                return self.err(at, &key("presence"), message);
            }
            compiled.push(Route {
                index,
                pattern,
                backend,
                backend_name: backends[backend].name.clone(),
                template,
                subscribe,
                publish,
                max_message_bytes,
                history,
                presence,
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
