//! Presence helpers shared by the memory and Redis suites.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::Client;

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
