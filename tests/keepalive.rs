//! Keepalive: a silent client is pinged, and closed when it does not answer; a client that
//! answers pings stays connected.
//!
//! On paused tokio time: the broker and the client run in this test's runtime, so when both
//! wait, tokio moves the clock straight to the next timer (the broker's ping, the client's
//! read deadline). Intervals are exact and a loaded machine cannot stretch them into a
//! failure; a test takes milliseconds of real time whatever the interval.

mod common;

use std::time::Duration;

use common::{RawWs, TestBroker};
use serde_json::json;

const INTERVAL: Duration = Duration::from_millis(200);

const CONFIG: &str = common::open_config!(
    r#"
[server]
ping_interval_ms = 200
"#
);

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_pings_is_closed() {
    let broker = TestBroker::start(CONFIG).await;
    let mut silent = RawWs::connect(broker.addr, "/ws").await;
    let started = tokio::time::Instant::now();
    let (opcode, _) = silent.read_frame().await;
    assert_eq!(opcode, 0x9, "the first thing a silent client hears is a ping");
    assert_eq!(started.elapsed(), INTERVAL, "pinged after one interval of silence");
    let (code, reason) = silent.expect_close_with_reason().await;
    assert_eq!((code, reason.as_str()), (1000, "ping timeout: nothing heard from the client"));
    assert_eq!(started.elapsed(), 2 * INTERVAL, "closed one interval after the unanswered ping");
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays() {
    let broker = TestBroker::start(CONFIG).await;
    let mut lively = RawWs::connect(broker.addr, "/ws").await;
    // Answer every ping for six intervals (and half of one, so the sixth ping is not due at
    // the very instant this loop stops).
    let until = tokio::time::Instant::now() + 6 * INTERVAL + INTERVAL / 2;
    let mut pings = 0;
    while tokio::time::Instant::now() < until {
        if let Ok((opcode, payload)) = tokio::time::timeout_at(until, lively.read_frame()).await {
            assert_eq!(opcode, 0x9, "only pings are expected while idle");
            pings += 1;
            lively.send_bytes(&common::client_frame(true, 0xA, &payload)).await;
        }
    }
    assert_eq!(pings, 6, "one ping per interval of silence, each answered");
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

#[tokio::test(start_paused = true)]
async fn a_chatty_client_stays_connected() {
    let broker = TestBroker::start(CONFIG).await;
    let mut chatty = broker.connect("").await;
    // A frame every quarter interval keeps the connection heard from for five intervals; the
    // client never sees a close.
    for i in 0..20 {
        chatty.subscribe(&format!("c.{i}")).await;
        tokio::time::sleep(INTERVAL / 4).await;
    }
    chatty.publish("c.0", json!("still here")).await;
    assert_eq!(chatty.recv().await["data"], "still here");
    broker.shutdown().await;
}
