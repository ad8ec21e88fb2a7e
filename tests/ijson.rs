//! `data` must be I-JSON (RFC 7493) on every way in: WebSocket publish (both frame shapes),
//! and the HTTP API's publish and send. What is refused never reaches a subscriber.

mod common;

use common::{http, Secrets, TestBroker};
use serde_json::{json, Value};

/// A broker with a data depth limit of 8 and the HTTP API on with key `k`.
async fn start() -> TestBroker {
    let secrets = Secrets::new();
    let toml = format!(
        "[limits]\nmax_data_depth = 8\n[auth]\n{}{}",
        secrets.api_keys("k"),
        common::OPEN_CONFIG
    );
    TestBroker::start_with_secrets(&toml, secrets).await
}

/// Data that is valid JSON but not I-JSON, with what the error must mention.
fn hostile() -> Vec<(String, &'static str)> {
    vec![
        (format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)), "nested too deeply"),
        (format!("{}{}", "[".repeat(9), "]".repeat(9)), "nested too deeply"),
        (r#"{"text":"\ud800"}"#.to_string(), "I-JSON"),
        (r#"{"text":"a\udc00b"}"#.to_string(), "I-JSON"),
        ("1e999999".to_string(), "I-JSON"),
        (r#"{"n":-1e400}"#.to_string(), "I-JSON"),
        (r#"{"a":1,"a":2}"#.to_string(), "same member name twice"),
    ]
}

#[tokio::test]
async fn websocket_publishes_of_non_i_json_data_are_refused_and_never_delivered() {
    let broker = start().await;
    let mut subscriber = broker.connect("channel=room.1").await;
    let mut publisher = broker.connect("").await;
    for (data, why) in hostile() {
        for frame in [
            format!(r#"{{"op":"publish","channel":"room.1","data":{data},"id":7}}"#),
            format!(r#"{{"channel":"room.1","payload":{data},"id":7}}"#),
        ] {
            publisher.send_text(&frame).await;
            let answer = publisher.recv().await;
            assert_eq!(answer["op"], "error", "{answer}");
            assert_eq!(answer["code"], "bad_request", "{answer}");
            assert_eq!(answer["id"], 7, "{answer}");
            let message = answer["message"].as_str().unwrap_or("");
            assert!(message.contains(why), "expected {why:?} in {message:?}");
        }
    }
    // Nesting up to the limit, and surrogate pairs are fine.
    let fine = json!({"deep":[[[[[[1]]]]]],"emoji":"\u{1F600}"});
    publisher.publish("room.1", fine.clone()).await;
    let got = subscriber.recv().await;
    assert_eq!(got["op"], "message", "the first frame the subscriber sees: {got}");
    assert_eq!(got["data"], fine);
    broker.shutdown().await;
}

#[tokio::test]
async fn api_publish_and_send_refuse_non_i_json_data_with_400() {
    let broker = start().await;
    let mut subscriber = broker.connect("channel=room.2").await;
    let conn = subscriber.conn.clone();
    let auth = [("Authorization", "Bearer k"), ("Content-Type", "application/json")];
    for (data, why) in hostile() {
        for (path, body) in [
            ("/api/publish", format!(r#"{{"channel":"room.2","data":{data}}}"#)),
            ("/api/send", format!(r#"{{"to":"{conn}","data":{data}}}"#)),
        ] {
            let (status, answer) = http(broker.addr, "POST", path, &auth, &body).await;
            assert_eq!(status, 400, "{path}: {answer}");
            let answer: Value = serde_json::from_str(&answer).expect("JSON error body");
            assert_eq!(answer["code"], "bad_request", "{path}: {answer}");
            assert!(answer["message"].as_str().unwrap_or("").contains(why), "{answer}");
        }
    }
    let body = r#"{"channel":"room.2","data":{"ok":true}}"#;
    let (status, answer) = http(broker.addr, "POST", "/api/publish", &auth, body).await;
    assert_eq!(status, 200, "{answer}");
    let got = subscriber.recv().await;
    assert_eq!(got["op"], "message", "the first frame the subscriber sees: {got}");
    assert_eq!(got["data"], json!({"ok":true}));
    broker.shutdown().await;
}
