//! Presence over real sockets on the memory backend: members of two nodes with counts that
//! count a user once however many connections it has, paging, leaving by unsubscribe,
//! disconnect and node shutdown, coalesced join/leave diffs, permissions and the HTTP API.
//! The Redis backends run the same over real redis-server processes in
//! tests/presence_redis.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::presence::{all_members, counts, diff_side, members, presence};
use common::{Client, Secrets, TestBroker};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use switchyard_memory::{MemoryBackend, MemoryBus};

const SECRET: &str = "presence-test-secret";

const ROUTES: &str = r#"
[[routes]]
match = "room.{id}"
subscribe = "anyone"
publish = "anyone"
presence = true
join_leave = true

[[routes]]
match = "quiet.{id}"
subscribe = "anyone"
publish = "anyone"
presence = true

[[routes]]
match = "vip.{id}"
subscribe = "authenticated"
publish = "authenticated"
presence = true

[[routes]]
match = "plain.{id}"
subscribe = "anyone"
publish = "anyone"
"#;

fn token(sub: &str) -> String {
    encode(&Header::default(), &json!({ "sub": sub }), &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("encode token")
}

fn config(node: &str, secrets: &Secrets) -> String {
    format!(
        "[node]\nid = \"{node}\"\n[auth]\n{}{}\n[backends.bus]\nkind = \"memory\"\n{ROUTES}",
        secrets.jwt(SECRET),
        secrets.api_keys("presence-key"),
    )
}

/// Two nodes on one in-process bus.
async fn two_nodes() -> (TestBroker, TestBroker, Secrets) {
    let secrets = Secrets::new();
    let bus = MemoryBus::new();
    let node = |id: &str| common::config(&config(id, &secrets));
    let a = TestBroker::with_backends(node("a"), vec![Arc::new(MemoryBackend::on_bus(&bus))]).await;
    let b = TestBroker::with_backends(node("b"), vec![Arc::new(MemoryBackend::on_bus(&bus))]).await;
    (a, b, secrets)
}

async fn as_user(broker: &TestBroker, user: &str) -> Client {
    broker.connect(&format!("token={}", token(user))).await
}

#[tokio::test]
async fn members_of_both_nodes_are_counted_listed_and_paged() {
    let (a, b, _secrets) = two_nodes().await;
    let mut clients = vec![
        as_user(&a, "alice").await,
        as_user(&a, "alice").await,
        as_user(&b, "alice").await,
        as_user(&b, "bob").await,
        a.connect("").await,
    ];
    for c in &mut clients {
        c.subscribe("quiet.1").await;
    }
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for (c, user) in clients.iter().zip(["alice", "alice", "alice", "bob", ""]) {
        expected.insert(c.conn.clone(), user.to_string());
    }
    let mut reader = b.connect("").await;
    let answer = presence(&mut reader, "quiet.1", json!({})).await;
    assert_eq!(counts(&answer), (5, 2), "alice on three connections is one user: {answer}");
    assert_eq!(members(&answer), expected, "every member with its user");
    assert!(answer.get("next_cursor").is_none(), "one page: {answer}");
    let only = presence(&mut reader, "quiet.1", json!({"members": false})).await;
    assert_eq!(counts(&only), (5, 2));
    assert!(only.get("members").is_none(), "counts alone: {only}");
    let first = presence(&mut reader, "quiet.1", json!({"limit": 2})).await;
    assert_eq!(members(&first).len(), 2);
    assert!(first["next_cursor"].is_string(), "more pages follow: {first}");
    assert_eq!(all_members(&mut reader, "quiet.1", 2).await, expected, "paged, none twice");
    // The reader is not subscribed: asking does not make it a member.
    assert_eq!(counts(&presence(&mut reader, "quiet.1", json!({})).await), (5, 2));
}

#[tokio::test]
async fn members_leave_on_unsubscribe_disconnect_and_node_shutdown() {
    let (a, b, _secrets) = two_nodes().await;
    let mut stays = as_user(&a, "alice").await;
    let mut unsubscribes = as_user(&a, "alice").await;
    let mut hangs_up = a.connect("").await;
    let mut on_b = as_user(&b, "bob").await;
    for c in [&mut stays, &mut unsubscribes, &mut hangs_up, &mut on_b] {
        c.subscribe("quiet.2").await;
    }
    assert_eq!(counts(&presence(&mut stays, "quiet.2", json!({})).await), (4, 2));
    unsubscribes.ok(json!({"op":"unsubscribe","channel":"quiet.2"})).await;
    // The unsubscribe's answer waits for the leave.
    let answer = presence(&mut stays, "quiet.2", json!({})).await;
    assert_eq!(counts(&answer), (3, 2), "{answer}");
    assert!(!members(&answer).contains_key(&unsubscribes.conn));
    hangs_up.close().await;
    // A closed connection's leave is queued as it goes; poll for it.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while counts(&presence(&mut stays, "quiet.2", json!({})).await) != (2, 2) {
        assert!(tokio::time::Instant::now() < deadline, "the closed connection did not leave");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.shutdown().await;
    // A node that shuts down takes its members with it at once, not a lease later.
    let answer = presence(&mut stays, "quiet.2", json!({})).await;
    assert_eq!(counts(&answer), (1, 1), "bob's node is gone: {answer}");
    assert_eq!(members(&answer).into_keys().collect::<Vec<_>>(), [stays.conn.clone()]);
    drop(on_b);
}

/// Reads frames until `until` has been seen, collecting the `presence_diff`s of `channel`.
async fn diffs_until(c: &mut Client, channel: &str, until: &Value) -> Vec<Value> {
    let mut diffs = Vec::new();
    loop {
        let f = c.recv().await;
        if f["op"] == "presence_diff" {
            assert_eq!(f["channel"], channel, "{f}");
            diffs.push(f);
        } else if f["op"] == "message" && f["data"] == *until {
            return diffs;
        }
    }
}

#[tokio::test]
async fn joins_and_leaves_reach_subscribers_coalesced() {
    let (a, b, _secrets) = two_nodes().await;
    let mut watcher = a.connect("").await;
    watcher.subscribe("room.3").await;
    // Twenty joins at once, on both nodes.
    let mut joiners = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        joiners.push(as_user(node, &format!("user{i}")).await);
    }
    for j in &mut joiners {
        j.send_json(json!({"op":"subscribe","channel":"room.3","id":"s"})).await;
    }
    for j in &mut joiners {
        let ok = j.recv().await;
        assert_eq!(ok["op"], "ok", "{ok}");
    }
    let expected: BTreeSet<String> = joiners.iter().map(|j| j.conn.clone()).collect();
    let mut joined = BTreeSet::new();
    let mut frames = 0;
    while !expected.is_subset(&joined) {
        let f = watcher.recv().await;
        assert_eq!(f["op"], "presence_diff", "{f}");
        frames += 1;
        for conn in diff_side(&f, "join") {
            assert!(joined.insert(conn.clone()), "{conn} joined twice");
        }
        let users: Vec<&str> =
            f["join"].as_array().expect("join").iter().filter_map(|m| m["user"].as_str()).collect();
        assert!(users.iter().all(|u| u.starts_with("user")), "joins carry users: {f}");
    }
    assert!(frames < 20, "twenty joins, {frames} frames: coalesced per window");
    // Ten leave: by unsubscribing and by hanging up.
    let leaving: Vec<Client> = joiners.drain(..10).collect();
    let left: BTreeSet<String> = leaving.iter().map(|c| c.conn.clone()).collect();
    for (i, mut c) in leaving.into_iter().enumerate() {
        if i % 2 == 0 {
            c.ok(json!({"op":"unsubscribe","channel":"room.3"})).await;
        } else {
            c.close().await;
        }
    }
    let mut gone = BTreeSet::new();
    while gone != left {
        let f = watcher.recv().await;
        assert_eq!(f["op"], "presence_diff", "{f}");
        for conn in diff_side(&f, "leave") {
            assert!(left.contains(&conn), "{conn} did not leave");
            assert!(gone.insert(conn.clone()), "{conn} left twice");
        }
    }
    // A route without join_leave sends no diffs: the next frame after joins is a message.
    let mut quiet = a.connect("").await;
    quiet.subscribe("quiet.3").await;
    let mut newcomer = b.connect("").await;
    newcomer.subscribe("quiet.3").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    newcomer.publish("quiet.3", json!("sentinel")).await;
    let diffs = diffs_until(&mut quiet, "quiet.3", &json!("sentinel")).await;
    assert!(diffs.is_empty(), "no presence_diff without join_leave: {diffs:?}");
}

#[tokio::test]
async fn presence_needs_subscribe_permission_and_a_presence_route() {
    let (a, _b, _secrets) = two_nodes().await;
    let mut anon = a.connect("").await;
    anon.error(json!({"op":"presence","channel":"vip.1"}), "forbidden").await;
    anon.error(json!({"op":"presence","channel":"plain.1"}), "bad_request").await;
    anon.error(json!({"op":"presence","channel":"nowhere.1"}), "no_route").await;
    anon.error(json!({"op":"presence","channel":"room.1","limit":0}), "bad_request").await;
    anon.error(json!({"op":"presence","channel":"room.1","limit":1001}), "bad_request").await;
    anon.error(json!({"op":"presence","channel":"room.1","members":1}), "bad_request").await;
    anon.error(json!({"op":"subscribe","channel":"vip.1"}), "forbidden").await;
    let mut alice = as_user(&a, "alice").await;
    alice.subscribe("vip.1").await;
    let answer = presence(&mut alice, "vip.1", json!({})).await;
    assert_eq!(members(&answer), BTreeMap::from([(alice.conn.clone(), "alice".to_string())]));
    // A cursor is only a place in the order: any string is answered, none is obeyed blindly.
    let after_all = presence(&mut alice, "vip.1", json!({"cursor": "\u{ffff}"})).await;
    assert!(members(&after_all).is_empty(), "{after_all}");
}

#[tokio::test]
async fn the_http_api_answers_presence() {
    let (a, _b, _secrets) = two_nodes().await;
    let mut alice = as_user(&a, "alice").await;
    alice.subscribe("vip.9").await;
    let auth = [("authorization", "Bearer presence-key")];
    let body = json!({"channel":"vip.9"}).to_string();
    let (status, answer) = common::http(a.addr, "POST", "/api/presence", &auth, &body).await;
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["op"].as_str(), counts(&answer)), (Some("presence"), (1, 1)));
    assert_eq!(members(&answer), BTreeMap::from([(alice.conn.clone(), "alice".to_string())]));
    let body = json!({"channel":"vip.9","members":false}).to_string();
    let (_, only) = common::http(a.addr, "POST", "/api/presence", &auth, &body).await;
    let only: Value = serde_json::from_str(&only).expect("json");
    assert!(only.get("members").is_none() && counts(&only) == (1, 1), "{only}");
    let (status, _) = common::http(a.addr, "POST", "/api/presence", &[], &body).await;
    assert_eq!(status, 401, "the API needs its key");
    let bad = json!({"channel":"vip.9","limit":0}).to_string();
    let (status, _) = common::http(a.addr, "POST", "/api/presence", &auth, &bad).await;
    assert_eq!(status, 400);
    let plain = json!({"channel":"plain.9"}).to_string();
    let (status, _) = common::http(a.addr, "POST", "/api/presence", &auth, &plain).await;
    assert_eq!(status, 400, "a route without presence");
}
