//! Backend channels belong to one route, and the broker's own channels to nobody: over real
//! WebSockets, no client channel name reaches another route's traffic (a private inbox) or a
//! node inbox, whatever the client writes.

mod common;

use common::{http, Client, Secrets, TestBroker};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "isolation-test-secret";
const API_KEY: &str = "isolation-key";

/// The chat shape: private personal inboxes, and a catch-all open to anyone, namespaced so it
/// cannot produce an inbox's backend channel.
async fn chat_broker() -> TestBroker {
    let secrets = Secrets::new();
    let (jwt, keys) = (secrets.jwt(SECRET), secrets.api_keys(API_KEY));
    let toml = format!(
        r#"
[node]
id = "iso"

[auth]
{jwt}{keys}
[backends.local]
kind = "memory"

[[routes]]
match = "user.{{id}}"
channel = "im:user:{{id}}"
subscribe = "user == {{id}}"
publish = "authenticated"

[[routes]]
match = "pair.{{a}}.{{b}}"
channel = "pair:{{a}}:{{b}}"
subscribe = "anyone"
publish = "anyone"

[[routes]]
match = "**"
channel = "app:{{**}}"
subscribe = "anyone"
publish = "anyone"
"#
    );
    TestBroker::start_with_secrets(&toml, secrets).await
}

fn token(sub: &str) -> String {
    encode(&Header::default(), &json!({ "sub": sub }), &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("encode token")
}

/// Names an attacker might try for bob's inbox `user.bob` (backend channel `im:user:bob`).
const LOOKALIKES: [&str; 7] = [
    "im:user:bob",
    "app:im:user:bob",
    "im.user.bob",
    "user:bob",
    "im:user:bob.x",
    "switchyard:im:user:bob",
    "app:user.bob",
];

/// Asserts that nothing is queued for `client`: a probe published on its own channel after
/// everything else comes back as its next frame (one node, one ordered backend stream).
async fn assert_nothing_pending(client: &mut Client, probe_channel: &str) {
    client.publish(probe_channel, json!("probe")).await;
    let next = client.recv().await;
    let (op, channel, data) = (&next["op"], &next["channel"], &next["data"]);
    assert_eq!((op, channel, data), (&json!("message"), &json!(probe_channel), &json!("probe")));
}

#[tokio::test]
async fn no_name_reads_or_writes_a_private_inbox_but_its_owner_gets_it() {
    let broker = chat_broker().await;
    let mut bob = broker.connect(&format!("token={}", token("bob"))).await;
    let mut alice = broker.connect(&format!("token={}", token("alice"))).await;
    let mut eve = broker.connect("").await;
    bob.subscribe("user.bob").await;
    eve.error(json!({"op":"subscribe","channel":"user.bob"}), "forbidden").await;
    for name in LOOKALIKES {
        eve.subscribe(name).await;
        eve.publish(name, json!({"forged": name})).await;
    }
    eve.subscribe("eve.probe").await;
    // Eve's own publishes come back to her on her own channels, not to bob.
    for name in LOOKALIKES {
        assert_eq!(eve.recv().await["channel"], name);
    }
    alice.publish("user.bob", json!({"text":"for bob only"})).await;
    let got = bob.recv().await;
    assert_eq!(
        got,
        json!({"op":"message","channel":"user.bob","data":{"text":"for bob only"},"user":"alice"})
    );
    assert_nothing_pending(&mut eve, "eve.probe").await;
    bob.subscribe("bob.probe").await;
    assert_nothing_pending(&mut bob, "bob.probe").await;
    drop((alice, eve));
    broker.shutdown().await;
}

#[tokio::test]
async fn node_inboxes_and_reserved_names_are_out_of_reach() {
    let broker = chat_broker().await;
    let mut bob = broker.connect(&format!("token={}", token("bob"))).await;
    let mut alice = broker.connect(&format!("token={}", token("alice"))).await;
    let mut eve = broker.connect("").await;
    let inbox = switchyard::routing::inbox_channel(&bob.node);
    assert!(inbox.starts_with(switchyard::routing::RESERVED_PREFIX), "{inbox}");
    for name in [inbox.as_str(), switchyard::routing::RESERVED_PREFIX, "#anything"] {
        eve.error(json!({"op":"subscribe","channel":name}), "invalid_channel").await;
        eve.error(json!({"op":"publish","channel":name,"data":1}), "invalid_channel").await;
    }
    // The inbox's old, unreserved name is an ordinary channel of the catch-all now.
    let old = format!("switchyard:inbox:{}", bob.node);
    eve.subscribe(&old).await;
    eve.subscribe("eve.probe").await;
    alice.ok(json!({"op":"send","to":bob.conn,"data":"psst"})).await;
    let got = bob.recv().await;
    assert_eq!((got["op"].as_str(), &got["data"]), (Some("direct"), &json!("psst")), "{got}");
    assert_nothing_pending(&mut eve, "eve.probe").await;
    drop((alice, bob));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_channel_whose_capture_could_cross_routes_is_forbidden() {
    let broker = chat_broker().await;
    let mut c = broker.connect("").await;
    // `pair.x:y.z` and `pair.x.y:z` would both travel on `pair:x:y:z`; the first is refused.
    let e = c.error(json!({"op":"subscribe","channel":"pair.x:y.z"}), "forbidden").await;
    assert!(e["message"].as_str().is_some_and(|m| m.contains("{a} = \"x:y\"")), "{e}");
    c.error(json!({"op":"publish","channel":"pair.x:y.z","data":1}), "forbidden").await;
    c.subscribe("pair.x.y:z").await;
    c.publish("pair.x.y:z", json!("fine")).await;
    assert_eq!(c.recv().await, json!({"op":"message","channel":"pair.x.y:z","data":"fine"}));
    // The HTTP API bypasses permissions, not this.
    let auth = format!("Bearer {API_KEY}");
    let body = json!({"channel":"pair.x:y.z","data":1}).to_string();
    let (status, body) =
        http(broker.addr, "POST", "/api/publish", &[("Authorization", &auth)], &body).await;
    let body: Value = serde_json::from_str(&body).expect("json body");
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    broker.shutdown().await;
}
