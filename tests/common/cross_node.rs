//! Two broker nodes on one distributed backend, and the checks every such backend must pass:
//! cross-node publish and `send`, order per publisher, and delivery resuming after a fault.
//! Shared by the Redis and NATS suites so that both hold to exactly the same expectations.

use std::time::Duration;

use serde_json::{json, Value};

use super::{eventually, Client, TestBroker};

/// A node config whose only backend is described by `backend` (the lines after `kind = ...`
/// included), with a room route and a catch-all route, both open to anyone.
pub fn node_config(node: &str, backend: &str) -> String {
    format!(
        r#"
[node]
id = "{node}"

[auth]
send = "anyone"

[backends.main]
{backend}

[[routes]]
match = "room.{{room}}"
channel = "im:room:{{room}}"
subscribe = "anyone"
publish = "anyone"

[[routes]]
match = "**"
channel = "app:{{**}}"
subscribe = "anyone"
publish = "anyone"
"#
    )
}

/// `["a", "b"]` as a TOML array of strings.
pub fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Nodes `a` and `b` on the backend described by `backend`, both ready.
pub async fn two_nodes(backend: &str) -> (TestBroker, TestBroker) {
    let a = TestBroker::start(&node_config("a", backend)).await;
    let b = TestBroker::start(&node_config("b", backend)).await;
    super::wait_ready(&[&a, &b]).await;
    (a, b)
}

/// Publishes probes from `publisher` until `subscriber` receives one (the fault has healed),
/// then proves ordinary delivery with a final message.
pub async fn delivery_resumes(publisher: &mut Client, subscriber: &mut Client, channel: &str) {
    let mut healed = false;
    for i in 0..300 {
        let answer =
            publisher.request(json!({"op":"publish","channel":channel,"data":{"probe":i}})).await;
        assert!(
            answer["op"] == "ok" || answer["code"] == "unavailable",
            "a publish during a fault is ok or unavailable, never anything else: {answer}"
        );
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(100), subscriber.recv()).await {
            assert_eq!(m["channel"], channel);
            healed = true;
            break;
        }
    }
    assert!(healed, "delivery on {channel} did not resume");
    publisher.publish(channel, json!("final")).await;
    loop {
        let m: Value = subscriber.recv().await;
        if m["data"] == "final" {
            break;
        }
        assert!(m["data"]["probe"].is_number(), "unexpected frame {m}");
    }
}

/// A client on node `a` subscribed to `room.1` on connect and a publisher on node `b`, with
/// one message already delivered between them.
pub async fn subscriber_and_publisher(a: &TestBroker, b: &TestBroker) -> (Client, Client) {
    let mut sub = a.connect("channel=room.1").await;
    let mut publisher = b.connect("").await;
    publisher.publish("room.1", json!("before")).await;
    assert_eq!(sub.recv().await["data"], "before");
    (sub, publisher)
}

/// While the backend is down: `node`'s `/readyz` fails, and a publish and a subscribe (to
/// `room.2`) through `client` are refused `unavailable`, not silently accepted or left behind.
pub async fn refused_while_down(node: &TestBroker, client: &mut Client) {
    let addr = node.addr;
    eventually("readyz fails while the backend is down", || async move {
        super::http(addr, "GET", "/readyz", &[], "").await.0 == 503
    })
    .await;
    client.error(json!({"op":"publish","channel":"room.1","data":"lost"}), "unavailable").await;
    client.error(json!({"op":"subscribe","channel":"room.2"}), "unavailable").await;
}

/// After a backend restart, once `room.1` delivers again: a subscribe made since (`room.2`,
/// from node b's `publisher`) carries node a's publishes, and `send` reaches node a through its
/// re-subscribed inbox. Node a has not published since the restart, so its first publishes
/// may find the old connection dead and answer `unavailable` (never a false ok).
pub async fn new_subscription_and_inbox_heal(sub: &mut Client, publisher: &mut Client) {
    publisher.subscribe("room.2").await;
    delivery_resumes(sub, publisher, "room.2").await;
    publisher.ok(json!({"op":"send","to":sub.conn,"data":"inbox back"})).await;
    assert_eq!(sub.recv().await["data"], "inbox back");
}

/// Publish and `send` in both directions between nodes `a` and `b`, `not_found` for a node
/// nobody runs, and one publisher's order kept across the backend.
pub async fn cross_node_publish_and_send(a: &TestBroker, b: &TestBroker) {
    let mut on_a = a.connect("").await;
    let mut on_b = b.connect("").await;
    assert_eq!(on_a.node, "a");
    assert_eq!(on_b.node, "b");
    on_a.subscribe("room.1").await;
    on_b.subscribe("room.1").await;
    on_b.publish("room.1", json!({"text":"from b"})).await;
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(
            c.recv().await,
            json!({"op":"message","channel":"room.1","data":{"text":"from b"}})
        );
    }
    on_a.ok(json!({"op":"send","to":on_b.conn,"data":"psst"})).await;
    assert_eq!(on_b.recv().await, json!({"op":"direct","from":on_a.conn,"data":"psst"}));
    on_b.ok(json!({"op":"send","to":on_a.conn,"data":"back"})).await;
    assert_eq!(on_a.recv().await, json!({"op":"direct","from":on_b.conn,"data":"back"}));
    // A node nobody runs has no inbox subscriber: the connection is known not to exist.
    on_a.error(json!({"op":"send","to":"ghost:0123456789abcdef","data":"hello?"}), "not_found")
        .await;
    // Order per publisher survives the trip through the backend.
    for i in 0..200 {
        on_a.send_json(json!({"op":"publish","channel":"room.1","data":i})).await;
    }
    for i in 0..200 {
        assert_eq!(on_b.recv().await["data"], i, "cross-node order");
    }
}

/// Five clients on each node hold `room.7` (the first node's clients subscribe twice): the
/// backend carries one subscription per node, as `subscriptions()` counts them, one once node
/// a's clients have left, and node b's clients still receive.
pub async fn one_subscription_per_channel_per_node(
    a: &TestBroker,
    b: &TestBroker,
    subscriptions: impl Fn() -> usize,
) {
    let mut clients_a = Vec::new();
    let mut clients_b = Vec::new();
    for _ in 0..5 {
        let mut c = a.connect("channel=room.7").await;
        c.subscribe("room.7").await;
        clients_a.push(c);
        clients_b.push(b.connect("channel=room.7").await);
    }
    assert_eq!(subscriptions(), 2, "one subscription per node");
    for c in clients_a.drain(..) {
        c.close().await;
    }
    eventually("node a dropped its subscription", || async { subscriptions() == 1 }).await;
    let mut publisher = a.connect("").await;
    publisher.publish("room.7", json!("still")).await;
    for c in &mut clients_b {
        assert_eq!(c.recv().await["data"], "still");
    }
}
