//! The client protocol of docs/protocol.md over real sockets: every client frame, every server
//! frame, `id` echo, and `not_found`; the other error codes that apply without auth are in
//! tests/protocol_errors.rs.

mod common;

use common::TestBroker;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The open config, where anonymous clients may `send` too (`auth.send` defaults to
/// `authenticated`).
const OPEN_CONFIG: &str = common::open_config!("[auth]\nsend = \"anyone\"\n");

/// [`OPEN_CONFIG`] with a fixed node id, so connection ids can be checked exactly.
const NODE_CONFIG: &str = common::open_config!(
    r#"
[node]
id = "proto-1"

[auth]
send = "anyone"
"#
);

// Tests drop their clients before `shutdown`: a client that is not read cannot answer the
// broker's 1001 close, and the broker would wait out its close grace for it.

/// Sends `frame` (no id) and then a ping with `id`; returns every frame received before the
/// pong. Proves that an id-less frame got no answer (or which answer).
async fn frames_before_pong(c: &mut common::Client, frame: &str, id: &str) -> Vec<Value> {
    c.send_text(frame).await;
    c.send_json(json!({"op":"ping","id":id})).await;
    let mut before = Vec::new();
    loop {
        let f = c.recv().await;
        if f == json!({"op":"pong","id":id}) {
            return before;
        }
        before.push(f);
    }
}

#[tokio::test]
async fn welcome_names_the_node_and_an_unguessable_connection_id() {
    let broker = TestBroker::start(NODE_CONFIG).await;
    let a = broker.connect("").await;
    let b = broker.connect("").await;
    let mut keys = Vec::new();
    for c in [&a, &b] {
        assert_eq!(c.node, "proto-1");
        let (node, random) = c.conn.rsplit_once(':').expect("conn is <node>:<random>");
        assert_eq!(node, "proto-1", "{}", c.conn);
        assert_eq!(random.len(), 16, "16 hex digits of randomness in {}", c.conn);
        assert!(random.bytes().all(|d| d.is_ascii_hexdigit() && !d.is_ascii_uppercase()));
        keys.push(u64::from_str_radix(random, 16).expect("hex"));
    }
    assert_ne!(a.conn, b.conn);
    // Neither next to each other nor small: one id says nothing about the next.
    assert!(keys[0].abs_diff(keys[1]) > 1_000_000, "{} then {}", a.conn, b.conn);

    // Without [node] id the broker makes one up; the conn id still starts with it.
    let generated = TestBroker::start(OPEN_CONFIG).await;
    let c = generated.connect("").await;
    assert!(!c.node.is_empty());
    assert!(c.conn.starts_with(&format!("{}:", c.node)), "{} vs {}", c.conn, c.node);
    drop(c);
    generated.shutdown().await;
    drop((a, b));
    broker.shutdown().await;
}

#[tokio::test]
async fn welcome_frame_has_exactly_op_conn_node() {
    let broker = TestBroker::start(NODE_CONFIG).await;
    let mut raw = common::RawWs::connect(broker.addr, "/ws").await;
    let mut second = common::RawWs::connect(broker.addr, "/ws").await;
    assert_eq!(raw.welcome, json!({"op":"welcome","conn":raw.conn,"node":"proto-1"}));
    assert_eq!(second.welcome, json!({"op":"welcome","conn":second.conn,"node":"proto-1"}));
    assert_ne!(raw.conn, second.conn);
    // The answers that follow are single JSON objects, one per frame.
    raw.send_text(r#"{"op":"ping","id":1}"#).await;
    let (op, payload) = raw.read_frame().await;
    assert_eq!(op, 0x1);
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).expect("json"),
        json!({"op":"pong","id":1})
    );
    second.send_text(r#"{"op":"ping"}"#).await;
    let (_, payload) = second.read_frame().await;
    assert_eq!(serde_json::from_slice::<Value>(&payload).expect("json"), json!({"op":"pong"}));
    drop((raw, second));
    broker.shutdown().await;
}

#[tokio::test]
async fn ping_answers_pong_echoing_numeric_string_and_absent_ids() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut c = broker.connect("").await;
    c.send_text(r#"{"op":"ping","id":5}"#).await;
    assert_eq!(c.recv().await, json!({"op":"pong","id":5}));
    c.send_text(r#"{"op":"ping","id":"abc"}"#).await;
    assert_eq!(c.recv().await, json!({"op":"pong","id":"abc"}));
    c.send_text(r#"{"op":"ping","id":-7.5}"#).await;
    assert_eq!(c.recv().await, json!({"op":"pong","id":-7.5}));
    c.send_text(r#"{"op":"ping","id":"with \"quotes\" and \\"}"#).await;
    assert_eq!(c.recv().await, json!({"op":"pong","id":"with \"quotes\" and \\"}));
    c.send_text(r#"{"op":"ping"}"#).await;
    assert_eq!(c.recv().await, json!({"op":"pong"}));
    // A null id is no id.
    c.send_text(r#"{"op":"ping","id":null}"#).await;
    assert_eq!(c.recv().await, json!({"op":"pong"}));
    // An id that is neither a number nor a string is a bad request without an id.
    c.send_text(r#"{"op":"ping","id":{"x":1}}"#).await;
    let e = c.recv().await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("bad_request")));
    assert!(e.get("id").is_none(), "{e}");
    drop(c);
    broker.shutdown().await;
}

#[tokio::test]
async fn ok_echoes_numeric_and_string_ids_for_every_op() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut a = broker.connect("").await;
    let mut b = broker.connect("").await;
    let to = b.conn.clone();
    let frames = [
        (json!({"op":"subscribe","channel":"room.1","id":1}), json!({"op":"ok","id":1})),
        (json!({"op":"subscribe","channel":"room.2","id":"s-2"}), json!({"op":"ok","id":"s-2"})),
        (
            json!({"op":"publish","channel":"room.9","data":{"t":1},"id":3}),
            json!({"op":"ok","id":3}),
        ),
        (json!({"op":"send","to":to,"data":"hey","id":"d4"}), json!({"op":"ok","id":"d4"})),
        (json!({"op":"unsubscribe","channel":"room.1","id":5}), json!({"op":"ok","id":5})),
        (json!({"op":"unsubscribe","channel":"room.2","id":"u6"}), json!({"op":"ok","id":"u6"})),
    ];
    for (frame, answer) in frames {
        a.send_json(frame.clone()).await;
        assert_eq!(a.recv().await, answer, "answer to {frame}");
    }
    assert_eq!(b.recv().await, json!({"op":"direct","from":a.conn,"data":"hey"}));
    drop((a, b));
    broker.shutdown().await;
}

#[tokio::test]
async fn frames_without_id_get_no_ok_but_take_effect() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut a = broker.connect("").await;
    let mut b = broker.connect("").await;
    let before = frames_before_pong(&mut a, r#"{"op":"subscribe","channel":"quiet"}"#, "p1").await;
    assert_eq!(before, Vec::<Value>::new(), "subscribe without id must not be answered");

    let publish = r#"{"op":"publish","channel":"quiet","data":[1,2,3]}"#;
    let before = frames_before_pong(&mut b, publish, "p2").await;
    assert_eq!(before, Vec::<Value>::new(), "publish without id must not be answered");
    assert_eq!(a.recv().await, json!({"op":"message","channel":"quiet","data":[1,2,3]}));

    let send = json!({"op":"send","to":a.conn,"data":{"k":"v"}}).to_string();
    let before = frames_before_pong(&mut b, &send, "p3").await;
    assert_eq!(before, Vec::<Value>::new(), "send without id must not be answered");
    assert_eq!(a.recv().await, json!({"op":"direct","from":b.conn,"data":{"k":"v"}}));

    let before =
        frames_before_pong(&mut a, r#"{"op":"unsubscribe","channel":"quiet"}"#, "p4").await;
    assert_eq!(before, Vec::<Value>::new(), "unsubscribe without id must not be answered");
    // Unsubscribed: a later message on the channel is not delivered; the sentinel on another
    // channel arrives first.
    a.subscribe("sentinel").await;
    b.publish("quiet", json!("gone")).await;
    b.publish("sentinel", json!("last")).await;
    assert_eq!(a.recv().await, json!({"op":"message","channel":"sentinel","data":"last"}));

    // An error to an id-less frame has no id.
    let before = frames_before_pong(&mut a, r#"{"op":"subscribe","channel":"a..b"}"#, "p5").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["op"], "error");
    assert_eq!(before[0]["code"], "invalid_channel");
    assert!(before[0].get("id").is_none(), "{}", before[0]);
    assert!(before[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    drop((a, b));
    broker.shutdown().await;
}

#[tokio::test]
async fn publish_delivers_data_verbatim_and_the_publisher_gets_its_own_message() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut sub = broker.connect("").await;
    let mut publisher = broker.connect("").await;
    sub.subscribe("room.7").await;
    publisher.subscribe("room.7").await;
    let data = json!({"text":"héllo \"there\"","n":[1,2.5,null,true],"nested":{"a":{}}});
    publisher.publish("room.7", data.clone()).await;
    let expected = json!({"op":"message","channel":"room.7","data":data});
    assert_eq!(sub.recv().await, expected);
    assert_eq!(publisher.recv().await, expected, "a subscribed publisher receives its own");
    // The anonymous publisher has no `user`.
    drop((sub, publisher));
    broker.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_is_idempotent() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut sub = broker.connect("").await;
    let mut publisher = broker.connect("").await;
    sub.subscribe("x.a").await;
    sub.subscribe("x.b").await;
    // Subscribing twice is fine and does not double deliveries.
    sub.subscribe("x.a").await;
    publisher.publish("x.a", json!(1)).await;
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"x.a","data":1}));
    sub.ok(json!({"op":"unsubscribe","channel":"x.a"})).await;
    sub.ok(json!({"op":"unsubscribe","channel":"x.a"})).await;
    sub.ok(json!({"op":"unsubscribe","channel":"never.subscribed"})).await;
    publisher.publish("x.a", json!(2)).await;
    publisher.publish("x.b", json!(3)).await;
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"x.b","data":3}));
    drop((sub, publisher));
    broker.shutdown().await;
}

#[tokio::test]
async fn original_channel_payload_frame_publishes() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut sub = broker.connect("").await;
    let mut publisher = broker.connect("").await;
    sub.subscribe("room.1").await;
    let before =
        frames_before_pong(&mut publisher, r#"{"channel":"room.1","payload":{"x":1}}"#, "q").await;
    assert_eq!(before, Vec::<Value>::new());
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"room.1","data":{"x":1}}));
    // With an id it is acknowledged like any publish.
    publisher.send_text(r#"{"channel":"room.1","payload":"plain","id":77}"#).await;
    assert_eq!(publisher.recv().await, json!({"op":"ok","id":77}));
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"room.1","data":"plain"}));
    // The original shape is checked like a publish.
    let e = publisher.error(json!({"channel":"a..b","payload":1}), "invalid_channel").await;
    assert!(e["id"].is_number());
    publisher.error(json!({"channel":5,"payload":1}), "bad_request").await;
    drop((sub, publisher));
    broker.shutdown().await;
}

#[tokio::test]
async fn query_channels_are_subscribed_on_connect() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut sub = broker.connect("channel=news.a,news.b").await;
    let mut encoded = broker.connect("channel=news.c%2Cnews.d").await;
    let mut publisher = broker.connect("").await;
    for (ch, n) in [("news.a", 1), ("news.b", 2), ("news.c", 3), ("news.d", 4)] {
        publisher.publish(ch, json!(n)).await;
    }
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"news.a","data":1}));
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"news.b","data":2}));
    assert_eq!(encoded.recv().await, json!({"op":"message","channel":"news.c","data":3}));
    assert_eq!(encoded.recv().await, json!({"op":"message","channel":"news.d","data":4}));

    // A bad channel in the query is reported (no id) and the good ones still hold.
    let mut mixed = broker.connect("channel=bad..name,news.e").await;
    let e = mixed.recv().await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("invalid_channel")));
    assert!(e.get("id").is_none(), "{e}");
    publisher.publish("news.e", json!(5)).await;
    assert_eq!(mixed.recv().await, json!({"op":"message","channel":"news.e","data":5}));
    drop((sub, encoded, publisher, mixed));
    broker.shutdown().await;
}

#[tokio::test]
async fn send_reaches_one_connection_with_the_sender_id() {
    let broker = TestBroker::start(NODE_CONFIG).await;
    let mut a = broker.connect("").await;
    let mut b = broker.connect("").await;
    let mut c = broker.connect("").await;
    a.ok(json!({"op":"send","to":b.conn,"data":{"text":"psst"}})).await;
    assert_eq!(b.recv().await, json!({"op":"direct","from":a.conn,"data":{"text":"psst"}}));
    b.ok(json!({"op":"send","to":a.conn,"data":"back"})).await;
    assert_eq!(a.recv().await, json!({"op":"direct","from":b.conn,"data":"back"}));
    // A third connection got nothing: its next frame is the answer to its own ping.
    c.send_text(r#"{"op":"ping","id":1}"#).await;
    assert_eq!(c.recv().await, json!({"op":"pong","id":1}));
    // Sending to oneself works too.
    c.ok(json!({"op":"send","to":c.conn,"data":0})).await;
    assert_eq!(c.recv().await, json!({"op":"direct","from":c.conn,"data":0}));
    drop((a, b, c));
    broker.shutdown().await;
}

#[tokio::test]
async fn not_found_for_unknown_and_malformed_connection_ids() {
    let broker = TestBroker::start(NODE_CONFIG).await;
    let mut c = broker.connect("").await;
    // Guessing the ids sequential numbering used to hand out, or any well-formed id, fails.
    let upper = c.conn.to_uppercase().replace("PROTO", "proto");
    for to in [
        "proto-1:1",
        "proto-1:2",
        "proto-1:0000000000000001",
        "proto-1:999999",
        "proto-1:",
        "proto-1:abc",
        "proto-1:-1",
        "nocolon",
        "",
        &upper,
    ] {
        let e = c.error(json!({"op":"send","to":to,"data":1}), "not_found").await;
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    // A connection that has gone away is not found either.
    let gone = broker.connect("").await;
    let gone_id = gone.conn.clone();
    gone.close().await;
    send_until_not_found(&mut c, &gone_id).await;
    drop(c);
    broker.shutdown().await;
}

#[tokio::test]
async fn client_close_is_echoed() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut a = broker.connect("").await;
    let mut b = broker.connect("").await;
    let mut c = broker.connect("").await;
    let mut d = broker.connect("").await;
    a.send_raw(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })))
        .await;
    assert_eq!(a.expect_close().await, 1000);
    // An application code in 4000-4999 is echoed as sent.
    b.send_raw(Message::Close(Some(CloseFrame { code: CloseCode::from(4321), reason: "".into() })))
        .await;
    assert_eq!(b.expect_close().await, 4321);
    // A close without a code is answered 1000.
    c.send_raw(Message::Close(None)).await;
    assert_eq!(c.expect_close().await, 1000);
    // The closed connections are gone: sending to them is not_found. (Dropping the clients
    // ends their TCP connections, so the broker need not wait out its close grace.)
    let closed = [a.conn.clone(), b.conn.clone(), c.conn.clone()];
    drop((a, b, c));
    for gone in &closed {
        send_until_not_found(&mut d, gone).await;
    }
    drop(d);
    broker.shutdown().await;
}

#[tokio::test]
async fn reloaded_rules_end_subscriptions_with_an_unsubscribed_frame() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut sub = broker.connect("channel=room.1,lobby,keep.me").await;
    let mut publisher = broker.connect("").await;
    let stricter = common::config(
        r#"
[backends.local]
kind = "memory"

[[routes]]
match = "room.*"
subscribe = "nobody"
publish = "anyone"

[[routes]]
match = "keep.**"
subscribe = "anyone"
publish = "anyone"
"#,
    );
    broker.handle.reload(&stricter).expect("reload");
    let mut ended = vec![sub.recv().await, sub.recv().await];
    ended.sort_by_key(|v| v["channel"].as_str().unwrap_or("").to_string());
    assert_eq!(
        ended,
        vec![
            json!({"op":"unsubscribed","channel":"lobby","reason":"no_route"}),
            json!({"op":"unsubscribed","channel":"room.1","reason":"forbidden"}),
        ]
    );
    // Nothing more arrives on the ended channel; the kept one still delivers.
    publisher.publish("room.1", json!("after")).await;
    publisher.publish("keep.me", json!("kept")).await;
    assert_eq!(sub.recv().await, json!({"op":"message","channel":"keep.me","data":"kept"}));
    sub.error(json!({"op":"subscribe","channel":"room.1"}), "forbidden").await;
    drop((sub, publisher));
    broker.shutdown().await;
}

/// Sends to connection `to` until the broker answers `not_found` (it goes away asynchronously
/// after its client closed); any other error fails the test.
async fn send_until_not_found(client: &mut common::Client, to: &str) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let r = client.request(json!({"op":"send","to":to,"data":1})).await;
        if r["op"] == "error" {
            assert_eq!(r["code"], "not_found", "{r}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{to} still reachable after close");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
