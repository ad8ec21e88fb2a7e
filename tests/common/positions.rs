//! Helpers for history channels: positions in frames, and subscribing from one.

use serde_json::{json, Value};

use super::Client;

pub fn offset(v: &Value) -> u64 {
    v["offset"].as_u64().unwrap_or_else(|| panic!("no offset in {v}"))
}

pub fn epoch(v: &Value) -> String {
    v["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {v}")).to_string()
}

/// Subscribes (from `since` = (offset, epoch) when given) and returns the `ok`.
pub async fn subscribe(c: &mut Client, channel: &str, since: Option<(u64, &str)>) -> Value {
    let mut frame = json!({"op":"subscribe","channel":channel});
    if let Some((offset, epoch)) = since {
        frame["since"] = json!({"offset": offset, "epoch": epoch});
    }
    let ok = c.request(frame).await;
    assert_eq!(ok["op"], "ok", "subscribe answered {ok}");
    ok
}
