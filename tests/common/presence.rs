//! Presence helpers and scenarios shared by the memory and Redis suites: each scenario runs
//! on two broker nodes of one backend.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::{Client, Secrets, TestBroker};

/// Asks `channel`'s presence with `extra` fields (`limit`, `cursor`, `members`); panics unless
/// it is answered with a `presence` frame.
pub async fn presence(c: &mut Client, channel: &str, extra: Value) -> Value {
    let mut frame = json!({"op":"presence","channel":channel});
    if let (Some(f), Some(e)) = (frame.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    let answer = c.request(frame.clone()).await;
    assert_eq!(answer["op"], "presence", "{frame} was answered {answer}");
    answer
}

/// `(connections, users)` of an answer.
pub fn counts(answer: &Value) -> (u64, u64) {
    (answer["connections"].as_u64().expect("connections"), answer["users"].as_u64().expect("users"))
}

/// conn → user ("" for anonymous) of an answer's members.
pub fn members(answer: &Value) -> BTreeMap<String, String> {
    answer["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {answer}"))
        .iter()
        .map(|m| {
            let conn = m["conn"].as_str().expect("conn").to_string();
            (conn, m["user"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// Every member, page by page of `limit`; panics if a member is listed twice.
pub async fn all_members(c: &mut Client, channel: &str, limit: u64) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut extra = json!({"limit": limit});
        if let Some(x) = &cursor {
            extra["cursor"] = json!(x);
        }
        let page = presence(c, channel, extra).await;
        for (conn, user) in members(&page) {
            assert!(all.insert(conn.clone(), user).is_none(), "{conn} listed twice");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
}

/// The conns a `presence_diff` frame names on `side` (`join` or `leave`).
pub fn diff_side(frame: &Value, side: &str) -> Vec<String> {
    frame[side]
        .as_array()
        .unwrap_or_else(|| panic!("no {side} in {frame}"))
        .iter()
        .map(|m| m["conn"].as_str().expect("conn").to_string())
        .collect()
}

pub const SECRET: &str = "presence-test-secret";

pub const ROUTES: &str = r#"
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

pub fn token(sub: &str) -> String {
    encode(&Header::default(), &json!({ "sub": sub }), &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("encode token")
}

/// `[auth]` (HS256 tokens signed with [`SECRET`], API key `presence-key`), `backend` (a
/// `[backends.…]` table) and [`ROUTES`], for node `node`.
pub fn node_config(node: &str, secrets: &Secrets, backend: &str) -> String {
    format!(
        "[node]\nid = \"{node}\"\n[auth]\n{}{}\n{backend}\n{ROUTES}",
        secrets.jwt(SECRET),
        secrets.api_keys("presence-key"),
    )
}

pub async fn as_user(broker: &TestBroker, user: &str) -> Client {
    broker.connect(&format!("token={}", token(user))).await
}

/// Members of both nodes, counted (a user once however many connections) and paged.
pub async fn members_of_both_nodes_are_counted_listed_and_paged(a: &TestBroker, b: &TestBroker) {
    let mut clients = vec![
        as_user(a, "alice").await,
        as_user(a, "alice").await,
        as_user(b, "alice").await,
        as_user(b, "bob").await,
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

/// Members leave on unsubscribe (answered once gone), on disconnect, and with their node.
pub async fn members_leave_on_unsubscribe_disconnect_and_node_shutdown(
    a: &TestBroker,
    b: TestBroker,
) {
    let mut stays = as_user(a, "alice").await;
    let mut unsubscribes = as_user(a, "alice").await;
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
    let deadline = tokio::time::Instant::now() + super::WAIT;
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

/// Twenty joins on two nodes reach a subscriber in fewer frames; leaves too; no diffs
/// without `join_leave`.
pub async fn joins_and_leaves_reach_subscribers_coalesced(a: &TestBroker, b: &TestBroker) {
    let mut watcher = a.connect("").await;
    watcher.subscribe("room.3").await;
    // Twenty joins at once, on both nodes.
    let mut joiners = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 { a } else { b };
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

/// `presence` needs subscribe permission and a route with presence.
pub async fn presence_needs_subscribe_permission_and_a_presence_route(a: &TestBroker) {
    let mut anon = a.connect("").await;
    anon.error(json!({"op":"presence","channel":"vip.1"}), "forbidden").await;
    anon.error(json!({"op":"presence","channel":"plain.1"}), "bad_request").await;
    anon.error(json!({"op":"presence","channel":"nowhere.1"}), "no_route").await;
    anon.error(json!({"op":"presence","channel":"room.1","limit":0}), "bad_request").await;
    anon.error(json!({"op":"presence","channel":"room.1","limit":1001}), "bad_request").await;
    anon.error(json!({"op":"presence","channel":"room.1","members":1}), "bad_request").await;
    anon.error(json!({"op":"subscribe","channel":"vip.1"}), "forbidden").await;
    let mut alice = as_user(a, "alice").await;
    alice.subscribe("vip.1").await;
    let answer = presence(&mut alice, "vip.1", json!({})).await;
    assert_eq!(members(&answer), BTreeMap::from([(alice.conn.clone(), "alice".to_string())]));
    // A cursor is only a place in the order: any string is answered, none is obeyed blindly.
    let after_all = presence(&mut alice, "vip.1", json!({"cursor": "\u{ffff}"})).await;
    assert!(members(&after_all).is_empty(), "{after_all}");
}

/// `POST /api/presence` answers like the `presence` op, with the API key.
pub async fn the_http_api_answers_presence(a: &TestBroker) {
    let mut alice = as_user(a, "alice").await;
    alice.subscribe("vip.9").await;
    let auth = [("authorization", "Bearer presence-key")];
    let body = json!({"channel":"vip.9"}).to_string();
    let (status, answer) = super::http(a.addr, "POST", "/api/presence", &auth, &body).await;
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["op"].as_str(), counts(&answer)), (Some("presence"), (1, 1)));
    assert_eq!(members(&answer), BTreeMap::from([(alice.conn.clone(), "alice".to_string())]));
    let body = json!({"channel":"vip.9","members":false}).to_string();
    let (_, only) = super::http(a.addr, "POST", "/api/presence", &auth, &body).await;
    let only: Value = serde_json::from_str(&only).expect("json");
    assert!(only.get("members").is_none() && counts(&only) == (1, 1), "{only}");
    let (status, _) = super::http(a.addr, "POST", "/api/presence", &[], &body).await;
    assert_eq!(status, 401, "the API needs its key");
    let bad = json!({"channel":"vip.9","limit":0}).to_string();
    let (status, _) = super::http(a.addr, "POST", "/api/presence", &auth, &bad).await;
    assert_eq!(status, 400);
    let plain = json!({"channel":"plain.9"}).to_string();
    let (status, _) = super::http(a.addr, "POST", "/api/presence", &auth, &plain).await;
    assert_eq!(status, 400, "a route without presence");
}
