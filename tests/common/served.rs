//! The broker binary as an operator runs it (`switchyard serve`), in a process of its own.
//!
//! Metrics go to a process-wide recorder: every in-process broker of a test binary shares one,
//! so a test there cannot tell its own counts from its neighbours'. Tests that read `/metrics`
//! run the binary instead, and each gets a recorder of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use super::http_client::try_http;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// How long the process may take to answer its first request.
const STARTUP: Duration = Duration::from_secs(20);

/// A `switchyard serve` child on a free loopback port; killed when dropped.
pub struct ServedBroker {
    child: Child,
    pub addr: SocketAddr,
    /// The config file it was started with (rewrite it to test reloads).
    pub config: PathBuf,
    /// Holds the config and the log (`serve.log`).
    pub dir: tempfile::TempDir,
}

impl ServedBroker {
    /// Starts `serve` with `toml` and waits until it answers HTTP. `toml` must not have a
    /// `[server]` table: `[server]` and the listen address are put in front, so keys at the
    /// top of `toml`, before any table, are more `[server]` keys.
    pub async fn start(toml: &str) -> ServedBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        // The OS picks a free port; another process could take it before the broker binds,
        // which the startup wait below would report.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probe for a free port")
            .port();
        let config = dir.path().join("switchyard.toml");
        let text = format!("[server]\nlisten = \"127.0.0.1:{port}\"\n{toml}");
        std::fs::write(&config, text).expect("write config");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
        let child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().expect("utf-8 temp path")])
            .stderr(log)
            .spawn()
            .expect("spawn switchyard serve");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut served = ServedBroker { child, addr, config, dir };
        served.wait_ready().await;
        served
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP;
        while try_http(self.addr, "GET", "/healthz", &[], "").await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("serve exited with {status} before answering:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "serve not up after {STARTUP:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = super::http(self.addr, "GET", "/metrics", &[], "").await;
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// The sum of every sample of metric `name` (all label sets) in `/metrics`.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        sum_samples(&self.metrics().await, name)
    }

    /// Waits for the process to exit by itself (after SIGTERM, say).
    pub async fn exit_status(mut self) -> ExitStatus {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for serve") {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every sample of metric `name` (all label sets) in a Prometheus text page.
pub fn sum_samples(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
