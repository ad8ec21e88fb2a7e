//! TLS material for `rediss://` endpoints, loaded once per backend and shared by both stacks:
//! the publishers (redis-rs, given PEM bytes) and the hand-driven subscribers (tokio-rustls,
//! given a ready `ClientConfig`).

use std::path::Path;
use std::sync::Arc;

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use switchyard_backend::{BackendError, TlsFiles};

/// Loaded and validated TLS material.
pub(crate) struct Tls {
    /// For the subscriber connections.
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// For redis-rs (`None`: its defaults, the system roots and no client certificate).
    pub(crate) certificates: Option<TlsCertificates>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn invalid(what: &str, path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid(format!("redis TLS {what} {}: {e}", path.display()))
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| invalid(what, path, e))
}

impl Tls {
    /// Reads and checks the files now, so a bad file fails the backend's start with a clear
    /// error instead of every later connect.
    pub(crate) fn load(files: &TlsFiles) -> Result<Tls, BackendError> {
        // redis-rs builds its rustls configs with the process-wide default provider; install
        // ring (the one compiled in) so that never depends on which crypto features other
        // crates in the binary happen to enable. Failing means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendError::Invalid(format!("redis TLS: {e}")))?;
        let (roots, ca_pem) = match &files.ca_file {
            Some(path) => {
                let pem = read("CA file", path)?;
                (ca_roots(&pem, path)?, Some(pem))
            }
            None => (system_roots(), None),
        };
        let builder = builder.with_root_certificates(roots);
        let (config, client_tls) = match files.client_certificate("redis")? {
            Some((cert_path, key_path)) => {
                let (cert_pem, key_pem) =
                    (read("cert file", cert_path)?, read("key file", key_path)?);
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("cert file", cert_path, e))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid("key file", key_path, e))?;
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("cert and key", cert_path, e))?;
                (config, Some(ClientTlsConfig { client_cert: cert_pem, client_key: key_pem }))
            }
            None => (builder.with_no_client_auth(), None),
        };
        let certificates = (ca_pem.is_some() || client_tls.is_some())
            .then_some(TlsCertificates { client_tls, root_cert: ca_pem });
        Ok(Tls { config: Arc::new(config), certificates })
    }
}

fn ca_roots(pem: &[u8], path: &Path) -> Result<RootCertStore, BackendError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid("CA file", path, e))?;
        roots.add(cert).map_err(|e| invalid("CA file", path, e))?;
    }
    if roots.is_empty() {
        return Err(invalid("CA file", path, "no certificate in it"));
    }
    Ok(roots)
}

/// The platform's trusted roots; unreadable ones are skipped (a connect then fails with a
/// certificate error that names the server).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "could not load some system TLS roots");
    }
    roots.add_parsable_certificates(loaded.certs);
    roots
}
