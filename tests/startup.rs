//! What a starting broker tells its operator: nothing alarming on a healthy start, and when a
//! backend is down at start, a warning followed by the news once it is reachable.

mod common;

use common::ServedBroker;
use switchyard_redis::testing::{RedisCluster, RedisServer};

fn backend(kind: &str, address: &str) -> String {
    format!(
        "[backends.main]\nkind = \"{kind}\"\n{address}\n\n[[routes]]\nmatch = \"**\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\n"
    )
}

/// A cluster's slot map arrives a moment after the broker asks for it; the inbox subscription
/// made at start must not be reported pending on every healthy start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_start_logs_no_warning() {
    let cluster = RedisCluster::start(3, 0);
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let broker =
        ServedBroker::start(&backend("redis-cluster", &format!("nodes = [{}]", nodes.join(", "))))
            .await;
    let log = broker.log();
    assert!(log.contains("switchyard listening"), "{log}");
    assert!(!log.contains("WARN"), "a healthy start warned:\n{log}");
}

/// Redis down at start: the broker starts anyway and says so, then says when it is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_at_start_is_a_warning_and_then_an_info_line() {
    let mut redis = RedisServer::start();
    redis.kill();
    let broker =
        ServedBroker::start(&backend("redis", &format!("url = \"{}\"", redis.url()))).await;
    let log = broker.log();
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains("backend not reachable at start")),
        "{log}"
    );
    assert!(!log.contains("backend reachable:"), "{log}");
    redis.restart();
    let broker = &broker;
    common::eventually("the broker says the backend is reachable", || async move {
        broker.log().lines().any(|l| l.contains("INFO") && l.contains("backend reachable:"))
    })
    .await;
    let addr = broker.addr;
    common::eventually("the node is ready", || async move {
        common::http(addr, "GET", "/readyz", &[], "").await.0 == 200
    })
    .await;
}
