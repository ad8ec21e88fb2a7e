//! The shortest path a new user takes: connect, subscribe, publish, receive.

mod common;

use common::{TestBroker, OPEN_CONFIG};
use serde_json::json;

#[tokio::test]
async fn publish_reaches_a_subscriber_and_the_publisher_gets_ok() {
    let broker = TestBroker::start(OPEN_CONFIG).await;
    let mut sub = broker.connect("").await;
    let mut publisher = broker.connect("").await;
    sub.subscribe("room.42").await;
    publisher.publish("room.42", json!({"text":"hi"})).await;
    let m = sub.recv().await;
    assert_eq!(m, json!({"op":"message","channel":"room.42","data":{"text":"hi"}}));
    broker.shutdown().await;
}
