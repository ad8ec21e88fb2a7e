//! Smoke test: every scenario with tiny sizes against a real switchyard broker (memory
//! backend), started from the broker binary that cargo builds.
//!
//! The broker binary belongs to another package, so `CARGO_BIN_EXE_switchyard` is not
//! available here. Set `SWITCHYARD_BIN` to use a given binary; otherwise the test builds it with
//! the same cargo, profile and target directory that built this test. If the broker cannot be
//! built or started the test fails, naming the reason — it never passes without a broker.

// The root package's test HTTP client (hyper), so that this crate has no HTTP code of its own.
#[path = "../../../tests/common/http_client.rs"]
#[allow(dead_code)]
mod http_client;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// API key for `POST /api/publish` in the smoke broker's config.
const SMOKE_KEY: &str = "smoke-key";

struct Broker {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our own binary lives in `<target>/<profile>/`; the broker's goes next to it.
fn load_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard-load"))
}

fn broker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(p);
    }
    let profile_dir = load_bin().parent().expect("bin dir").to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "-p", "switchyard", "--bin", "switchyard"])
        .env("CARGO_TARGET_DIR", &target_dir);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo to build the broker");
    assert!(
        out.status.success(),
        "could not build the switchyard broker (needed by this smoke test):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("switchyard")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind probe");
    l.local_addr().expect("probe addr").port()
}

fn start_broker() -> Broker {
    start_broker_with("memory", "[backends.local]\nkind = \"memory\"\n")
}

/// A broker whose config has `backends` (one backend table) and an open catch-all route.
fn start_broker_with(name: &str, backends: &str) -> Broker {
    start_broker_route(name, backends, "")
}

/// Like [`start_broker_with`], with `route_extra` (e.g. `history_size = …` lines) appended to
/// the catch-all route.
fn start_broker_route(name: &str, backends: &str, route_extra: &str) -> Broker {
    let bin = broker_bin();
    assert!(bin.exists(), "broker binary {} does not exist", bin.display());
    let dir =
        std::env::temp_dir().join(format!("switchyard-load-smoke-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "{name}"

[server]
listen = "127.0.0.1:{port}"

[auth]
api_keys_env = "SWITCHYARD_LOAD_SMOKE_KEYS"

{backends}

[[routes]]
match = "**"
subscribe = "anyone"
publish = "anyone"
{route_extra}"#
        ),
    )
    .expect("write config");
    let log = dir.join("broker.log");
    let logf = std::fs::File::create(&log).expect("log file");
    let child = Command::new(&bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("SWITCHYARD_LOAD_SMOKE_KEYS", SMOKE_KEY)
        .stdout(Stdio::from(logf.try_clone().expect("dup log")))
        .stderr(Stdio::from(logf))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut broker = Broker { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log };
    wait_ready(&mut broker);
    broker
}

/// Polls GET /healthz until it answers 200; fails early if the broker exits.
fn wait_ready(b: &mut Broker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = b.child.try_wait() {
            panic!(
                "broker exited ({status}) before becoming ready; log:\n{}",
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
        }
        if healthz(b.addr) {
            return;
        }
        assert!(Instant::now() < deadline, "broker not ready on {} after 60 s", b.addr);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether GET /healthz answers 200 within 2 s (the polling loop above is synchronous, so the
/// request gets a runtime of its own).
fn healthz(addr: SocketAddr) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return false;
    };
    rt.block_on(async {
        let request = http_client::try_http(addr, "GET", "/healthz", &[], "");
        matches!(tokio::time::timeout(Duration::from_secs(2), request).await, Ok(Ok((200, _))))
    })
}

fn run(b: &Broker, args: &[&str]) -> serde_json::Value {
    run_on(&[b], args)
}

/// Runs the load generator with connections spread over `brokers` and their CPU summed.
fn run_on(brokers: &[&Broker], args: &[&str]) -> serde_json::Value {
    let b = brokers[0];
    let urls: Vec<String> = brokers.iter().map(|b| format!("ws://{}/ws", b.addr)).collect();
    let pids: Vec<String> = brokers.iter().map(|b| b.child.id().to_string()).collect();
    let dir = b.log.parent().expect("dir").to_path_buf();
    let name = args.join("_").replace(['/', ':', '.', '-'], "");
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(load_bin())
        .args(args)
        .arg("--url")
        .arg(urls.join(","))
        .arg("--pid")
        .arg(pids.join(","))
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(json.with_extension("svg"))
        .args(["--drain-timeout", "3", "--max-time", "120"])
        .output()
        .expect("run switchyard-load");
    assert!(
        out.status.success(),
        "{args:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).expect("json report")).expect("valid json")
}

#[test]
fn every_scenario_against_a_real_broker() {
    let b = start_broker();

    for batch in [false, true] {
        let mut args = vec!["fanout", "--subscribers", "50", "--messages", "200", "--window", "64"];
        if batch {
            args.push("--batch");
        }
        let r = run(&b, &args);
        assert_eq!(r["delivered"], 50 * 200, "{r:#}");
        assert_eq!(r["lost"], 0);
        assert_eq!(r["out_of_order"], 0);
        assert!(r["broker"]["cpu_s_per_million_deliveries"].is_number(), "{r:#}");
    }

    let r = run(&b, &["fanout", "--subscribers", "10", "--messages", "100", "--publishers", "2"]);
    assert_eq!(r["delivered"], 1000, "{r:#}");

    let r =
        run(&b, &["fanout", "--subscribers", "10", "--messages", "50", "--client", "tungstenite"]);
    assert_eq!(r["delivered"], 500, "{r:#}");

    let r = run(
        &b,
        &[
            "fanout",
            "--subscribers",
            "10",
            "--messages",
            "50",
            "--via-http",
            "--api-key",
            SMOKE_KEY,
        ],
    );
    assert_eq!(r["delivered"], 500, "{r:#}");
    assert_eq!(r["acked"], 50, "{r:#}");

    let r = run(
        &b,
        &["latency", "--subscribers", "20", "--deliveries-per-s", "2000", "--duration", "1"],
    );
    assert_eq!(r["delivered"], 2000, "{r:#}");
    assert_eq!(r["lost"], 0);
    assert!(r["latency"]["p99_us"].as_u64().expect("p99") > 0);

    let r = run(
        &b,
        &["rooms", "--connections", "40", "--room-size", "5", "--rate", "400", "--duration", "1"],
    );
    assert_eq!(r["lost"], 0, "{r:#}");
    assert!(r["delivered"].as_u64().expect("delivered") >= 400 * 3, "{r:#}");

    let r =
        run(&b, &["connections", "--connections", "300", "--hold", "0.5", "--source-addrs", "2"]);
    assert_eq!(r["held"], 300, "{r:#}");
    assert!(r["broker"]["rss_per_connection_bytes"].is_number(), "{r:#}");

    let r =
        run(&b, &["slowloris", "--sockets", "200", "--clients", "20", "--client-interval-ms", "0"]);
    let sl = &r["slowloris"];
    assert_eq!(sl["held_at_start"], 200, "{r:#}");
    assert_eq!(sl["connect"]["count"], 20, "{r:#}");
    assert_eq!(sl["clients_failed"], 0, "{r:#}");
}

/// Every scenario against two broker nodes on a real 3-master Redis Cluster: every subscriber,
/// on either node, gets every message, in order.
#[test]
fn every_scenario_across_two_nodes_on_a_redis_cluster() {
    let cluster = switchyard_redis::testing::RedisCluster::start(3, 0);
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let backends =
        format!("[backends.main]\nkind = \"redis-cluster\"\nnodes = [{}]\n", nodes.join(", "));
    let a = start_broker_with("cluster-a", &backends);
    let b = start_broker_with("cluster-b", &backends);
    for batch in [false, true] {
        let mut args = vec!["fanout", "--subscribers", "40", "--messages", "200", "--window", "64"];
        if batch {
            args.push("--batch");
        }
        let r = run_on(&[&a, &b], &args);
        assert_eq!(r["delivered"], 40 * 200, "{r:#}");
        assert_eq!(r["lost"], 0, "{r:#}");
        assert_eq!(r["out_of_order"], 0, "{r:#}");
        assert!(r["broker"]["cpu_s_per_million_deliveries"].is_number(), "{r:#}");
    }
    let r = run_on(
        &[&a, &b],
        &["latency", "--subscribers", "20", "--deliveries-per-s", "2000", "--duration", "1"],
    );
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["delivered"], 2000, "{r:#}");
    // Rooms and personal channels span both nodes: every DM and room message crosses Redis,
    // whose INFO counters (`--redis`, every master) say what the publishes cost it.
    let masters: Vec<String> =
        cluster.masters.iter().map(|m| format!("127.0.0.1:{}", m.port())).collect();
    let masters = masters.join(",");
    let r = run_on(
        &[&a, &b],
        &[
            "rooms",
            "--connections",
            "40",
            "--room-size",
            "5",
            "--rate",
            "400",
            "--duration",
            "1",
            "--redis",
            &masters,
        ],
    );
    assert_eq!(r["lost"], 0, "{r:#}");
    assert!(r["delivered"].as_u64().expect("delivered") >= 400 * 3, "{r:#}");
    let redis = &r["redis"];
    assert!(redis["publishes"].as_u64().expect("publishes") >= 400, "{r:#}");
    assert!(redis["reads"].as_u64().expect("reads") > 0, "{r:#}");
    assert!(redis["writes"].as_u64().expect("writes") > 0, "{r:#}");
    assert!(redis["reads_per_publish"].as_f64().is_some_and(|x| x > 0.0), "{r:#}");
    let r = run_on(&[&a, &b], &["connections", "--connections", "200", "--hold", "0.5"]);
    assert_eq!(r["held"], 200, "{r:#}");
}

/// `recover` against a broker whose catch-all route keeps history: every client, subscribing
/// with a frame or on the URL, gets `recovered: true` and exactly the missed offsets.
#[test]
fn recover_against_a_broker_with_history() {
    let history = "history_size = 2000\nrecovery_max = 2000\n";
    let b = start_broker_route("history", "[backends.local]\nkind = \"memory\"\n", history);
    for via in ["frame", "query"] {
        let r = run(&b, &["recover", "--clients", "30", "--missed", "300", "--subscribe-via", via]);
        let rc = &r["recover"];
        assert_eq!(rc["recovered"], 30, "{r:#}");
        assert_eq!((&rc["not_recovered"], &rc["wrong"]), (&0.into(), &0.into()), "{r:#}");
        assert_eq!(rc["missed"], 300, "{r:#}");
        assert_eq!(rc["recovery"]["count"], 30, "{r:#}");
        assert_eq!(r["delivered"], 30 * 300, "{r:#}");
        let before = rc["backend_reads_before"].as_f64().expect("reads before");
        let after = rc["backend_reads_after"].as_f64().expect("reads after");
        assert!(after > before, "{r:#}");
    }
}

/// `presence` in its three modes against a broker whose catch-all route keeps presence with
/// joins and leaves told: the counts say every member and every page walk lists them all, every
/// subscribe is answered, and every watcher hears of every joiner.
#[test]
fn presence_against_a_broker_with_presence() {
    let route = "presence = true\njoin_leave = true\n";
    let b = start_broker_route("presence", "[backends.local]\nkind = \"memory\"\n", route);
    let r = run(
        &b,
        &[
            "presence",
            "counts",
            "--members",
            "120",
            "--queries",
            "300",
            "--in-flight",
            "4",
            "--warmup",
            "10",
            "--page-queries",
            "8",
            "--pages",
            "50,1000",
        ],
    );
    let c = &r["presence"];
    assert_eq!(c["mode"], "counts", "{r:#}");
    assert_eq!(c["members"], 120, "{r:#}");
    assert_eq!(c["wrong_counts"], 0, "{r:#}");
    assert_eq!(c["latency"]["count"], 300, "{r:#}");
    assert_eq!(c["pages"][0]["walks"], 2, "three pages of 50 a walk: {r:#}");
    assert_eq!(c["pages"][1]["walks"], 8, "one page of 1000 a walk: {r:#}");
    assert_eq!(c["pages"][0]["wrong_walks"], 0, "{r:#}");

    let r = run(
        &b,
        &["presence", "subscribe", "--connections", "5", "--channels", "40", "--prefix", "s"],
    );
    let s = &r["presence"];
    assert_eq!(s["subscribed"], 200, "{r:#}");
    assert_eq!(s["refused"], 0, "{r:#}");
    assert_eq!(s["presence_on"], true, "{r:#}");
    assert!(s["subscribes_per_s"].as_f64().expect("rate") > 0.0, "{r:#}");

    let r = run(
        &b,
        &["presence", "join-storm", "--watchers", "3", "--joins", "60", "--quiet-ms", "600"],
    );
    let s = &r["presence"];
    assert_eq!(s["joined"], 60, "{r:#}");
    assert_eq!(s["complete"], 3, "{r:#}");
    let w = &s["per_watcher"][0];
    assert_eq!(w["joins_seen"], 60, "{r:#}");
    assert!(w["diffs"].as_u64().expect("diffs") >= 1, "{r:#}");
    assert!(w["bytes"].as_u64().expect("bytes") > 60 * 10, "{r:#}");
}
