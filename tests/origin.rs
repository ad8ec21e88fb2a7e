//! `server.allowed_origins`: a browser page from an origin the config does not allow is
//! refused with 403 before the upgrade (Cross-Site WebSocket Hijacking); clients that send no
//! `Origin` are not browsers and connect as before.

mod common;

use std::net::SocketAddr;

use common::{http, Client, ServedBroker, TestBroker};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// An upgrade request with `origin` (and `host`, default the broker's address) that must be
/// refused: its status and JSON body.
async fn refused(addr: SocketAddr, origin: &str, host: Option<&str>) -> (u16, Value) {
    refused_at(addr, "/ws", origin, host).await
}

/// [`refused`] for `path` (`/ws?…`).
async fn refused_at(
    addr: SocketAddr,
    path: &str,
    origin: &str,
    host: Option<&str>,
) -> (u16, Value) {
    let host = host.map_or_else(|| addr.to_string(), str::to_string);
    let (status, body) = http(
        addr,
        "GET",
        path,
        &[
            ("Host", &host),
            ("Origin", origin),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    )
    .await;
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    (status, body)
}

/// Connects as a page from `origin` would, and reads the welcome frame.
async fn connect_from(addr: SocketAddr, origin: &str) -> Client {
    connect_with_host(addr, origin, &addr.to_string()).await
}

/// [`connect_from`] with the `Host` header a proxy in front of the broker would pass on.
async fn connect_with_host(addr: SocketAddr, origin: &str, host: &str) -> Client {
    let url = format!("ws://{addr}/ws");
    let mut request = url.as_str().into_client_request().expect("request");
    let headers = request.headers_mut();
    headers.insert("origin", HeaderValue::from_str(origin).expect("header"));
    headers.insert("host", HeaderValue::from_str(host).expect("header"));
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("a page from {origin} was refused: {e}"));
    Client::from_stream(ws).await
}

fn assert_forbidden((status, body): (u16, Value), origin: &str) {
    assert_eq!(status, 403, "{origin}: {body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(message.contains(origin) && message.contains("server.allowed_origins"), "{message}");
}

#[tokio::test]
async fn listed_origins_and_patterns_connect_and_others_get_403() {
    let broker = ServedBroker::start(&format!(
        "allowed_origins = [\"https://chat.example.com\", \"https://*.apps.example.com\", \"http://localhost:3000\"]\n{}",
        common::OPEN_CONFIG
    ))
    .await;
    let addr = broker.addr;
    for origin in [
        "https://chat.example.com",
        "https://a.apps.example.com",
        "https://b.c.apps.example.com",
        "http://localhost:3000",
    ] {
        let mut c = connect_from(addr, origin).await;
        c.subscribe("room.1").await;
    }
    let refusals = [
        "https://evil.example",
        "http://chat.example.com",
        "https://chat.example.com:8443",
        "https://apps.example.com",
        "https://a.apps.example.com.evil.net",
        "http://localhost:3001",
        "null",
    ];
    for origin in refusals {
        assert_forbidden(refused(addr, origin, None).await, origin);
    }
    // Refused before the token is looked at (this broker would answer any token 401).
    let (status, _) = refused_at(addr, "/ws?token=x.y.z", "https://evil.example", None).await;
    assert_eq!(status, 403);
    let page = broker.metrics().await;
    let counted = page
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_connections_refused_total{reason=\"origin\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(counted, Some(refusals.len() as f64 + 1.0), "{page}");
    assert!(broker.log().contains("websocket upgrade refused: 403, origin not allowed"));
}

#[tokio::test]
async fn clients_without_an_origin_are_not_checked() {
    // An empty list refuses every browser page, and still every non-browser client connects.
    let broker = TestBroker::start(common::open_config!("[server]\nallowed_origins = []\n")).await;
    let mut c = broker.connect("channel=room.1").await;
    c.publish("room.1", serde_json::json!("no origin, no check")).await;
    assert_forbidden(refused(broker.addr, "http://127.0.0.1:1", None).await, "http://127.0.0.1:1");
    broker.shutdown().await;
}

#[tokio::test]
async fn without_the_key_only_the_brokers_own_host_may_connect() {
    let broker = TestBroker::start(common::OPEN_CONFIG).await;
    let addr = broker.addr;
    // A page the broker itself served (its Origin is the address the client connected to).
    let mut own = connect_from(addr, &format!("http://{addr}")).await;
    own.subscribe("room.1").await;
    // Behind a TLS proxy that keeps the Host header, the page is https:// on port 443.
    let mut proxied = connect_with_host(addr, "https://chat.example.com", "chat.example.com").await;
    proxied.subscribe("room.1").await;
    for (origin, host) in [
        ("http://evil.example".to_string(), None),
        (format!("http://localhost:{}", addr.port()), None),
        (format!("http://127.0.0.1:{}", addr.port() ^ 1), None),
        ("https://chat.example.com".to_string(), Some("chat.example.com:8443")),
    ] {
        assert_forbidden(refused(addr, &origin, host).await, &origin);
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn the_builtin_default_lets_its_own_page_connect() {
    let broker = TestBroker::start(switchyard::config::DEFAULT_CONFIG).await;
    for origin in ["http://127.0.0.1:8080", "http://localhost:8080"] {
        let mut c = connect_from(broker.addr, origin).await;
        c.subscribe("room.1").await;
    }
    assert_forbidden(
        refused(broker.addr, "https://evil.example", None).await,
        "https://evil.example",
    );
    broker.shutdown().await;
}
