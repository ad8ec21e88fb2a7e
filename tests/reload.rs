//! Hot reload of routes, permissions and limits: a valid edit takes effect, an invalid one is
//! refused while the running rules stay, and subscriptions the new rules forbid are ended.

mod common;

use std::path::Path;

use common::{Client, TestBroker};
use serde_json::json;
use switchyard::config::Config;

fn rules(subscribe: &str, extra: &str) -> String {
    format!(
        "[backends.local]\nkind = \"memory\"\n\n[[routes]]\nmatch = \"room.{{id}}\"\nsubscribe = \"{subscribe}\"\npublish = \"anyone\"\n{extra}"
    )
}

async fn start(path: &Path, text: &str) -> TestBroker {
    std::fs::write(path, text).expect("write config");
    let mut config = Config::load(path).expect("initial config");
    config.server.listen = ([127, 0, 0, 1], 0).into();
    let broker = TestBroker::from_config(config).await;
    tokio::spawn(switchyard::reload::watch(broker.handle.reloader(), path.to_path_buf()));
    broker
}

/// Subscribes, treating `no_route` as "not reloaded yet".
async fn subscribe_when_routed(c: &mut Client, channel: &str) {
    for _ in 0..500 {
        let answer = c.request(json!({"op":"subscribe","channel":channel})).await;
        if answer["op"] == "ok" {
            return;
        }
        assert_eq!(answer["code"], "no_route", "{answer}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{channel} never became routable");
}

#[tokio::test]
async fn a_valid_edit_is_picked_up_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    let broker = start(&path, &rules("anyone", "")).await;
    let mut c = broker.connect("").await;
    c.error(json!({"op":"subscribe","channel":"lobby.1"}), "no_route").await;
    let added = "\n[[routes]]\nmatch = \"lobby.*\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\n";
    std::fs::write(&path, rules("anyone", added)).expect("rewrite");
    subscribe_when_routed(&mut c, "lobby.1").await;
    c.publish("lobby.1", json!("after reload")).await;
    assert_eq!(c.recv().await["data"], "after reload");
    broker.shutdown().await;
}

#[tokio::test]
async fn an_invalid_edit_is_refused_and_the_running_rules_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    let broker = start(&path, &rules("anyone", "")).await;
    let mut c = broker.connect("").await;
    c.subscribe("room.1").await;
    std::fs::write(&path, "[[routes]]\nmatch = \"room.{id}\"\nbackend = \"nope\"\n")
        .expect("rewrite");
    // Reloads at once instead of waiting for the watcher; that the failure is counted is
    // checked in tests/metrics.rs, where the metrics recorder is not shared with other tests.
    assert!(!switchyard::reload::reload(&broker.handle.reloader(), &path), "the edit was taken");
    // Still routed and delivering under the old rules.
    c.publish("room.1", json!("still here")).await;
    assert_eq!(c.recv().await["data"], "still here");
    let mut late = broker.connect("").await;
    late.subscribe("room.2").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn subscriptions_the_new_rules_forbid_are_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    let broker = start(
        &path,
        &rules(
            "anyone",
            "\n[[routes]]\nmatch = \"keep.*\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\n",
        ),
    )
    .await;
    let mut c = broker.connect("").await;
    let mut publisher = broker.connect("").await;
    c.subscribe("room.1").await;
    c.subscribe("keep.1").await;
    std::fs::write(
        &path,
        rules("nobody", "\n[[routes]]\nmatch = \"keep.*\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\n# revoked\n"),
    )
    .expect("rewrite");
    let m = c.recv().await;
    assert_eq!(m, json!({"op":"unsubscribed","channel":"room.1","reason":"forbidden"}));
    // The revoked channel no longer delivers; the kept one does (the sentinel proves order).
    publisher.publish("room.1", json!("revoked")).await;
    publisher.publish("keep.1", json!("kept")).await;
    assert_eq!(c.recv().await, json!({"op":"message","channel":"keep.1","data":"kept"}));
    c.error(json!({"op":"subscribe","channel":"room.1"}), "forbidden").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn limits_reload_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    let broker = start(&path, &rules("anyone", "")).await;
    let mut c = broker.connect("").await;
    c.subscribe("room.1").await;
    std::fs::write(&path, format!("[limits]\nmax_subscriptions = 1\n{}", rules("anyone", "")))
        .expect("rewrite");
    let mut answer = json!(null);
    for _ in 0..500 {
        answer = c.request(json!({"op":"subscribe","channel":"room.2"})).await;
        if answer["op"] == "error" {
            break;
        }
        c.ok(json!({"op":"unsubscribe","channel":"room.2"})).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(answer["code"], "rate_limited", "{answer}");
    broker.shutdown().await;
}

/// An edit is noticed by content: same length, and the modification time put back as it was.
#[tokio::test]
async fn an_edit_that_keeps_length_and_mtime_is_still_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    let broker = start(&path, &rules("nobody", "")).await;
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
    let mut c = broker.connect("").await;
    c.error(json!({"op":"subscribe","channel":"room.1"}), "forbidden").await;
    let (before, after) = (rules("nobody", ""), rules("anyone", ""));
    assert_eq!(before.len(), after.len());
    std::fs::write(&path, after).expect("rewrite");
    let file = std::fs::File::options().write(true).open(&path).expect("open");
    file.set_modified(mtime).expect("restore mtime");
    drop(file);
    for _ in 0..500 {
        let answer = c.request(json!({"op":"subscribe","channel":"room.1"})).await;
        if answer["op"] == "ok" {
            broker.shutdown().await;
            return;
        }
        assert_eq!(answer["code"], "forbidden", "{answer}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the same-length edit was never picked up");
}
