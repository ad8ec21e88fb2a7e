//! What a distributed backend needs, besides addresses, to reach its servers: TLS files and
//! credentials. One definition for the config loader and every backend, so a key means the
//! same thing on every `kind`.

use std::path::{Path, PathBuf};

use crate::BackendError;

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

    /// The client certificate and its key when both are given, `None` when neither is, and
    /// `Invalid` (naming `backend`) for half a pair, which can never work.
    pub fn client_certificate(
        &self,
        backend: &str,
    ) -> Result<Option<(&Path, &Path)>, BackendError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(BackendError::Invalid(format!(
                "{backend} TLS: a client certificate needs both cert and key files"
            ))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_takes_both_files_or_neither() {
        let none = TlsFiles::default();
        assert_eq!(none.client_certificate("redis").map(|p| p.is_none()), Ok(true));
        let both = TlsFiles {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            ..TlsFiles::default()
        };
        let pair = both.client_certificate("nats").expect("a whole pair");
        assert_eq!(pair, Some((Path::new("c.pem"), Path::new("k.pem"))));
        for half in [
            TlsFiles { cert_file: Some("c.pem".into()), ..TlsFiles::default() },
            TlsFiles { key_file: Some("k.pem".into()), ..TlsFiles::default() },
        ] {
            match half.client_certificate("redis") {
                Err(BackendError::Invalid(m)) => assert!(m.starts_with("redis TLS"), "{m}"),
                other => panic!("half a pair: {other:?}"),
            }
        }
    }
}
