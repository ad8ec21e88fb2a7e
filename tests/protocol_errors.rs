//! The error codes of docs/protocol.md that apply without auth, over real sockets:
//! `bad_request`, `invalid_channel`, `no_route`, `forbidden`, `too_large` and `rate_limited`.
//! (tests/protocol.rs has the frames that succeed, and `not_found`.)

mod common;

use common::TestBroker;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The open config, where anonymous clients may `send` too (`auth.send` defaults to
/// `authenticated`).
const OPEN_CONFIG: &str = common::open_config!("[auth]\nsend = \"anyone\"\n");

// Tests drop their clients before `shutdown`: a client that is not read cannot answer the
// broker's 1001 close, and the broker would wait out its close grace for it.

#[tokio::test]
async fn bad_request_for_every_malformed_frame() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut c = broker.connect("").await;
    // Frames that cannot carry an id: the error has none.
    for text in ["hello", "", "   ", "[1,2]", "\"str\"", "42", "null", "{\"op\":\"ping\"", "{}x"] {
        c.send_text(text).await;
        let e = c.recv().await;
        assert_eq!(e["op"], "error", "{text:?}: {e}");
        assert_eq!(e["code"], "bad_request", "{text:?}: {e}");
        assert!(e.get("id").is_none(), "{text:?}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    // Frames with an id: the error echoes it.
    let with_id = [
        json!({"op":"dance"}),
        json!({"op":7}),
        json!({}),
        json!({"channel":"a"}),
        json!({"op":"subscribe"}),
        json!({"op":"subscribe","channel":5}),
        json!({"op":"subscribe","channel":["a"]}),
        json!({"op":"unsubscribe"}),
        json!({"op":"unsubscribe","channel":null}),
        json!({"op":"publish","channel":"a"}),
        json!({"op":"publish","data":1}),
        json!({"op":"publish","channel":{"c":1},"data":1}),
        json!({"op":"send","data":1}),
        json!({"op":"send","to":"x:1"}),
        json!({"op":"send","to":3,"data":1}),
    ];
    for frame in with_id {
        c.error(frame, "bad_request").await;
    }
    // String ids are echoed on errors too.
    c.send_text(r#"{"op":"dance","id":"str-id"}"#).await;
    let e = c.recv().await;
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("bad_request"), Some("str-id")));
    // A binary frame is a bad request, not a reason to close.
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    let e = c.recv().await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("bad_request")));
    // After all that the connection still works.
    c.subscribe("still.here").await;
    c.publish("still.here", json!("yes")).await;
    assert_eq!(c.recv().await, json!({"op":"message","channel":"still.here","data":"yes"}));
    drop(c);
    broker.shutdown().await;
}

#[tokio::test]
async fn invalid_channel_for_each_syntax_rule_on_every_op() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut c = broker.connect("").await;
    let too_long = "x".repeat(256);
    let bad =
        ["", too_long.as_str(), "a b", "é", "a*", "a/b", "a#", "a..b", ".a", "a.", ".", "room.42."];
    for ch in bad {
        for frame in [
            json!({"op":"subscribe","channel":ch}),
            json!({"op":"unsubscribe","channel":ch}),
            json!({"op":"publish","channel":ch,"data":1}),
            json!({"channel":ch,"payload":1}),
        ] {
            let e = c.error(frame, "invalid_channel").await;
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        }
    }
    // The edges of the syntax are accepted.
    let longest = "x".repeat(255);
    for ch in [longest.as_str(), "a", "A-Z_a:z@0.9", "user.alice@example.com"] {
        c.subscribe(ch).await;
        c.publish(ch, json!(ch)).await;
        assert_eq!(c.recv().await, json!({"op":"message","channel":ch,"data":ch}));
    }
    drop(c);
    broker.shutdown().await;
}

const ROUTED_CONFIG: &str = r#"
[backends.local]
kind = "memory"

[[routes]]
match = "room.{id}"
subscribe = "anyone"
publish = "anyone"
max_message_bytes = 16

[[routes]]
match = "readonly.**"
subscribe = "anyone"
publish = "nobody"

[[routes]]
match = "writeonly.*"
subscribe = "nobody"
publish = "anyone"

[[routes]]
match = "big.**"
subscribe = "anyone"
publish = "anyone"
"#;

#[tokio::test]
async fn no_route_when_no_rule_matches() {
    let broker = TestBroker::start(ROUTED_CONFIG).await;
    let mut c = broker.connect("").await;
    for ch in ["lobby", "room", "room.1.extra", "readonly", "writeonly.a.b"] {
        c.error(json!({"op":"subscribe","channel":ch}), "no_route").await;
        c.error(json!({"op":"publish","channel":ch,"data":1}), "no_route").await;
    }
    // A query channel with no route is reported on connect.
    let mut q = broker.connect("channel=lobby,room.5").await;
    let e = q.recv().await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("no_route")));
    c.publish("room.5", json!("hi")).await;
    assert_eq!(q.recv().await, json!({"op":"message","channel":"room.5","data":"hi"}));
    drop((c, q));
    broker.shutdown().await;
}

#[tokio::test]
async fn forbidden_by_route_permissions() {
    let broker = TestBroker::start(ROUTED_CONFIG).await;
    let mut c = broker.connect("").await;
    let mut sub = broker.connect("").await;
    let e = c.error(json!({"op":"publish","channel":"readonly.news","data":1}), "forbidden").await;
    assert!(e["message"].as_str().is_some_and(|m| m.contains("readonly.news")), "{e}");
    c.error(json!({"channel":"readonly.news","payload":1}), "forbidden").await;
    c.error(json!({"op":"subscribe","channel":"writeonly.box"}), "forbidden").await;
    // The permitted direction works.
    sub.subscribe("readonly.news").await;
    c.publish("writeonly.box", json!("dropped in")).await;
    // Nothing was published on readonly.news: the sentinel is the first thing sub sees.
    sub.subscribe("room.1").await;
    c.publish("room.1", json!("sentinel")).await;
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"room.1","data":"sentinel"}));
    drop((c, sub));
    broker.shutdown().await;
}

#[tokio::test]
async fn too_large_over_the_route_limit() {
    let broker = TestBroker::start(ROUTED_CONFIG).await;
    let mut c = broker.connect("").await;
    c.subscribe("room.1").await;
    // `data` is measured as the JSON text the client sent: 16 bytes pass, 17 do not.
    let at_limit = "\"0123456789abcd\"";
    assert_eq!(at_limit.len(), 16);
    c.send_text(&format!(r#"{{"op":"publish","channel":"room.1","data":{at_limit},"id":1}}"#))
        .await;
    assert_eq!(c.recv().await, json!({"op":"ok","id":1}));
    assert_eq!(c.recv().await, json!({"op":"message","channel":"room.1","data":"0123456789abcd"}));
    let e = c
        .error(json!({"op":"publish","channel":"room.1","data":"0123456789abcde"}), "too_large")
        .await;
    assert!(e["message"].as_str().is_some_and(|m| m.contains("16")), "{e}");
    c.error(json!({"channel":"room.1","payload":{"k":"0123456789"}}), "too_large").await;
    // Another route has the default limit.
    c.publish("big.x", json!("0123456789abcdef0123456789abcdef")).await;
    // The refused messages were not delivered: the next message is the sentinel.
    c.publish("room.1", json!("ok")).await;
    assert_eq!(c.recv().await, json!({"op":"message","channel":"room.1","data":"ok"}));
    drop(c);
    broker.shutdown().await;
}

#[tokio::test]
async fn rate_limited_publishes_over_the_burst() {
    let broker = TestBroker::start(common::open_config!(
        r#"
[limits]
publish_rate = 0.01
publish_burst = 3

[auth]
send = "anyone"
"#
    ))
    .await;
    let mut c = broker.connect("").await;
    let mut other = broker.connect("").await;
    c.subscribe("r").await;
    for i in 0..3 {
        c.publish("r", json!(i)).await;
    }
    let e = c.error(json!({"op":"publish","channel":"r","data":3}), "rate_limited").await;
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    // `send` draws on the same bucket.
    c.error(json!({"op":"send","to":other.conn,"data":1}), "rate_limited").await;
    // Non-publishing ops are not limited.
    c.subscribe("r2").await;
    c.send_text(r#"{"op":"ping","id":"p"}"#).await;
    // The bucket is per connection: another connection publishes freely.
    other.publish("r", json!("other")).await;
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(c.recv().await);
    }
    let data: Vec<Value> =
        got.iter().filter(|f| f["op"] == "message").map(|f| f["data"].clone()).collect();
    assert_eq!(data, vec![json!(0), json!(1), json!(2), json!("other")], "{got:?}");
    assert!(got.contains(&json!({"op":"pong","id":"p"})), "{got:?}");
    drop((c, other));
    broker.shutdown().await;
}

#[tokio::test]
async fn rate_limited_over_max_subscriptions() {
    let broker = TestBroker::start(common::open_config!(
        r#"
[limits]
max_subscriptions = 2
"#
    ))
    .await;
    let mut c = broker.connect("").await;
    c.subscribe("s.1").await;
    c.subscribe("s.2").await;
    c.error(json!({"op":"subscribe","channel":"s.3"}), "rate_limited").await;
    // Re-subscribing a held channel is not a new subscription.
    c.subscribe("s.1").await;
    c.ok(json!({"op":"unsubscribe","channel":"s.2"})).await;
    c.subscribe("s.3").await;
    c.publish("s.3", json!("in")).await;
    assert_eq!(c.recv().await, json!({"op":"message","channel":"s.3","data":"in"}));
    // The query string is held to the same limit.
    let mut q = broker.connect("channel=q.1,q.2,q.3").await;
    let e = q.recv().await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("rate_limited")));
    drop((c, q));
    broker.shutdown().await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_floods_are_rate_limited() {
    let broker = TestBroker::start(common::open_config!(
        r#"
[limits]
subscribe_rate = 0.01
subscribe_burst = 4
"#
    ))
    .await;
    // Two of the four tokens go to ?channel= on connect.
    let mut c = broker.connect("channel=q.1,q.2").await;
    c.subscribe("s.1").await;
    c.ok(json!({"op":"unsubscribe","channel":"q.1"})).await;
    let e = c.error(json!({"op":"subscribe","channel":"s.2"}), "rate_limited").await;
    assert!(e["message"].as_str().is_some_and(|m| m.contains("per second")), "{e}");
    c.error(json!({"op":"unsubscribe","channel":"s.1"}), "rate_limited").await;
    // The refused frames changed nothing: s.1 is still held, s.2 is not.
    c.publish("s.1", json!("held")).await;
    c.publish("s.2", json!("not held")).await;
    assert_eq!(c.recv().await, json!({"op":"message","channel":"s.1","data":"held"}));
    // Publishing has its own bucket, and the bucket is per connection.
    let mut other = broker.connect("").await;
    other.subscribe("s.2").await;
    // A query string over the burst: the channels past it are refused one by one.
    let mut q = broker.connect("channel=a.1,a.2,a.3,a.4,a.5,a.6").await;
    for _ in 0..2 {
        let e = q.recv().await;
        assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("rate_limited")));
    }
    q.error(json!({"op":"subscribe","channel":"a.7"}), "rate_limited").await;
    drop((c, other, q));
    broker.shutdown().await;
}
