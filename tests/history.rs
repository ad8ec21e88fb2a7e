//! History and recovery over real sockets on the memory backend: positions on every message,
//! recovery after a disconnect (on the same node and on another), `recovered: false` when the
//! epoch changed, the range was trimmed or too much was missed, publishes racing a recovery,
//! `history` paging, and the HTTP API. The Redis backends run the same contract in
//! plugins/redis/tests and tests/history_redis.rs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::positions::{epoch, offset, subscribe};
use common::{Client, Secrets, TestBroker};
use serde_json::{json, Value};
use switchyard_memory::{MemoryBackend, MemoryBus};

/// `chat.*` keeps 20 messages and lets 10 be recovered; `live.*` keeps none.
const ROUTES: &str = r#"
[[routes]]
match = "chat.{room}"
channel = "h:chat:{room}"
subscribe = "anyone"
publish = "anyone"
history_size = 20
history_ttl_s = 60
recovery_max = 10

[[routes]]
match = "live.{room}"
subscribe = "anyone"
publish = "anyone"
"#;

fn config(node: &str, extra: &str) -> String {
    format!("[node]\nid = \"{node}\"\n{extra}\n[backends.bus]\nkind = \"memory\"\n{ROUTES}")
}

async fn broker() -> TestBroker {
    TestBroker::start(&config("n1", "")).await
}

/// Publishes `data` and returns the ack (with its position).
async fn publish(c: &mut Client, channel: &str, data: Value) -> Value {
    let ack = c.request(json!({"op":"publish","channel":channel,"data":data})).await;
    assert_eq!(ack["op"], "ok", "publish answered {ack}");
    ack
}

/// Reads `n` messages and returns their (offset, data["n"]).
async fn messages(c: &mut Client, n: usize) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = c.recv().await;
        assert_eq!(m["op"], "message", "expected a message, got {m}");
        got.push((offset(&m), m["data"]["n"].as_u64().unwrap_or(u64::MAX)));
    }
    got
}

#[tokio::test]
async fn messages_and_acks_carry_their_position() {
    let broker = broker().await;
    let mut sub = broker.connect("").await;
    let ok = subscribe(&mut sub, "chat.1", None).await;
    assert_eq!(offset(&ok), 0, "a new stream starts at 0: {ok}");
    let mut publisher = broker.connect("").await;
    let first = publish(&mut publisher, "chat.1", json!({"n": 1})).await;
    let second = publish(&mut publisher, "chat.1", json!({"n": 2})).await;
    assert_eq!((offset(&first), offset(&second)), (1, 2));
    assert_eq!(epoch(&first), epoch(&ok), "one epoch");
    for expected in 1..=2 {
        let m = sub.recv().await;
        assert_eq!((m["op"].as_str(), offset(&m)), (Some("message"), expected), "{m}");
        assert_eq!(m["channel"], "chat.1");
        assert_eq!(epoch(&m), epoch(&ok));
        assert_eq!(m["data"]["n"], expected);
    }
    // A channel without history answers as before.
    let plain = publisher.request(json!({"op":"publish","channel":"live.1","data":1})).await;
    assert_eq!(plain.get("offset"), None, "{plain}");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_client_that_reconnects_gets_exactly_what_it_missed_then_live_messages() {
    let broker = broker().await;
    let mut publisher = broker.connect("").await;
    let mut away = broker.connect("").await;
    let ok = subscribe(&mut away, "chat.r", None).await;
    publish(&mut publisher, "chat.r", json!({"n": 1})).await;
    assert_eq!(messages(&mut away, 1).await, vec![(1, 1)]);
    away.close().await;
    for n in 2..=6 {
        publish(&mut publisher, "chat.r", json!({"n": n})).await;
    }
    let mut back = broker.connect("").await;
    let ok2 = subscribe(&mut back, "chat.r", Some((1, &epoch(&ok)))).await;
    assert_eq!(ok2["recovered"], true, "{ok2}");
    assert_eq!(offset(&ok2), 6, "position when the subscription took effect: {ok2}");
    assert_eq!(messages(&mut back, 5).await, (2..=6).map(|n| (n, n)).collect::<Vec<_>>());
    publish(&mut publisher, "chat.r", json!({"n": 7})).await;
    assert_eq!(messages(&mut back, 1).await, vec![(7, 7)], "live after the replay");
    broker.shutdown().await;
}

#[tokio::test]
async fn nothing_is_replayed_when_it_cannot_all_be() {
    let broker = broker().await;
    let mut publisher = broker.connect("").await;
    let start = publish(&mut publisher, "chat.f", json!({"n": 1})).await;
    let e = epoch(&start);
    // Another epoch: recovered false, live messages follow.
    let mut c = broker.connect("").await;
    let ok = subscribe(&mut c, "chat.f", Some((1, "not-this-epoch"))).await;
    assert_eq!(ok["recovered"], false, "{ok}");
    publish(&mut publisher, "chat.f", json!({"n": 2})).await;
    assert_eq!(messages(&mut c, 1).await, vec![(2, 2)], "no replay, only live");
    // More than recovery_max (10) missed.
    for n in 3..=14 {
        publish(&mut publisher, "chat.f", json!({"n": n})).await;
    }
    let mut c2 = broker.connect("").await;
    let ok = subscribe(&mut c2, "chat.f", Some((2, &e))).await;
    assert_eq!((ok["recovered"].as_bool(), offset(&ok)), (Some(false), 14), "{ok}");
    // Within recovery_max and all kept: recovered.
    for n in 15..=30 {
        publish(&mut publisher, "chat.f", json!({"n": n})).await;
    }
    let mut c3 = broker.connect("").await;
    let ok = subscribe(&mut c3, "chat.f", Some((25, &e))).await;
    assert_eq!(ok["recovered"], true, "5 missed, all kept: {ok}");
    assert_eq!(messages(&mut c3, 5).await, (26..=30).map(|n| (n, n)).collect::<Vec<_>>());
    broker.shutdown().await;
}

#[tokio::test]
async fn a_trimmed_range_is_not_recovered() {
    // 5 kept, up to 10 recoverable: 8 missed is within recovery_max, but 3 of them are gone.
    let small = config("n1", "").replace("history_size = 20", "history_size = 5");
    let broker = TestBroker::start(&small).await;
    let mut publisher = broker.connect("").await;
    let first = publish(&mut publisher, "chat.t", json!({"n": 1})).await;
    for n in 2..=10 {
        publish(&mut publisher, "chat.t", json!({"n": n})).await;
    }
    let mut c = broker.connect("").await;
    let ok = subscribe(&mut c, "chat.t", Some((2, &epoch(&first)))).await;
    assert_eq!((ok["recovered"].as_bool(), offset(&ok)), (Some(false), 10), "{ok}");
    publish(&mut publisher, "chat.t", json!({"n": 11})).await;
    assert_eq!(messages(&mut c, 1).await, vec![(11, 11)], "no partial replay, only live");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_racing_a_recovery_leave_no_gap_and_no_duplicate() {
    let broker = broker().await;
    let mut first = broker.connect("").await;
    let ok = subscribe(&mut first, "chat.race", None).await;
    let e = epoch(&ok);
    first.close().await;
    let mut publisher = broker.connect("").await;
    for n in 1..=5 {
        publish(&mut publisher, "chat.race", json!({"n": n})).await;
    }
    // Keep publishing while the client recovers.
    let url = broker.url("/ws");
    let racing = tokio::spawn(async move {
        let mut p = Client::connect(&url).await;
        for n in 6..=200 {
            publish(&mut p, "chat.race", json!({"n": n})).await;
        }
    });
    let mut back = broker.connect("").await;
    let ok = subscribe(&mut back, "chat.race", Some((0, &e))).await;
    // recovery_max is 10: this may be too late to recover once the racer got ahead; either
    // way, what arrives must be gapless from where it starts.
    let recovered = ok["recovered"] == true;
    racing.await.expect("racing publisher");
    let start = if recovered { 1 } else { offset(&ok) + 1 };
    let got = messages(&mut back, (200 - start + 1) as usize).await;
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (start..=200).collect::<Vec<_>>(), "recovered={recovered}: {ok}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_works_on_another_node() {
    let bus = MemoryBus::new();
    let node = |id: &str| common::config(&config(id, ""));
    let a = TestBroker::with_backends(node("a"), vec![Arc::new(MemoryBackend::on_bus(&bus))]).await;
    let b = TestBroker::with_backends(node("b"), vec![Arc::new(MemoryBackend::on_bus(&bus))]).await;
    let mut c = a.connect("").await;
    let ok = subscribe(&mut c, "chat.x", None).await;
    c.close().await;
    let mut publisher = a.connect("").await;
    for n in 1..=3 {
        publish(&mut publisher, "chat.x", json!({"n": n})).await;
    }
    // Back on the other node, with the position given on connect.
    let query = format!("channel=chat.x&since=chat.x:0:{}", epoch(&ok));
    let mut back = b.connect(&query).await;
    let ok = back.recv().await;
    assert_eq!((ok["op"].as_str(), ok["recovered"].as_bool()), (Some("ok"), Some(true)), "{ok}");
    assert_eq!(messages(&mut back, 3).await, vec![(1, 1), (2, 2), (3, 3)]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn history_pages_and_refusals() {
    let broker = broker().await;
    let mut c = broker.connect("").await;
    for n in 1..=25 {
        publish(&mut c, "chat.h", json!({"n": n})).await;
    }
    let page = |limit: u64, since: Option<u64>| {
        let mut f = json!({"op":"history","channel":"chat.h","limit":limit,"id":"h"});
        if let Some(s) = since {
            f["since"] = json!(s);
        }
        f
    };
    c.send_json(page(3, None)).await;
    let latest = c.recv().await;
    assert_eq!((latest["op"].as_str(), offset(&latest)), (Some("history"), 25), "{latest}");
    let offsets: Vec<u64> =
        latest["messages"].as_array().expect("messages").iter().map(offset).collect();
    assert_eq!(offsets, vec![23, 24, 25], "the latest, oldest first");
    assert_eq!(latest["messages"][0]["data"], json!({"n": 23}));
    c.send_json(page(2, Some(10))).await;
    let after = c.recv().await;
    let offsets: Vec<u64> =
        after["messages"].as_array().expect("messages").iter().map(offset).collect();
    assert_eq!(offsets, vec![11, 12], "the first after `since`");
    c.error(json!({"op":"history","channel":"chat.h","limit":21}), "bad_request").await;
    c.error(json!({"op":"history","channel":"live.h","limit":1}), "bad_request").await;
    c.error(
        json!({"op":"subscribe","channel":"live.h","since":{"offset":1,"epoch":"e"}}),
        "bad_request",
    )
    .await;
    c.error(json!({"op":"history","channel":"chat.h"}), "bad_request").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn the_http_api_publishes_with_positions_and_reads_history() {
    let secrets = Secrets::new();
    let keys = secrets.api_keys("hist-key");
    let broker =
        TestBroker::start_with_secrets(&config("n1", &format!("[auth]\n{keys}\n")), secrets).await;
    let auth = [("authorization", "Bearer hist-key")];
    let body = json!({"channel":"chat.api","data":{"n":1}}).to_string();
    let (status, answer) = common::http(broker.addr, "POST", "/api/publish", &auth, &body).await;
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!((status, answer["status"].as_str(), offset(&answer)), (200, Some("ok"), 1));
    let body = json!({"channel":"chat.api","limit":5}).to_string();
    let (status, page) = common::http(broker.addr, "POST", "/api/history", &auth, &body).await;
    let page: Value = serde_json::from_str(&page).expect("json");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"], json!([{"offset":1,"data":{"n":1}}]), "{page}");
    assert_eq!(epoch(&page), epoch(&answer));
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_history_starts_a_new_epoch() {
    let broker =
        TestBroker::start(&config("n1", "").replace("history_ttl_s = 60", "history_ttl_s = 1"))
            .await;
    let mut sub = broker.connect("").await;
    subscribe(&mut sub, "chat.ttl", None).await;
    let mut c = broker.connect("").await;
    let first = publish(&mut c, "chat.ttl", json!({"n": 1})).await;
    assert_eq!(messages(&mut sub, 1).await, vec![(1, 1)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = publish(&mut c, "chat.ttl", json!({"n": 2})).await;
    assert_eq!(offset(&second), 1, "a new stream: {second}");
    assert_ne!(epoch(&second), epoch(&first), "a new epoch");
    // The node passes the new epoch on from its start; it is not a gap to close over.
    let m = sub.recv().await;
    assert_eq!((offset(&m), epoch(&m)), (1, epoch(&second)), "{m}");
    let ok = subscribe(&mut c, "chat.ttl", Some((1, &epoch(&first)))).await;
    assert_eq!(ok["recovered"], false, "the old epoch cannot be recovered: {ok}");
    broker.shutdown().await;
}

/// A memory backend whose live stream loses chosen offsets, as a Redis connection drop would;
/// its history keeps them.
struct Lossy {
    inner: MemoryBackend,
    incoming: std::sync::Mutex<Option<switchyard_backend::Incoming>>,
    /// How long a history read from an offset (a heal's, not a plain subscribe's) takes.
    read_delay: Duration,
}

impl Lossy {
    fn slow(lose: &'static [u64], read_delay: Duration) -> Lossy {
        Lossy { read_delay, ..Lossy::new(lose) }
    }

    fn new(lose: &'static [u64]) -> Lossy {
        let inner = MemoryBackend::new();
        let (tx, incoming) = switchyard_backend::Incoming::channel(1024);
        let mut live = switchyard_backend::Backend::take_incoming(&inner).expect("stream");
        tokio::spawn(async move {
            while let Some(m) = live.recv().await {
                let lost = m.position.as_ref().is_some_and(|p| lose.contains(&p.offset));
                if !lost && tx.send(m).await.is_err() {
                    return;
                }
            }
        });
        Lossy { inner, incoming: std::sync::Mutex::new(Some(incoming)), read_delay: Duration::ZERO }
    }
}

#[async_trait::async_trait]
impl switchyard_backend::Backend for Lossy {
    fn kind(&self) -> &'static str {
        "lossy"
    }
    async fn publish(
        &self,
        c: &str,
        p: bytes::Bytes,
    ) -> Result<u64, switchyard_backend::BackendError> {
        self.inner.publish(c, p).await
    }
    async fn subscribe(&self, c: &str) -> Result<(), switchyard_backend::BackendError> {
        self.inner.subscribe(c).await
    }
    async fn unsubscribe(&self, c: &str) -> Result<(), switchyard_backend::BackendError> {
        self.inner.unsubscribe(c).await
    }
    fn take_incoming(&self) -> Option<switchyard_backend::Incoming> {
        self.incoming.lock().ok()?.take()
    }
    async fn ready(&self) -> Result<(), switchyard_backend::BackendError> {
        Ok(())
    }
    fn has_history(&self) -> bool {
        true
    }
    async fn publish_kept(
        &self,
        c: &str,
        p: bytes::Bytes,
        r: switchyard_backend::Retention,
    ) -> Result<switchyard_backend::Position, switchyard_backend::BackendError> {
        self.inner.publish_kept(c, p, r).await
    }
    async fn history(
        &self,
        c: &str,
        since: Option<u64>,
        limit: usize,
        r: switchyard_backend::Retention,
    ) -> Result<switchyard_backend::Page, switchyard_backend::BackendError> {
        if since.is_some() {
            tokio::time::sleep(self.read_delay).await;
        }
        self.inner.history(c, since, limit, r).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_heals_messages_its_live_stream_lost() {
    let broker = TestBroker::with_backends(
        common::config(&config("n1", "")),
        vec![Arc::new(Lossy::new(&[3, 4, 7]))],
    )
    .await;
    let mut sub = broker.connect("").await;
    subscribe(&mut sub, "chat.heal", None).await;
    let mut publisher = broker.connect("").await;
    for n in 1..=8 {
        publish(&mut publisher, "chat.heal", json!({"n": n})).await;
    }
    assert_eq!(messages(&mut sub, 8).await, (1..=8).map(|n| (n, n)).collect::<Vec<_>>());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_history_no_longer_holds_closes_with_4004() {
    let small = config("n1", "").replace("history_size = 20", "history_size = 2");
    let broker = TestBroker::with_backends(
        common::config(&small),
        vec![Arc::new(Lossy::new(&[2, 3, 4, 5]))],
    )
    .await;
    let mut sub = broker.connect("").await;
    subscribe(&mut sub, "chat.lost", None).await;
    let mut publisher = broker.connect("").await;
    for n in 1..=6 {
        publish(&mut publisher, "chat.lost", json!({"n": n})).await;
    }
    assert_eq!(messages(&mut sub, 1).await, vec![(1, 1)]);
    assert_eq!(sub.expect_close().await, 4004, "told to recover rather than shown a gap");
    broker.shutdown().await;
}

/// `switchyard_history_backend_reads_total` of a broker process of its own.
async fn backend_reads(broker: &common::ServedBroker) -> f64 {
    common::sum_samples(&broker.metrics().await, "switchyard_history_backend_reads_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_shares_history_reads() {
    const CLIENTS: usize = 500;
    let broker = common::ServedBroker::start(&config("storm", "")).await;
    let url = format!("ws://{}/ws", broker.addr);
    let mut publisher = Client::connect(&url).await;
    let first = publish(&mut publisher, "chat.storm", json!({"n": 1})).await;
    for n in 2..=6 {
        publish(&mut publisher, "chat.storm", json!({"n": n})).await;
    }
    let before = backend_reads(&broker).await;
    // Every client was at offset 1 and comes back at once.
    let query = format!("{url}?channel=chat.storm&since=chat.storm:1:{}", epoch(&first));
    let storm: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let query = query.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&query).await;
                let ok = c.recv().await;
                assert_eq!(ok["recovered"], true, "{ok}");
                assert_eq!(messages(&mut c, 5).await, (2..=6).map(|n| (n, n)).collect::<Vec<_>>());
                c
            })
        })
        .collect();
    let mut clients = Vec::new();
    for c in storm {
        clients.push(c.await.expect("a storm client"));
    }
    let reads = backend_reads(&broker).await - before;
    assert!(reads <= 20.0, "{CLIENTS} recovering clients cost {reads} backend reads");
    drop(clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_slow_heal_holds_back_is_bounded() {
    // The heal's read never comes back in time; a publisher keeps going with 60 KB messages.
    let broker = TestBroker::with_backends(
        common::config(&config("n1", "")),
        vec![Arc::new(Lossy::slow(&[2], Duration::from_secs(60)))],
    )
    .await;
    let mut sub = broker.connect("").await;
    subscribe(&mut sub, "chat.held", None).await;
    let mut publisher = broker.connect("").await;
    let pad = "h".repeat(60_000);
    // 16 MiB held back is about 280 of them; the heal is given up before 400.
    for n in 1..=400 {
        publish(&mut publisher, "chat.held", json!({"n": n, "pad": pad})).await;
    }
    let m = sub.recv().await;
    assert_eq!(offset(&m), 1, "{}", m["op"]);
    assert_eq!(sub.expect_close().await, 4004, "closed to recover rather than held without bound");
    broker.shutdown().await;
}

#[tokio::test]
async fn hostile_positions_are_answered_not_obeyed() {
    let broker = broker().await;
    let mut c = broker.connect("").await;
    let first = publish(&mut c, "chat.x", json!({"n": 1})).await;
    // An offset past anything kept, in the right epoch and in a made-up one.
    let ok = subscribe(&mut c, "chat.x", Some((u64::MAX, &epoch(&first)))).await;
    assert_eq!(ok["recovered"], false, "{ok}");
    let mut other = broker.connect("").await;
    let long_epoch = "e".repeat(10_000);
    let ok = subscribe(&mut other, "chat.x", Some((u64::MAX, &long_epoch))).await;
    assert_eq!(ok["recovered"], false, "{ok}");
    c.send_json(json!({"op":"history","channel":"chat.x","limit":5,"since":u64::MAX,"id":1})).await;
    let page = c.recv().await;
    assert_eq!(page["messages"], json!([]), "nothing after the end: {page}");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_history_answer_is_bounded_by_the_outbound_queue() {
    // 20 kept messages of 10 KB do not fit a 64 KiB outbound queue: the reader is closed as a
    // slow consumer rather than the broker holding the answer for it.
    let small = config("n1", "[server]\noutbound_queue_bytes = 65536\n");
    let broker = TestBroker::start(&small).await;
    let mut publisher = broker.connect("").await;
    let pad = "p".repeat(10_000);
    for n in 1..=20 {
        publish(&mut publisher, "chat.big", json!({"n": n, "pad": pad})).await;
    }
    let mut reader = broker.connect("").await;
    reader.send_json(json!({"op":"history","channel":"chat.big","limit":20,"id":1})).await;
    assert_eq!(reader.expect_close().await, 4001);
    // A page that fits is answered.
    publisher.send_json(json!({"op":"history","channel":"chat.big","limit":3,"id":2})).await;
    let page = publisher.recv().await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(3), "{}", page["op"]);
    broker.shutdown().await;
}
