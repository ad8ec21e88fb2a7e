//! Test harness: real `nats-server` processes on free ports, killed on Drop: one standalone
//! server, or a cluster whose members are joined by routes. Readiness is polled on the
//! monitoring port (`/healthz`, `/routez`), never slept for.
//!
//! Every helper panics with a clear message when something is wrong, and in particular when
//! `nats-server` cannot be run: a test that needs NATS must fail, never pass silently.
//!
//! The helpers are synchronous (they block); call them from a multi-threaded tokio runtime
//! (`#[tokio::test(flavor = "multi_thread")]`) so the backends' tasks keep running meanwhile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_backend::testing::{free_port, require_binary, ServerProcess};
pub use switchyard_backend::testing::{wait_until, READY_TIMEOUT};
use tempfile::TempDir;

/// Ports are found free and then handed to nats-server, so another process may take one in
/// between; a start that fails with "address already in use" is retried on new ports.
const PORT_ATTEMPTS: usize = 5;

/// `nats-server` on PATH, else where Debian's package puts it.
fn binary() -> String {
    require_binary(
        &["nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"],
        "install it, e.g. `apt-get install nats-server`",
    )
}

/// Credentials a test server demands.
#[derive(Clone, Debug, Default)]
pub enum TestAuth {
    /// None.
    #[default]
    None,
    /// `--auth TOKEN`.
    Token(String),
    /// `--user U --pass P`.
    UserPassword(String, String),
}

/// One `nats-server` process.
pub struct NatsServer {
    port: u16,
    monitor_port: u16,
    /// The route listener and the other members' route URLs, for a cluster member.
    cluster: Option<(u16, Vec<String>)>,
    auth: TestAuth,
    extra: Vec<String>,
    dir: TempDir,
    process: ServerProcess,
}

impl NatsServer {
    /// Starts a standalone server on a free port and waits until it is healthy.
    pub fn start() -> NatsServer {
        NatsServer::start_with(TestAuth::None, Vec::new())
    }

    /// Starts a standalone server that demands `auth`, with more `nats-server` arguments
    /// (e.g. `--tlscert`).
    pub fn start_with(auth: TestAuth, extra: Vec<String>) -> NatsServer {
        for _ in 0..PORT_ATTEMPTS {
            let mut server = NatsServer::new(None, auth.clone(), extra.clone());
            server.spawn();
            match server.try_wait_healthy() {
                Ok(()) => return server,
                Err(e) if e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nats-server found no free ports in {PORT_ATTEMPTS} attempts")
    }

    fn new(cluster: Option<(u16, Vec<String>)>, auth: TestAuth, extra: Vec<String>) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-nats-test")
            .tempdir()
            .expect("create a temp dir for nats-server");
        NatsServer {
            port: free_port(),
            monitor_port: free_port(),
            cluster,
            auth,
            extra,
            dir,
            process: ServerProcess::default(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(binary());
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-l")
            .arg(self.log_path());
        if let Some((cluster_port, routes)) = &self.cluster {
            cmd.args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                .args(["--cluster_name", "switchyard-test"]);
            if !routes.is_empty() {
                cmd.args(["--routes", &routes.join(",")]);
            }
        }
        match &self.auth {
            TestAuth::None => {}
            TestAuth::Token(t) => {
                cmd.args(["--auth", t]);
            }
            TestAuth::UserPassword(u, p) => {
                cmd.args(["--user", u, "--pass", p]);
            }
        }
        cmd.args(&self.extra);
        self.process.start(&mut cmd);
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the process runs (it may still be starting).
    pub fn is_running(&mut self) -> bool {
        self.process.is_started() && self.process.exited().is_none()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the process (SIGKILL) and waits for it to end.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the process again on the same ports and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        if let Err(e) = self.try_wait_healthy() {
            panic!("{e}");
        }
    }

    /// Waits until the server answers `/healthz`; the error says why not (with its log).
    fn try_wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(format!("nats-server on port {} exited at start:\n{log}", self.port));
            }
            if self.monitor("/healthz").is_some_and(|b| b.contains("ok")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {READY_TIMEOUT:?} waiting for nats-server on port {} (log: {:?})",
                    self.port,
                    self.log_path()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The body of a monitoring endpoint (`/connz?subs=1`, `/routez`, ...), or `None` when the
    /// server does not answer.
    pub fn monitor(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.lines().next().is_some_and(|l| l.contains(" 200 ")).then(|| body.to_string())
    }

    fn monitor_json(&self, path: &str) -> serde_json::Value {
        let body = self
            .monitor(path)
            .unwrap_or_else(|| panic!("nats-server on port {} did not answer {path}", self.port));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
    }

    /// How many client subscriptions on this server have exactly `subject`.
    pub fn subscriptions(&self, subject: &str) -> usize {
        let connz = self.monitor_json("/connz?subs=1&limit=1024");
        let connections = connz["connections"].as_array().cloned().unwrap_or_default();
        connections
            .iter()
            .filter_map(|c| c["subscriptions_list"].as_array())
            .flatten()
            .filter(|s| s.as_str() == Some(subject))
            .count()
    }

    /// How many client connections this server has.
    pub fn client_connections(&self) -> usize {
        let connz = self.monitor_json("/connz");
        connz["num_connections"].as_u64().unwrap_or(0) as usize
    }

    /// How many routes to other members this server has.
    pub fn routes(&self) -> usize {
        let routez = self.monitor_json("/routez");
        routez["num_routes"].as_u64().unwrap_or(0) as usize
    }
}

/// A cluster of `nats-server` processes, each with routes to all the others.
pub struct NatsCluster {
    /// The members, in start order.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` members and waits until each has a route to every other one.
    pub fn start(n: usize) -> NatsCluster {
        for _ in 0..PORT_ATTEMPTS {
            match NatsCluster::try_start(n) {
                Ok(cluster) => return cluster,
                Err(e) if e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("a nats cluster found no free ports in {PORT_ATTEMPTS} attempts")
    }

    fn try_start(n: usize) -> Result<NatsCluster, String> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route = |p: &u16| format!("nats://127.0.0.1:{p}");
        let mut servers: Vec<NatsServer> = cluster_ports
            .iter()
            .map(|own| {
                let routes = cluster_ports.iter().filter(|p| *p != own).map(route).collect();
                NatsServer::new(Some((*own, routes)), TestAuth::None, Vec::new())
            })
            .collect();
        for s in &mut servers {
            s.spawn();
        }
        for s in &mut servers {
            s.try_wait_healthy()?;
        }
        let cluster = NatsCluster { servers };
        cluster.wait_routes();
        Ok(cluster)
    }

    /// Every member's client URL, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Kills member `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Restarts member `i` on its ports and waits until the running members are all routed
    /// to each other again.
    pub fn restart(&mut self, i: usize) {
        self.servers[i].restart();
        self.wait_routes();
    }

    /// Waits until every running member has a route to every other running one.
    pub fn wait_routes(&self) {
        let running: Vec<&NatsServer> =
            self.servers.iter().filter(|s| s.process.is_started()).collect();
        let want = running.len().saturating_sub(1);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !running.iter().all(|s| s.routes() >= want) {
            if Instant::now() >= deadline {
                let logs: Vec<String> = running
                    .iter()
                    .map(|s| std::fs::read_to_string(s.log_path()).unwrap_or_default())
                    .collect();
                panic!(
                    "timed out after {READY_TIMEOUT:?} waiting for the nats cluster's routes; logs:\n{}",
                    logs.join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Client subscriptions with exactly `subject`, summed over the running members.
    pub fn subscriptions(&self, subject: &str) -> usize {
        self.servers
            .iter()
            .filter(|s| s.process.is_started())
            .map(|s| s.subscriptions(subject))
            .sum()
    }

    /// The index of the member whose client port is `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.servers.iter().position(|s| s.port == port)
    }
}

/// A backend on `servers`, connected (panics after 10 s), trying them in the order given so
/// that tests can put two backends on different members of a cluster.
pub async fn backend(servers: Vec<String>) -> std::sync::Arc<crate::NatsBackend> {
    let options = crate::NatsOptions { servers, keep_server_order: true, ..Default::default() };
    let backend = crate::NatsBackend::connect_and_wait(options, Duration::from_secs(10))
        .await
        .expect("nats backend connects");
    std::sync::Arc::new(backend)
}
