//! Throwaway TLS material for test servers: a CA, a server certificate for 127.0.0.1 and
//! localhost, and a client certificate, made with the `openssl` CLI in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A CA with one server and one client certificate (PEM files), deleted on drop.
pub struct TestTls {
    dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run openssl (needed to make test certificates; install it): {e}")
    });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issues `name.crt`/`name.key` signed by the CA, with the given extensions.
fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).expect("write extensions");
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(dir, &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ],
    );
}

impl TestTls {
    /// Generates the CA and certificates; panics with openssl's message on failure.
    pub fn generate() -> TestTls {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-redis-tls")
            .tempdir()
            .expect("create a temp dir for test certificates");
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca = [
            "-x509",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=switchyard test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        openssl(d, &[&["req"][..], &ec, &ca].concat());
        // The server certificate also serves as the client certificate of cluster-bus and
        // replication links (`tls-cluster yes`), hence clientAuth too.
        let server = "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
                      keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n";
        issue(d, "server", "/CN=localhost", server);
        let client = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                      extendedKeyUsage=clientAuth\n";
        issue(d, "client", "/CN=switchyard test client", client);
        TestTls { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// The server certificate (PEM), valid for 127.0.0.1 and localhost.
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.crt")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }

    /// A client certificate (PEM) signed by the CA.
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.crt")
    }

    /// The client certificate's private key (PEM).
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// The files a backend needs to trust the CA and present the client certificate.
    pub fn files(&self) -> crate::TlsFiles {
        crate::TlsFiles {
            ca_file: Some(self.ca()),
            cert_file: Some(self.client_cert()),
            key_file: Some(self.client_key()),
        }
    }

    /// The same, as redis-rs wants them (for the harness's own connections).
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        let read =
            |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(self.client_cert()),
                client_key: read(self.client_key()),
            }),
            root_cert: Some(read(self.ca())),
        }
    }
}
