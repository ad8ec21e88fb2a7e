//! The HTTP side of the port: health, readiness, metrics, 404s, and the API for application
//! servers (`POST /api/publish`, `POST /api/send`) with its status codes.

mod common;

use common::{http, Secrets, TestBroker, OPEN_CONFIG};
use serde_json::{json, Value};

/// A broker with the HTTP API enabled with `keys` (comma-separated, from a secret file), a
/// small frame limit and a few routes to exercise the error statuses.
async fn api_broker(keys: &str) -> TestBroker {
    let secrets = Secrets::new();
    let api_keys = secrets.api_keys(keys);
    let toml = format!(
        r#"
[node]
id = "api-node"

[server]
max_frame_bytes = 2048

[auth]
{api_keys}
[backends.local]
kind = "memory"

[[routes]]
match = "room.*"
subscribe = "anyone"
publish = "anyone"
max_message_bytes = 64

[[routes]]
match = "locked.*"
subscribe = "anyone"
publish = "nobody"
"#
    );
    TestBroker::start_with_secrets(&toml, secrets).await
}

fn body_json(body: &str) -> Value {
    serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("response body is not JSON: {body:?}: {e}"))
}

/// Asserts an error response: `status` with a `{"code":…,"message":…}` body.
fn assert_error(got: (u16, String), status: u16, code: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    let v = body_json(&got.1);
    assert_eq!(v["code"], code, "{what}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_paths_answer() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let (status, body) = http(broker.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(broker.addr, "GET", "/readyz", &[], "").await;
    assert_eq!(status, 200, "{body}");

    // What /metrics holds is checked in tests/metrics.rs, on a broker process of its own: the
    // recorder here is shared by every test in this binary.
    let (status, page) = http(broker.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "{page}");

    assert_error(http(broker.addr, "GET", "/nope", &[], "").await, 404, "not_found", "GET /nope");
    assert_error(http(broker.addr, "GET", "/", &[], "").await, 404, "not_found", "GET /");
    let (status, _) = http(broker.addr, "POST", "/healthz", &[], "").await;
    assert_eq!(status, 405);
    let (status, _) = http(broker.addr, "GET", "/api/publish", &[], "").await;
    assert_eq!(status, 405);
    broker.shutdown().await;
}

#[tokio::test]
async fn api_publish_delivers_to_websocket_subscribers() {
    let broker = api_broker("key-one, key-two").await;
    let mut sub = broker.connect("channel=room.1").await;
    for key in ["key-one", "key-two"] {
        let auth = format!("Bearer {key}");
        let body = json!({"channel":"room.1","data":{"from":key}}).to_string();
        let (status, resp) =
            http(broker.addr, "POST", "/api/publish", &[("Authorization", &auth)], &body).await;
        assert_eq!(status, 200, "{resp}");
        assert!(body_json(&resp).is_object(), "{resp}");
        // No `user`: the API is not a client identity.
        assert_eq!(
            sub.recv().await,
            json!({"op":"message","channel":"room.1","data":{"from":key}})
        );
    }
    // The API ignores route publish permissions (it is trusted by its key)...
    let auth = [("Authorization", "Bearer key-one")];
    let mut locked = broker.connect("channel=locked.door").await;
    let body = json!({"channel":"locked.door","data":"knock"}).to_string();
    let (status, resp) = http(broker.addr, "POST", "/api/publish", &auth, &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(locked.recv().await["data"], "knock");
    drop((sub, locked));
    broker.shutdown().await;
}

#[tokio::test]
async fn api_send_delivers_a_direct_frame() {
    let broker = api_broker("s3nd-key").await;
    let auth = [("Authorization", "Bearer s3nd-key")];
    let mut target = broker.connect("").await;
    let mut other = broker.connect("").await;
    let body = json!({"to":target.conn,"data":{"text":"from the app"}}).to_string();
    let (status, resp) = http(broker.addr, "POST", "/api/send", &auth, &body).await;
    assert_eq!(status, 200, "{resp}");
    let d = target.recv().await;
    assert_eq!(d["op"], "direct", "{d}");
    assert_eq!(d["data"], json!({"text":"from the app"}), "{d}");
    assert!(d["from"].is_string(), "{d}");
    assert!(d.get("user").is_none(), "{d}");
    // Only the target got it.
    other.send_text(r#"{"op":"ping","id":1}"#).await;
    assert_eq!(other.recv().await, json!({"op":"pong","id":1}));

    // Unknown and malformed connection ids are 404.
    for to in ["api-node:999999", "api-node:x", "garbage"] {
        let body = json!({"to":to,"data":1}).to_string();
        assert_error(
            http(broker.addr, "POST", "/api/send", &auth, &body).await,
            404,
            "not_found",
            to,
        );
    }
    drop((target, other));
    broker.shutdown().await;
}

#[tokio::test]
async fn api_refuses_bad_keys_bodies_channels_and_sizes() {
    let broker = api_broker("right-key").await;
    let addr = broker.addr;
    let mut sub = broker.connect("channel=room.1").await;
    let good = json!({"channel":"room.1","data":"never"}).to_string();
    let auth = [("Authorization", "Bearer right-key")];

    for path in ["/api/publish", "/api/send"] {
        let body = if path == "/api/send" { r#"{"to":"api-node:1","data":1}"# } else { &good };
        assert_error(http(addr, "POST", path, &[], body).await, 401, "unauthorized", "no key");
        let wrong = [("Authorization", "Bearer wrong-key")];
        assert_error(http(addr, "POST", path, &wrong, body).await, 401, "unauthorized", "wrong");
        let prefix = [("Authorization", "Bearer right")];
        assert_error(http(addr, "POST", path, &prefix, body).await, 401, "unauthorized", "prefix");
        let basic = [("Authorization", "Basic cmlnaHQta2V5")];
        assert_error(http(addr, "POST", path, &basic, body).await, 401, "unauthorized", "basic");
    }

    let bad_bodies = [
        "not json",
        "",
        "[]",
        r#"{"channel":"room.1"}"#,
        r#"{"data":1}"#,
        r#"{"channel":5,"data":1}"#,
        r#"{"channel":"room.1","data":1,"extra":true}"#,
        r#"{"channel":"room.1","data":}"#,
    ];
    for body in bad_bodies {
        assert_error(
            http(addr, "POST", "/api/publish", &auth, body).await,
            400,
            "bad_request",
            body,
        );
    }
    for body in ["nope", r#"{"to":"api-node:1"}"#, r#"{"data":1}"#, r#"{"to":1,"data":1}"#] {
        assert_error(http(addr, "POST", "/api/send", &auth, body).await, 400, "bad_request", body);
    }
    for channel in ["", "a..b", "a b", ".x"] {
        let body = json!({"channel":channel,"data":1}).to_string();
        let got = http(addr, "POST", "/api/publish", &auth, &body).await;
        assert_error(got, 400, "invalid_channel", channel);
    }
    let body = json!({"channel":"lobby","data":1}).to_string();
    assert_error(http(addr, "POST", "/api/publish", &auth, &body).await, 400, "no_route", "lobby");
    // Over the route's max_message_bytes: 413 too_large.
    let body = json!({"channel":"room.1","data":"x".repeat(100)}).to_string();
    assert_error(http(addr, "POST", "/api/publish", &auth, &body).await, 413, "too_large", "route");
    // A body over max_frame_bytes: 413.
    let huge = json!({"channel":"room.1","data":"x".repeat(4000)}).to_string();
    assert_error(http(addr, "POST", "/api/publish", &auth, &huge).await, 413, "too_large", "body");
    let huge = json!({"to":"api-node:1","data":"x".repeat(4000)}).to_string();
    assert_error(http(addr, "POST", "/api/send", &auth, &huge).await, 413, "too_large", "send");

    // None of the refused publishes reached the subscriber: the next message is this one.
    let ok = json!({"channel":"room.1","data":"sentinel"}).to_string();
    let (status, resp) = http(addr, "POST", "/api/publish", &auth, &ok).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"room.1","data":"sentinel"}));
    drop(sub);
    broker.shutdown().await;
}

#[tokio::test]
async fn api_is_disabled_without_api_keys() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut sub = broker.connect("channel=room.1").await;
    let body = json!({"channel":"room.1","data":"no"}).to_string();
    let auth = [("Authorization", "Bearer anything")];
    for (path, body) in [("/api/publish", body.as_str()), ("/api/send", r#"{"to":"x:1","data":1}"#)]
    {
        assert_error(http(broker.addr, "POST", path, &auth, body).await, 403, "forbidden", path);
        assert_error(http(broker.addr, "POST", path, &[], body).await, 403, "forbidden", path);
    }
    sub.ok(json!({"op":"publish","channel":"room.1","data":"ws"})).await;
    assert_eq!(sub.recv().await["data"], "ws", "the refused API publish must not arrive");
    drop(sub);
    broker.shutdown().await;
}
