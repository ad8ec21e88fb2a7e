//! Test harness: real `redis-server` processes on free ports, in temporary directories, killed
//! on Drop. Readiness is always polled (PING, `cluster_state:ok`), never slept for.
//!
//! Every helper panics with a clear message when something is wrong, and in particular when
//! `redis-server` is not on PATH: a test that needs Redis must fail, never pass silently.
//!
//! The helpers are synchronous (they block); call them from a multi-threaded tokio runtime
//! (`#[tokio::test(flavor = "multi_thread")]`) so the backends' tasks keep running meanwhile.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use switchyard_backend::testing::{self, require_binary, ServerProcess};
pub use switchyard_backend::testing::{wait_until, READY_TIMEOUT};
use tempfile::TempDir;

use crate::slot::key_slot;
use crate::topology::parse_cluster_slots;

mod tls;

pub use tls::TestTls;

/// How clients reach a test server.
#[derive(Clone)]
enum Transport {
    Plain,
    /// TLS only (`--port 0`); `true` when clients must present a certificate.
    Tls(Arc<TestTls>, bool),
    /// A unix socket only (`--port 0`).
    Unix,
}

/// Cluster node timeout of test clusters: short, so a killed master fails over in ~2 s.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

fn require_redis_server() {
    require_binary(&["redis-server"], "install it, e.g. `apt-get install redis-server`");
}

/// A port that is free, and (for cluster nodes) whose cluster bus port `port + 10000` is too.
fn free_port(cluster: bool) -> u16 {
    for _ in 0..200 {
        let port = testing::free_port();
        if !cluster {
            return port;
        }
        if port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("found no free port pair for a redis cluster node");
}

/// One `redis-server` process.
pub struct RedisServer {
    port: u16,
    cluster: bool,
    dir: TempDir,
    process: ServerProcess,
    transport: Transport,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false, Transport::Plain)
    }

    /// Starts a standalone server reachable only over TLS (`rediss://`), with `tls`'s server
    /// certificate; `require_client_cert` sets `tls-auth-clients yes` (else `optional`).
    pub fn start_tls(tls: &Arc<TestTls>, require_client_cert: bool) -> RedisServer {
        RedisServer::start_with(false, Transport::Tls(tls.clone(), require_client_cert))
    }

    /// Starts a standalone server reachable only on a unix socket (`unix://`).
    pub fn start_unix() -> RedisServer {
        RedisServer::start_with(false, Transport::Unix)
    }

    fn start_with(cluster: bool, transport: Transport) -> RedisServer {
        require_redis_server();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-redis-test")
            .tempdir()
            .expect("create a temp dir for redis-server");
        let mut server = RedisServer {
            port: free_port(cluster),
            cluster,
            dir,
            process: ServerProcess::default(),
            transport,
        };
        server.spawn();
        server
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        self.transport_args(&mut cmd);
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &CLUSTER_NODE_TIMEOUT_MS.to_string()])
                // Replicas may fail over however stale they are: tests kill masters at will.
                .args(["--cluster-replica-validity-factor", "0"]);
        }
        self.process.start(&mut cmd);
        self.wait_ping();
    }

    fn transport_args(&self, cmd: &mut Command) {
        let port = self.port.to_string();
        match &self.transport {
            Transport::Plain => {
                cmd.args(["--port", &port]);
            }
            Transport::Tls(tls, require) => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(tls.server_cert())
                    .arg("--tls-key-file")
                    .arg(tls.server_key())
                    .arg("--tls-ca-cert-file")
                    .arg(tls.ca())
                    .args(["--tls-auth-clients", if *require { "yes" } else { "optional" }]);
                if self.cluster {
                    cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                }
            }
            Transport::Unix => {
                cmd.args(["--port", "0", "--unixsocketperm", "700", "--unixsocket"])
                    .arg(self.socket_path());
            }
        }
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("r.sock")
    }

    fn wait_ping(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.process.exited() {
                panic!(
                    "redis-server on port {} exited with {status} during start; log:\n{}",
                    self.port,
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            if self.try_query(&mut redis::cmd("PING")).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, `rediss://127.0.0.1:PORT` or `unix:///…/r.sock`.
    pub fn url(&self) -> String {
        match self.transport {
            Transport::Plain => format!("redis://127.0.0.1:{}", self.port),
            Transport::Tls(..) => format!("rediss://127.0.0.1:{}", self.port),
            Transport::Unix => format!("unix://{}", self.socket_path().display()),
        }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_started()
    }

    /// The process id, while it runs (for signals such as SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGSTOPs the server: its sockets stay open but it answers nothing, like a frozen or
    /// partitioned host. It is SIGCONTed when the returned guard drops (also on panic), so a
    /// failing test never leaves a stopped process behind.
    pub fn freeze(&self) -> Frozen {
        let pid = self.pid().expect("freeze: redis-server is not running");
        signal(pid, "STOP");
        Frozen { pid: Some(pid) }
    }

    fn try_query(&self, cmd: &mut redis::Cmd) -> redis::RedisResult<Value> {
        let client = match &self.transport {
            Transport::Tls(tls, _) => {
                redis::Client::build_with_tls(self.url(), tls.certificates())?
            }
            _ => redis::Client::open(self.url())?,
        };
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        con.set_read_timeout(Some(Duration::from_secs(5)))?;
        cmd.query(&mut con)
    }

    /// Runs a command on this server; panics on failure.
    pub fn query(&self, cmd: &mut redis::Cmd) -> Value {
        self.try_query(cmd)
            .unwrap_or_else(|e| panic!("redis command on port {} failed: {e}", self.port))
    }

    /// Waits (at most `timeout`) until `replicas` replicas have every write this master
    /// acknowledged so far; how many did.
    pub fn wait_replicas(&self, replicas: u32, timeout: Duration) -> i64 {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // WAIT blocks for up to `timeout`; the query's own read timeout must outlast it.
        let value = self.query(redis::cmd("WAIT").arg(replicas).arg(millis));
        match value {
            Value::Int(n) => n,
            other => panic!("WAIT answered {other:?}"),
        }
    }

    /// Kills the process (SIGKILL: no goodbye to clients or to the cluster) and waits for it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port (and, in a cluster, with the same node id and
    /// `nodes.conf`), and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `CLIENT KILL TYPE pubsub`: drops every subscriber connection; returns how many.
    pub fn kill_pubsub_clients(&self) -> i64 {
        match self.query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub")) {
            Value::Int(n) => n,
            other => panic!("unexpected CLIENT KILL reply {other:?}"),
        }
    }

    /// `PUBSUB NUMSUB channel`: subscribers of a (non-sharded) channel on this server.
    pub fn numsub(&self, channel: &str) -> i64 {
        second_int(self.query(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel)))
    }

    /// `PUBSUB SHARDNUMSUB channel`: subscribers of a shard channel on this server.
    pub fn shardnumsub(&self, channel: &str) -> i64 {
        second_int(self.query(redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel)))
    }

    /// `CLUSTER MYID`.
    pub fn node_id(&self) -> String {
        redis::FromRedisValue::from_redis_value(self.query(redis::cmd("CLUSTER").arg("MYID")))
            .expect("CLUSTER MYID is a string")
    }

    /// `total_reads_processed` from `INFO stats`: how many reads Redis made from its clients'
    /// sockets (this query's own included).
    pub fn reads_processed(&self) -> u64 {
        let stats = self.info("stats");
        stats
            .lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("INFO stats on port {} has no total_reads_processed", self.port)
            })
    }

    fn info(&self, section: &str) -> String {
        self.try_query(
            redis::cmd(if self.cluster && section == "cluster" { "CLUSTER" } else { "INFO" })
                .arg(if section == "cluster" { "INFO" } else { section }),
        )
        .ok()
        .and_then(|v| redis::FromRedisValue::from_redis_value(v).ok())
        .unwrap_or_default()
    }

    /// The port of the master serving `slot`, as this node sees it.
    pub fn slot_owner(&self, slot: u16) -> Option<u16> {
        let reply = self.try_query(redis::cmd("CLUSTER").arg("SLOTS")).ok()?;
        parse_cluster_slots(&reply)
            .ok()?
            .into_iter()
            .find(|r| r.start <= slot && slot <= r.end)
            .map(|r| r.port)
    }
}

fn second_int(v: Value) -> i64 {
    match v {
        Value::Array(items) => match items.get(1) {
            Some(Value::Int(n)) => *n,
            other => panic!("unexpected NUMSUB entry {other:?}"),
        },
        other => panic!("unexpected NUMSUB reply {other:?}"),
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("run kill -{name} {pid}: {e}"));
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// A SIGSTOPped `redis-server` (see [`RedisServer::freeze`]); SIGCONTs it on drop.
pub struct Frozen {
    pid: Option<u32>,
}

impl Frozen {
    /// Resumes the server now.
    pub fn thaw(mut self) {
        if let Some(pid) = self.pid.take() {
            signal(pid, "CONT");
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // Not `signal`: a panic inside drop during unwinding would abort the test binary.
            let _ = Command::new("kill").arg("-CONT").arg(pid.to_string()).status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters (and optionally one replica per master), built by hand with
/// CLUSTER ADDSLOTSRANGE / MEET / REPLICATE so which node is which is known.
pub struct RedisCluster {
    /// `masters[i]` serves the i-th equal share of the slots (after a failover, the promoted
    /// replica takes its place here).
    pub masters: Vec<RedisServer>,
    /// `replicas[i]` replicates `masters[i]` (empty without replicas).
    pub replicas: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters (3 in the usual tests), each with `replicas` replicas (0 or 1),
    /// and waits until every node reports `cluster_state:ok` and agrees on the slot map.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, Transport::Plain)
    }

    /// Like [`RedisCluster::start`] with `masters` masters and no replicas, every node reachable
    /// only over TLS and talking TLS on the cluster bus (`tls-cluster yes`).
    pub fn start_tls(masters: usize, tls: &Arc<TestTls>) -> RedisCluster {
        RedisCluster::start_with(masters, 0, Transport::Tls(tls.clone(), false))
    }

    fn start_with(masters: usize, replicas: usize, transport: Transport) -> RedisCluster {
        assert!(masters > 0 && replicas <= 1, "supported: n masters with 0 or 1 replica each");
        let masters: Vec<RedisServer> =
            (0..masters).map(|_| RedisServer::start_with(true, transport.clone())).collect();
        let replicas: Vec<RedisServer> = if replicas == 1 {
            (0..masters.len()).map(|_| RedisServer::start_with(true, transport.clone())).collect()
        } else {
            Vec::new()
        };
        let share = 16384 / masters.len();
        for (i, m) in masters.iter().enumerate() {
            let start = i * share;
            let end = if i + 1 == masters.len() { 16383 } else { start + share - 1 };
            m.query(redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(start).arg(end));
        }
        let first = &masters[0];
        for node in masters.iter().chain(replicas.iter()).skip(1) {
            node.query(redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(first.port()));
        }
        for (m, r) in masters.iter().zip(replicas.iter()) {
            let id = m.node_id();
            // The replica must have learned of its master through gossip first.
            wait_until(&format!("replica {} to learn master {id}", r.port()), || {
                r.try_query(redis::cmd("CLUSTER").arg("REPLICATE").arg(&id)).is_ok()
            });
        }
        let cluster = RedisCluster { masters, replicas };
        cluster.wait_ok();
        cluster
    }

    /// Seed URLs: every node.
    pub fn urls(&self) -> Vec<String> {
        self.masters.iter().chain(self.replicas.iter()).map(RedisServer::url).collect()
    }

    /// Waits until every running node says `cluster_state:ok`, agrees on the owner of every
    /// master's first slot, and (with replicas) every replica is in sync.
    pub fn wait_ok(&self) {
        wait_until("cluster_state:ok on every node", || {
            let live: Vec<&RedisServer> = self
                .masters
                .iter()
                .chain(self.replicas.iter())
                .filter(|n| n.is_running())
                .collect();
            let ok = live.iter().all(|n| n.info("cluster").contains("cluster_state:ok"));
            let agree = (0..16384u16).step_by(1024).all(|slot| {
                let owners: Vec<Option<u16>> = live.iter().map(|n| n.slot_owner(slot)).collect();
                owners[0].is_some() && owners.iter().all(|o| *o == owners[0])
            });
            ok && agree
        });
    }

    /// The index in `masters` of the master serving `channel`'s slot.
    pub fn master_index_of(&self, channel: &str) -> usize {
        let slot = key_slot(channel.as_bytes());
        let port = self
            .masters
            .iter()
            .filter(|m| m.is_running())
            .find_map(|m| m.slot_owner(slot))
            .expect("a running master knows the slot's owner");
        self.masters
            .iter()
            .position(|m| m.port() == port)
            .expect("the slot owner is one of the masters")
    }

    /// `per_master` channels named `<prefix>.<n>` on every master, so a test that must reach
    /// each master does, rather than hoping random names spread (12 random names miss one of
    /// three masters about once in 40 runs).
    pub fn channels_on_every_master(&self, prefix: &str, per_master: usize) -> Vec<String> {
        let mut counts = vec![0; self.masters.len()];
        let mut out = Vec::new();
        let mut n = 0u64;
        while counts.iter().any(|&c| c < per_master) {
            let channel = format!("{prefix}.{n}");
            n += 1;
            let i = self.master_index_of(&channel);
            if counts[i] < per_master {
                counts[i] += 1;
                out.push(channel);
            }
        }
        out
    }

    /// `PUBSUB SHARDNUMSUB channel` on the master serving it.
    pub fn shardnumsub(&self, channel: &str) -> i64 {
        self.masters[self.master_index_of(channel)].shardnumsub(channel)
    }

    /// `CLIENT KILL TYPE pubsub` on every running node; returns the total killed.
    pub fn kill_pubsub_clients(&self) -> i64 {
        self.masters
            .iter()
            .chain(self.replicas.iter())
            .filter(|n| n.is_running())
            .map(RedisServer::kill_pubsub_clients)
            .sum()
    }

    /// Kills master `i` and waits until its replica has been promoted and the cluster is ok
    /// again. Afterwards `masters[i]` is the promoted replica and `replicas[i]` the dead node.
    pub fn fail_over(&mut self, i: usize) {
        assert!(i < self.replicas.len(), "fail_over needs a cluster started with replicas");
        self.masters[i].kill();
        let replica = &self.replicas[i];
        wait_until(&format!("replica {} to be promoted", replica.port()), || {
            replica.info("replication").contains("role:master")
        });
        std::mem::swap(&mut self.masters[i], &mut self.replicas[i]);
        self.wait_ok();
    }

    /// Moves `slot` from its current master to `masters[to]` the way `redis-cli --cluster
    /// reshard` does (IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE everywhere), and
    /// waits until every master agrees on the new owner.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let target = &self.masters[to];
        let source_port = target.slot_owner(slot).expect("slot has an owner");
        let source = self
            .masters
            .iter()
            .find(|m| m.port() == source_port)
            .expect("slot owner is a known master");
        assert_ne!(source.port(), target.port(), "slot {slot} already on master {to}");
        let (source_id, target_id) = (source.node_id(), target.node_id());
        target
            .query(redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("IMPORTING").arg(&source_id));
        source
            .query(redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("MIGRATING").arg(&target_id));
        loop {
            let keys: Vec<String> = redis::FromRedisValue::from_redis_value(
                source.query(redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100)),
            )
            .expect("GETKEYSINSLOT returns keys");
            if keys.is_empty() {
                break;
            }
            source.query(
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(target.port())
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("KEYS")
                    .arg(&keys),
            );
        }
        for node in std::iter::once(target)
            .chain(std::iter::once(source))
            .chain(self.masters.iter().filter(|m| m.is_running()))
        {
            node.query(redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("NODE").arg(&target_id));
        }
        wait_until(&format!("every node to see slot {slot} on port {}", target.port()), || {
            self.masters
                .iter()
                .chain(self.replicas.iter())
                .filter(|n| n.is_running())
                .all(|n| n.slot_owner(slot) == Some(target.port()))
        });
    }
}
