//! Keepalive: a silent client is pinged, and closed when it does not answer; a client that
//! answers pings stays connected.

mod common;

use std::time::Duration;

use common::{RawWs, TestBroker};
use serde_json::json;

const CONFIG: &str = common::open_config!(
    r#"
[server]
ping_interval_ms = 200
"#
);

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let broker = TestBroker::start(CONFIG).await;
    let mut silent = RawWs::connect(broker.addr, "/ws").await;
    let (opcode, _) = silent.read_frame().await;
    assert_eq!(opcode, 0x9, "the first thing a silent client hears is a ping");
    assert_eq!(silent.expect_close().await, 1000);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let broker = TestBroker::start(CONFIG).await;
    let mut lively = RawWs::connect(broker.addr, "/ws").await;
    // Answer every ping for several ping intervals.
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while tokio::time::Instant::now() < until {
        if let Ok((opcode, payload)) =
            tokio::time::timeout(Duration::from_millis(100), lively.read_frame()).await
        {
            assert_eq!(opcode, 0x9, "only pings are expected while idle");
            pings += 1;
            lively.send_bytes(&common::client_frame(true, 0xA, &payload)).await;
        }
    }
    assert!(pings >= 2, "pinged {pings} times in 1.2 s with a 200 ms interval");
    // Still served.
    lively.send_text(&json!({"op":"ping","id":1}).to_string()).await;
    loop {
        let (opcode, payload) = lively.read_frame().await;
        if opcode == 0x1 {
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&payload).expect("json"),
                json!({"op":"pong","id":1})
            );
            break;
        }
        assert_eq!(opcode, 0x9);
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_chatty_client_stays_connected() {
    let broker = TestBroker::start(CONFIG).await;
    let mut chatty = broker.connect("").await;
    // A frame every 50 ms keeps the connection heard from; the client never sees a close.
    for i in 0..20 {
        chatty.subscribe(&format!("c.{i}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chatty.publish("c.0", json!("still here")).await;
    assert_eq!(chatty.recv().await["data"], "still here");
    broker.shutdown().await;
}
