//! Fan-out: hundreds of subscribers get every message in per-publisher order, `?batch=1`
//! packing, and a slow consumer is closed with 4001 without holding up anyone else.

mod common;

use std::collections::HashMap;

use common::TestBroker;
use serde_json::{json, Value};

const FANOUT_CONFIG: &str = common::open_config!(
    r#"
[server]
outbound_queue = 4096

[limits]
publish_rate = 100000
publish_burst = 100000
"#
);

/// Checks that `messages` holds, for every publisher `0..publishers`, the sequence numbers
/// `0..per_publisher` in order (other publishers' messages may interleave).
fn assert_per_publisher_order(who: &str, messages: &[Value], publishers: u64, per_publisher: u64) {
    let mut next: HashMap<u64, u64> = HashMap::new();
    for m in messages {
        assert_eq!(m["op"], "message", "{who}: {m}");
        let p = m["data"]["p"].as_u64().unwrap_or_else(|| panic!("{who}: {m}"));
        let seq = m["data"]["seq"].as_u64().unwrap_or_else(|| panic!("{who}: {m}"));
        let expected = next.entry(p).or_insert(0);
        assert_eq!(seq, *expected, "{who}: publisher {p} out of order or lost a message");
        *expected += 1;
    }
    for p in 0..publishers {
        assert_eq!(next.get(&p).copied().unwrap_or(0), per_publisher, "{who}: publisher {p}");
    }
}

/// Publishes `count` messages `{"p":p,"seq":n}` on `channel` as one pipelined burst, each with
/// an id, and checks that every one was answered `ok`.
async fn publish_burst(c: &mut common::Client, channel: &str, p: u64, count: u64, pad: &str) {
    let frames: Vec<String> = (0..count)
        .map(|seq| {
            json!({"op":"publish","channel":channel,"id":seq,"data":{"p":p,"seq":seq,"pad":pad}})
                .to_string()
        })
        .collect();
    c.send_texts(&frames).await;
    for seq in 0..count {
        let answer = c.recv().await;
        assert_eq!(answer, json!({"op":"ok","id":seq}), "publisher {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_subscribers_get_every_message_in_publisher_order() {
    const SUBSCRIBERS: usize = 300;
    const PUBLISHERS: u64 = 4;
    const PER_PUBLISHER: u64 = 200;
    let broker = TestBroker::start(FANOUT_CONFIG).await;
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        // Half subscribe on connect, half with a frame.
        if i % 2 == 0 {
            subscribers.push(broker.connect("channel=fan.out").await);
        } else {
            let mut c = broker.connect("").await;
            c.subscribe("fan.out").await;
            subscribers.push(c);
        }
    }
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let total = (PUBLISHERS * PER_PUBLISHER) as usize;
                let mut got = Vec::with_capacity(total);
                while got.len() < total {
                    got.push(c.recv().await);
                }
                assert_per_publisher_order(&c.conn, &got, PUBLISHERS, PER_PUBLISHER);
                // Nothing beyond: the next frame answers our own ping.
                c.send_text(r#"{"op":"ping","id":"end"}"#).await;
                assert_eq!(c.recv().await, json!({"op":"pong","id":"end"}), "{}", c.conn);
                c
            })
        })
        .collect();
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        publishers.push(broker.connect("").await);
    }
    let publishing: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut c)| {
            tokio::spawn(async move {
                publish_burst(&mut c, "fan.out", p as u64, PER_PUBLISHER, "").await;
                c
            })
        })
        .collect();
    let mut keep = Vec::new();
    for task in publishing {
        keep.push(task.await.expect("publisher task"));
    }
    for task in readers {
        keep.push(task.await.expect("subscriber task"));
    }
    drop(keep);
    broker.shutdown().await;
}

#[tokio::test]
async fn subscribers_of_many_channels_get_only_their_channels() {
    let broker = TestBroker::start(FANOUT_CONFIG).await;
    let mut subs = Vec::new();
    for room in 0..20 {
        for _ in 0..5 {
            subs.push((room, broker.connect(&format!("channel=room.{room}")).await));
        }
    }
    let mut publisher = broker.connect("").await;
    for round in 0..10 {
        for room in 0..20 {
            publisher.publish(&format!("room.{room}"), json!({"room":room,"round":round})).await;
        }
    }
    for (room, sub) in subs.iter_mut() {
        for round in 0..10 {
            let m = sub.recv().await;
            assert_eq!(
                m,
                json!({"op":"message","channel":format!("room.{room}"),"data":{"room":room,"round":round}})
            );
        }
    }
    drop(subs);
    drop(publisher);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_clients_get_several_objects_per_frame_and_others_one() {
    const COUNT: u64 = 2000;
    let broker = TestBroker::start(FANOUT_CONFIG).await;
    let mut batched = broker.connect("batch=1").await;
    let mut plain = broker.connect("").await;
    batched.subscribe("burst").await;
    plain.subscribe("burst").await;
    let mut publisher = broker.connect("").await;
    let pad = "x".repeat(64);
    let frames: Vec<String> = (0..COUNT)
        .map(|seq| {
            json!({"op":"publish","channel":"burst","data":{"p":0,"seq":seq,"pad":pad}}).to_string()
        })
        .collect();
    publisher.send_texts(&frames).await;
    publisher.publish("burst", json!({"p":1,"seq":0})).await;

    let batch_reader = tokio::spawn(async move {
        let mut objects = Vec::new();
        let mut most_in_one_frame = 0;
        while objects.len() < COUNT as usize + 1 {
            let frame = batched.recv_text_frame().await;
            let lines: Vec<&str> = frame.split('\n').collect();
            most_in_one_frame = most_in_one_frame.max(lines.len());
            for line in lines {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("batched line is not JSON: {line:?}: {e}"));
                assert!(v.is_object(), "{v}");
                objects.push(v);
            }
        }
        (batched, objects, most_in_one_frame)
    });
    let plain_reader = tokio::spawn(async move {
        let mut objects = Vec::new();
        while objects.len() < COUNT as usize + 1 {
            let frame = plain.recv_text_frame().await;
            assert!(!frame.contains('\n'), "a non-batch client got a batched frame: {frame:.200}");
            objects.push(serde_json::from_str::<Value>(&frame).expect("one JSON object"));
        }
        (plain, objects)
    });
    let (batched, batched_objects, most) = batch_reader.await.expect("batch reader");
    let (plain, plain_objects) = plain_reader.await.expect("plain reader");
    for (who, objects) in [("batched", &batched_objects), ("plain", &plain_objects)] {
        let seqs: Vec<(u64, u64)> = objects
            .iter()
            .map(|m| {
                assert_eq!(m["op"], "message", "{who}: {m}");
                (m["data"]["p"].as_u64().expect("p"), m["data"]["seq"].as_u64().expect("seq"))
            })
            .collect();
        let expected: Vec<(u64, u64)> =
            (0..COUNT).map(|s| (0, s)).chain(std::iter::once((1, 0))).collect();
        assert!(seqs == expected, "{who}: messages lost or out of order");
    }
    assert!(most > 1, "a 2000-message burst never put two objects in one batched frame");
    drop((batched, plain, publisher));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_4001_and_others_keep_receiving() {
    let broker = TestBroker::start(common::open_config!(
        r#"
[server]
outbound_queue = 8

[limits]
publish_rate = 100000
publish_burst = 100000
"#
    ))
    .await;
    let mut slow = broker.connect("channel=flood").await;
    let mut fast = broker.connect("channel=flood").await;
    let mut publisher = broker.connect("").await;
    let pad = "y".repeat(32 * 1024);
    // Lock-step: each message is published only after `fast` has read the previous one, so
    // `fast` never has more than one frame queued, while `slow` (never read here) fills its
    // socket buffers and then its 8-frame queue.
    let mut sent = 0u64;
    let overflowed = loop {
        assert!(sent < 4000, "slow consumer never overflowed after {sent} x 32 KiB");
        publisher.publish("flood", json!({"seq":sent,"pad":pad})).await;
        let m = fast.recv().await;
        assert_eq!(m["data"]["seq"], json!(sent), "fast subscriber lost or reordered a message");
        sent += 1;
        // Watched through this broker's own handle: the process-wide metrics are shared with
        // every other test in this binary.
        if broker.handle.connection(&slow.conn).is_none_or(|c| c.closing) {
            break sent;
        }
    };
    // Read what the slow client was sent: an in-order prefix of the stream, then close 4001.
    let (got, code) = slow.recv_until_close().await;
    assert_eq!(code, 4001, "slow consumer close code");
    assert!((got.len() as u64) < overflowed, "slow consumer got everything yet was closed");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["data"]["seq"], json!(i), "slow consumer's prefix is out of order");
    }
    // Everyone else carries on.
    for seq in overflowed..overflowed + 20 {
        publisher.publish("flood", json!({"seq":seq})).await;
    }
    for seq in overflowed..overflowed + 20 {
        assert_eq!(fast.recv().await["data"]["seq"], json!(seq));
    }
    let mut late = broker.connect("channel=flood").await;
    publisher.publish("flood", json!({"seq":"late"})).await;
    assert_eq!(late.recv().await["data"]["seq"], "late");
    assert_eq!(fast.recv().await["data"]["seq"], "late");
    drop((slow, fast, publisher, late));
    broker.shutdown().await;
}

/// Every `\n`-separated part of a batched frame must be one JSON object, whatever whitespace
/// the publisher put in its `data` (JSON allows raw newlines between tokens).
#[tokio::test]
async fn batched_frames_split_cleanly_when_published_data_has_newlines() {
    let secrets = common::Secrets::new();
    let toml = format!("{FANOUT_CONFIG}\n[auth]\n{}send = \"anyone\"\n", secrets.api_keys("k"));
    let broker = TestBroker::start_with_secrets(&toml, secrets).await;
    let mut batched = broker.connect("batch=1&channel=pretty").await;
    let mut publisher = broker.connect("").await;
    // A pretty-printed publish frame, as `JSON.stringify(frame, null, 2)` would send it.
    publisher
        .send_text("{\n  \"op\": \"publish\",\n  \"channel\": \"pretty\",\n  \"data\": {\n    \"text\": \"hi\",\n    \"n\": [\n      1,\n      2\n    ]\n  },\n  \"id\": 1\n}")
        .await;
    assert_eq!(publisher.recv().await, json!({"op":"ok","id":1}));
    // The original frame shape, and a `send`, with newlines in the payload.
    publisher.send_text("{\"channel\":\"pretty\",\"payload\":[\r\n1,\r\n2]}").await;
    let send = format!(
        "{{\"op\":\"send\",\"to\":\"{}\",\"data\":{{\n\"d\":1\n}},\"id\":2}}",
        batched.conn
    );
    publisher.send_text(&send).await;
    // Wait for the ack: the API publish below must not overtake the send.
    assert_eq!(publisher.recv().await, json!({"op":"ok","id":2}));
    // And the HTTP API with a pretty-printed body, as an application server would post it.
    let body = "{\n  \"channel\": \"pretty\",\n  \"data\": {\n    \"via\": \"api\"\n  }\n}";
    let (status, resp) = common::http(
        broker.addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer k"), ("Content-Type", "application/json")],
        body,
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let expected = [
        json!({"op":"message","channel":"pretty","data":{"text":"hi","n":[1,2]}}),
        json!({"op":"message","channel":"pretty","data":[1,2]}),
        json!({"op":"direct","from":publisher.conn,"data":{"d":1}}),
        json!({"op":"message","channel":"pretty","data":{"via":"api"}}),
    ];
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let frame = batched.recv_text_frame().await;
        for part in frame.split('\n') {
            let v: Value = serde_json::from_str(part).unwrap_or_else(|e| {
                panic!("a batch=1 frame has a part that is not a JSON object: {part:?} ({e}); frame: {frame:?}")
            });
            got.push(v);
        }
    }
    assert_eq!(got, expected);
    drop((batched, publisher));
    broker.shutdown().await;
}
