//! What a distributed backend needs, besides addresses, to reach its servers: TLS files and
//! credentials. One definition for the config loader and every backend, so a key means the
//! same thing on every `kind`.

use std::path::PathBuf;

/// PEM files for TLS to the backend's servers; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) to trust. Redis uses them *instead of* the system roots (a private
    /// CA, as Redis deployments usually have); NATS adds them to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, for servers that verify clients; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// No file given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// Credentials given apart from the server URLs (credentials inside a URL work too).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// None (or only those in the URLs).
    #[default]
    None,
    /// A bearer token.
    Token(String),
    /// A user name and its password.
    UserPassword {
        /// The user name.
        user: String,
        /// Its password.
        password: String,
    },
}

// Configs and options are printed in debug logs and panics; secrets are not.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, ..)"),
        }
    }
}
