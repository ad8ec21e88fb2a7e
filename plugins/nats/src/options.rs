//! What a NATS backend is built from, and how that becomes async-nats's `ConnectOptions`.

use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use switchyard_backend::{BackendError, Credentials, Incoming, TlsFiles};

/// Options of the `nats` backend.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Seed URLs (`nats://host:port`, `tls://host:port`); the client also learns the other
    /// members of a cluster from the server it is connected to.
    pub servers: Vec<String>,
    /// How the backend proves who it is, if the servers ask.
    pub auth: Credentials,
    /// CA and client certificate for TLS.
    pub tls: TlsFiles,
    /// How long `publish`, `subscribe` and `unsubscribe` wait for the server before they answer
    /// `Unavailable`.
    pub command_timeout: Duration,
    /// How long `subscribe` and `unsubscribe` wait, on a cluster, after the server this node
    /// is connected to has taken them, for the other members to learn of it over their
    /// routes (see the crate docs: NATS offers no way to wait for that exactly).
    pub route_settle: Duration,
    /// Capacity of the incoming stream (see [`Incoming::DEFAULT_CAPACITY`]).
    pub incoming_capacity: usize,
    /// Connect to the servers in the order given instead of a random one first (tests use it
    /// to put two nodes on different members of a cluster).
    pub keep_server_order: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            servers: vec!["nats://127.0.0.1:4222".into()],
            auth: Credentials::None,
            tls: TlsFiles::default(),
            command_timeout: Duration::from_secs(3),
            route_settle: Duration::from_millis(10),
            incoming_capacity: Incoming::DEFAULT_CAPACITY,
            keep_server_order: false,
        }
    }
}

impl NatsOptions {
    /// The parsed seed URLs; an empty list or a malformed URL is `Invalid`.
    pub(crate) fn addrs(&self) -> Result<Vec<ServerAddr>, BackendError> {
        if self.servers.is_empty() {
            return Err(BackendError::Invalid("nats backend needs at least one server URL".into()));
        }
        self.servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>().map_err(|e| {
                    BackendError::Invalid(format!("nats server URL {:?}: {e}", redact(s)))
                })
            })
            .collect()
    }

    /// async-nats's options: connect in the background (a broker starts when NATS is down and
    /// heals when it comes back), never give up reconnecting, and reconnect quickly.
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, BackendError> {
        let mut o = ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(self.command_timeout)
            // At most 1 s between attempts (async-nats waits up to 4 s): a broker node should
            // find the surviving members of a cluster soon after its server dies.
            .reconnect_delay_callback(|attempts| {
                let exp = u32::try_from(attempts).unwrap_or(u32::MAX).min(10);
                Duration::from_millis((1u64 << exp).min(1000))
            })
            // The incoming stream is bounded already; a large buffer per subscription keeps
            // async-nats from dropping messages of a busy channel as a slow consumer.
            .subscription_capacity(16 * 1024)
            .name("switchyard");
        if self.keep_server_order {
            o = o.retain_servers_order();
        }
        o = match &self.auth {
            Credentials::None => o,
            Credentials::Token(t) => o.token(t.clone()),
            Credentials::UserPassword { user, password } => {
                o.user_and_password(user.clone(), password.clone())
            }
        };
        if !self.tls.is_empty() {
            o = o.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = self.tls.client_certificate("nats")? {
            o = o.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
        }
        Ok(o)
    }
}

/// `url` without its credentials, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_secrets_kept_out_of_messages() {
        let o = NatsOptions { servers: vec![], ..Default::default() };
        assert!(o.addrs().is_err());
        let o = NatsOptions {
            servers: vec!["nats://127.0.0.1:4222".into(), "tls://10.0.0.2:4443".into()],
            ..Default::default()
        };
        assert_eq!(o.addrs().map(|a| a.len()), Ok(2));
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://…@h:4222");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
        let auth = Credentials::UserPassword { user: "u".into(), password: "secret".into() };
        assert!(!format!("{auth:?}").contains("secret"));
        assert!(!format!("{:?}", Credentials::Token("secret".into())).contains("secret"));
    }

    #[test]
    fn half_a_client_certificate_is_refused() {
        let o = NatsOptions {
            tls: TlsFiles { cert_file: Some("c.pem".into()), ..Default::default() },
            ..Default::default()
        };
        assert!(o.connect_options().is_err());
    }
}
