//! `/metrics` of a broker process of its own (see `common::ServedBroker` for why not an
//! in-process broker): the traffic gauges and counters, and reloads counted by outcome.

mod common;

use common::{eventually, Client, ServedBroker, OPEN_CONFIG};
use serde_json::json;

#[tokio::test]
async fn metrics_count_this_brokers_connections_and_messages() {
    let broker = ServedBroker::start(OPEN_CONFIG).await;
    let mut c = Client::connect(&format!("ws://{}/ws?channel=m.x", broker.addr)).await;
    c.publish("m.x", json!(1)).await;
    c.recv().await;
    let page = broker.metrics().await;
    for name in [
        "switchyard_connections",
        "switchyard_messages_published_total",
        "switchyard_subscriptions",
        "switchyard_messages_delivered_total",
    ] {
        assert!(
            page.lines().any(|l| !l.starts_with('#') && l.starts_with(name)),
            "/metrics lacks {name}:\n{page}"
        );
    }
    // Exact: nothing else runs in this process.
    assert_eq!(common::sum_samples(&page, "switchyard_connections"), 1.0, "{page}");
    assert_eq!(common::sum_samples(&page, "switchyard_subscriptions"), 1.0, "{page}");
    assert_eq!(common::sum_samples(&page, "switchyard_messages_published_total"), 1.0, "{page}");
    assert_eq!(common::sum_samples(&page, "switchyard_messages_delivered_total"), 1.0, "{page}");
    c.close().await;
    let addr = broker.addr;
    eventually("the closed connection leaves the gauge", || async move {
        let (_, page) = common::http(addr, "GET", "/metrics", &[], "").await;
        common::sum_samples(&page, "switchyard_connections") == 0.0
    })
    .await;
}

/// `switchyard_config_reloads_total{result="…"}`; 0 while the series does not exist yet.
fn reloads(page: &str, result: &str) -> f64 {
    let prefix = format!("switchyard_config_reloads_total{{result=\"{result}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn reloads_are_counted_by_outcome() {
    let broker = ServedBroker::start(OPEN_CONFIG).await;
    let page = broker.metrics().await;
    assert_eq!((reloads(&page, "ok"), reloads(&page, "failed")), (0.0, 0.0), "{page}");
    std::fs::write(&broker.config, "[[routes]]\nmatch = \"room.{id}\"\nbackend = \"nope\"\n")
        .expect("rewrite config");
    broker.signal("HUP");
    let addr = broker.addr;
    eventually("the failed reload is counted", || async move {
        let (_, page) = common::http(addr, "GET", "/metrics", &[], "").await;
        reloads(&page, "failed") >= 1.0
    })
    .await;
    assert_eq!(reloads(&broker.metrics().await, "ok"), 0.0);
    // Still serving under the old rules.
    let mut c = Client::connect(&format!("ws://{}/ws", broker.addr)).await;
    c.subscribe("room.1").await;
}

#[tokio::test]
async fn a_header_timeout_is_counted() {
    // ServedBroker puts `[server]` and the listen address in front: this line joins that table.
    let config = format!("header_timeout_ms = 300\n{OPEN_CONFIG}");
    let broker = ServedBroker::start(&config).await;
    let aborted = |page: &str| {
        let prefix = "switchyard_http_aborted_total{reason=\"header_timeout\"} ";
        page.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(aborted(&broker.metrics().await).unwrap_or(0.0), 0.0, "nothing timed out yet");
    let mut half = tokio::net::TcpStream::connect(broker.addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /ws HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write half a request");
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut half, &mut rest).await.expect("closed");
    assert!(rest.is_empty(), "a timed-out head gets no answer");
    let addr = broker.addr;
    eventually("the header timeout is counted", || async move {
        let (_, page) = common::http(addr, "GET", "/metrics", &[], "").await;
        aborted(&page) == Some(1.0)
    })
    .await;
}
