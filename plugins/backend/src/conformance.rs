//! The conformance suite: the behaviour every [`Backend`] must show, written once and run
//! against every implementation (memory, redis, redis-cluster, ...).
//!
//! Each check receives a fresh pair of backend instances that share one substrate, the way two
//! broker nodes share one Redis. A backend's test file calls [`run_all`] (or single checks) with
//! a factory that builds such a pair.
//!
//! Backends with history also run [`run_history`] (the [`history`] section), and backends with
//! presence [`run_presence`] (the [`presence`] section).
//!
//! Absence of a message is never proven by sleeping: each check publishes a later sentinel on
//! the same channel and asserts that the sentinel is the next thing to arrive.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{Backend, Incoming, Message};

pub mod history;
pub mod presence;
pub use history::run_history;
pub use presence::run_presence;

/// How long a check waits for a message that must arrive before it fails.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Two backend instances on one substrate, each with its incoming stream taken.
pub struct Pair {
    pub a: Arc<dyn Backend>,
    pub a_in: Incoming,
    pub b: Arc<dyn Backend>,
    pub b_in: Incoming,
}

impl Pair {
    /// Takes both incoming streams; panics if a backend hands out its stream twice.
    pub fn new(a: Arc<dyn Backend>, b: Arc<dyn Backend>) -> Pair {
        let a_in = a.take_incoming().expect("first take_incoming returns the stream");
        let b_in = b.take_incoming().expect("first take_incoming returns the stream");
        assert!(a.take_incoming().is_none(), "take_incoming must hand out its stream once");
        Pair { a, a_in, b, b_in }
    }
}

/// A unique prefix so checks can share one long-lived substrate (a Redis server) safely.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}.{nanos:x}.{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Receives the next message or panics with `what` after [`RECEIVE_TIMEOUT`].
pub async fn next(incoming: &mut Incoming, what: &str) -> Message {
    match tokio::time::timeout(RECEIVE_TIMEOUT, incoming.recv()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("incoming stream ended while waiting for {what}"),
        Err(_) => panic!("timed out after {RECEIVE_TIMEOUT:?} waiting for {what}"),
    }
}

fn msg(channel: &str, payload: &str) -> Message {
    Message::new(Arc::from(channel), Bytes::copy_from_slice(payload.as_bytes()))
}

/// Runs every check, each on a fresh pair from `factory`.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Pair>,
{
    publish_reaches_subscribers_on_both_nodes(factory().await).await;
    no_delivery_without_subscription(factory().await).await;
    unsubscribe_stops_delivery(factory().await).await;
    subscribe_twice_delivers_once(factory().await).await;
    order_is_kept_per_publisher(factory().await).await;
    many_channels_keep_their_names(factory().await).await;
    both_nodes_subscribed_each_get_one_copy(factory().await).await;
    concurrent_publishers_keep_their_order(factory().await).await;
    payloads_are_binary_safe(factory().await).await;
    ready_when_reachable(factory().await).await;
    publish_counts_the_nodes_it_reached(factory().await).await;
    history::backends_without_history_refuse_it(factory().await).await;
}

/// A message published on either node reaches the subscribed node.
pub async fn publish_reaches_subscribers_on_both_nodes(mut p: Pair) {
    let ch = unique("conf.reach");
    p.a.subscribe(&ch).await.expect("subscribe");
    p.a.publish(&ch, Bytes::from_static(b"from-a")).await.expect("publish on a");
    assert_eq!(next(&mut p.a_in, "own publish").await, msg(&ch, "from-a"));
    p.b.publish(&ch, Bytes::from_static(b"from-b")).await.expect("publish on b");
    assert_eq!(next(&mut p.a_in, "publish from other node").await, msg(&ch, "from-b"));
}

/// Nothing arrives for channels nobody subscribed to.
pub async fn no_delivery_without_subscription(mut p: Pair) {
    let quiet = unique("conf.quiet");
    let ch = unique("conf.loud");
    p.a.publish(&quiet, Bytes::from_static(b"nobody listens")).await.expect("publish");
    p.a.subscribe(&ch).await.expect("subscribe");
    p.b.publish(&ch, Bytes::from_static(b"sentinel")).await.expect("publish");
    assert_eq!(next(&mut p.a_in, "sentinel").await, msg(&ch, "sentinel"));
}

/// After unsubscribe resolves, later publishes are not delivered.
pub async fn unsubscribe_stops_delivery(mut p: Pair) {
    let ch = unique("conf.unsub");
    p.a.subscribe(&ch).await.expect("subscribe");
    p.b.publish(&ch, Bytes::from_static(b"one")).await.expect("publish");
    assert_eq!(next(&mut p.a_in, "first").await, msg(&ch, "one"));
    p.a.unsubscribe(&ch).await.expect("unsubscribe");
    p.b.publish(&ch, Bytes::from_static(b"late")).await.expect("publish");
    p.a.subscribe(&ch).await.expect("subscribe again");
    p.b.publish(&ch, Bytes::from_static(b"after")).await.expect("publish");
    assert_eq!(
        next(&mut p.a_in, "message after resubscribe").await,
        msg(&ch, "after"),
        "a message published while unsubscribed was delivered"
    );
}

/// Subscribing to a channel twice does not duplicate delivery.
pub async fn subscribe_twice_delivers_once(mut p: Pair) {
    let ch = unique("conf.twice");
    p.a.subscribe(&ch).await.expect("subscribe");
    p.a.subscribe(&ch).await.expect("subscribe again");
    p.b.publish(&ch, Bytes::from_static(b"x")).await.expect("publish");
    p.b.publish(&ch, Bytes::from_static(b"y")).await.expect("publish");
    assert_eq!(next(&mut p.a_in, "x").await, msg(&ch, "x"));
    assert_eq!(next(&mut p.a_in, "y").await, msg(&ch, "y"), "x was delivered twice");
}

/// One publisher's messages to one channel arrive in publish order.
pub async fn order_is_kept_per_publisher(mut p: Pair) {
    let ch = unique("conf.order");
    p.a.subscribe(&ch).await.expect("subscribe");
    const N: usize = 2000;
    for i in 0..N {
        p.b.publish(&ch, Bytes::from(i.to_string())).await.expect("publish");
    }
    for i in 0..N {
        let m = next(&mut p.a_in, "ordered message").await;
        assert_eq!(m.payload, Bytes::from(i.to_string()), "message {i} out of order");
    }
}

/// Many channels at once; each message carries the channel it was published to.
pub async fn many_channels_keep_their_names(mut p: Pair) {
    let base = unique("conf.many");
    let channels: Vec<String> = (0..300).map(|i| format!("{base}.{i}")).collect();
    for ch in &channels {
        p.a.subscribe(ch).await.expect("subscribe");
    }
    for ch in &channels {
        p.b.publish(ch, Bytes::from(format!("for {ch}"))).await.expect("publish");
    }
    let mut seen = HashMap::new();
    for _ in &channels {
        let m = next(&mut p.a_in, "message on one of many channels").await;
        assert_eq!(m.payload, Bytes::from(format!("for {}", m.channel)));
        *seen.entry(m.channel.to_string()).or_insert(0) += 1;
    }
    for ch in &channels {
        assert_eq!(seen.get(ch), Some(&1), "channel {ch} got the wrong number of messages");
    }
}

/// When both nodes subscribe, each gets exactly one copy.
pub async fn both_nodes_subscribed_each_get_one_copy(mut p: Pair) {
    let ch = unique("conf.both");
    p.a.subscribe(&ch).await.expect("subscribe a");
    p.b.subscribe(&ch).await.expect("subscribe b");
    p.a.publish(&ch, Bytes::from_static(b"1")).await.expect("publish");
    p.a.publish(&ch, Bytes::from_static(b"2")).await.expect("publish");
    for incoming in [&mut p.a_in, &mut p.b_in] {
        assert_eq!(next(incoming, "copy 1").await, msg(&ch, "1"));
        assert_eq!(next(incoming, "copy 2").await, msg(&ch, "2"));
    }
}

/// Many tasks publishing at once on shared backends: everything arrives, each publisher's
/// messages in its own order.
pub async fn concurrent_publishers_keep_their_order(mut p: Pair) {
    let base = unique("conf.conc");
    const PUBLISHERS: usize = 8;
    const EACH: usize = 250;
    let channels: Vec<String> = (0..4).map(|i| format!("{base}.{i}")).collect();
    for ch in &channels {
        p.a.subscribe(ch).await.expect("subscribe");
    }
    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let backend = if publisher % 2 == 0 { p.a.clone() } else { p.b.clone() };
        let ch = channels[publisher % channels.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                backend
                    .publish(&ch, Bytes::from(format!("{publisher}:{i}")))
                    .await
                    .expect("publish");
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher task");
    }
    let mut last: HashMap<usize, usize> = HashMap::new();
    for _ in 0..PUBLISHERS * EACH {
        let m = next(&mut p.a_in, "concurrent message").await;
        let text = std::str::from_utf8(&m.payload).expect("utf8 payload");
        let (publisher, i) = text.split_once(':').expect("publisher:i");
        let publisher: usize = publisher.parse().expect("publisher number");
        let i: usize = i.parse().expect("sequence number");
        assert_eq!(*m.channel, *channels[publisher % channels.len()]);
        let expected = last.get(&publisher).map_or(0, |l| l + 1);
        assert_eq!(i, expected, "publisher {publisher} out of order");
        last.insert(publisher, i);
    }
    assert!(last.values().all(|&l| l == EACH - 1));
}

/// Payloads are opaque bytes: newlines, quotes, NUL and non-UTF-8 survive.
pub async fn payloads_are_binary_safe(mut p: Pair) {
    let ch = unique("conf.binary");
    p.a.subscribe(&ch).await.expect("subscribe");
    let payload = Bytes::from_static(b"line1\nline2 \"q\" \0 \xff\xfe end");
    p.b.publish(&ch, payload.clone()).await.expect("publish");
    assert_eq!(next(&mut p.a_in, "binary payload").await.payload, payload);
    let big = Bytes::from(vec![b'z'; 256 * 1024]);
    p.b.publish(&ch, big.clone()).await.expect("publish big");
    assert_eq!(next(&mut p.a_in, "256 KiB payload").await.payload, big);
}

/// `publish` reports how many subscribed nodes it reached: none, one, both. A backend that
/// cannot count ([`Backend::counts_nodes`] false) must still tell none (0) from some (1).
pub async fn publish_counts_the_nodes_it_reached(mut p: Pair) {
    let counts = p.a.counts_nodes();
    assert_eq!(counts, p.b.counts_nodes(), "both instances are one kind");
    let some = |n: u64| if counts { n } else { n.min(1) };
    let ch = unique("conf.count");
    assert_eq!(p.a.publish(&ch, Bytes::from_static(b"0")).await.expect("publish"), 0);
    p.a.subscribe(&ch).await.expect("subscribe a");
    assert_eq!(p.b.publish(&ch, Bytes::from_static(b"1")).await.expect("publish"), some(1));
    p.b.subscribe(&ch).await.expect("subscribe b");
    assert_eq!(p.a.publish(&ch, Bytes::from_static(b"2")).await.expect("publish"), some(2));
    assert_eq!(next(&mut p.a_in, "1").await, msg(&ch, "1"));
    p.a.unsubscribe(&ch).await.expect("unsubscribe a");
    assert_eq!(p.a.publish(&ch, Bytes::from_static(b"3")).await.expect("publish"), some(1));
    p.b.unsubscribe(&ch).await.expect("unsubscribe b");
    assert_eq!(p.a.publish(&ch, Bytes::from_static(b"4")).await.expect("publish"), 0);
}

/// A backend that was just built against a live substrate reports ready.
pub async fn ready_when_reachable(p: Pair) {
    p.a.ready().await.expect("a ready");
    p.b.ready().await.expect("b ready");
}
