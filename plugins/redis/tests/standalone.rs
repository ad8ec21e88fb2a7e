//! The redis (standalone) backend on a real redis-server: the conformance suite and fault
//! tests (subscriber connections killed, Redis restarted, Redis down at start).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::conformance::{self, next, unique, Pair};
use switchyard_backend::{Backend, BackendError};
use switchyard_redis::testing::RedisServer;
use switchyard_redis::{wait_ready, RedisBackend, RedisOptions};

mod common;

/// How long delivery may take to resume after a fault.
const RESUME_WITHIN: Duration = Duration::from_secs(20);

fn options(url: String) -> RedisOptions {
    let mut o = RedisOptions { url, ..RedisOptions::default() };
    // Fast reconnects and failure detection keep the fault tests short.
    o.connection.reconnect_min = Duration::from_millis(20);
    o.connection.reconnect_max = Duration::from_millis(300);
    o.connection.command_timeout = Duration::from_secs(2);
    o
}

async fn backend(server: &RedisServer) -> Arc<RedisBackend> {
    let b = RedisBackend::connect(options(server.url())).expect("connect");
    wait_ready(&b, Duration::from_secs(10)).await.expect("ready");
    Arc::new(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_passes_the_conformance_suite() {
    let server = RedisServer::start();
    conformance::run_all(|| async {
        let a: Arc<dyn Backend> = backend(&server).await;
        let b: Arc<dyn Backend> = backend(&server).await;
        Pair::new(a, b)
    })
    .await;
}

/// Publishes from several callers that overlap leave in shared batches, so Redis reads them in
/// far fewer reads than there are publishes; one caller publishing message after message (each
/// after the last one's answer) is never held back by the batch delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_publishes_share_reads_and_a_lone_publisher_is_not_held_back() {
    let server = RedisServer::start();
    let mut o = options(server.url());
    o.connection.batch_delay = Duration::from_millis(20);
    let b = RedisBackend::connect(o).expect("connect");
    wait_ready(&b, Duration::from_secs(10)).await.expect("ready");
    let b = Arc::new(b);
    let channel = unique("batched");

    // 10 callers, each publishing every 2 ms for 100 ms: alone, nearly every publish would be
    // one read; batched every 20 ms, a few dozen reads at most carry all of them.
    let before = server.reads_processed();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..10 {
        let (b, channel) = (b.clone(), channel.clone());
        callers.spawn(async move {
            for n in 0..50 {
                let payload = Bytes::from(format!("{caller}:{n}"));
                b.publish(&channel, payload).await.expect("publish");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.expect("caller");
    }
    let reads = server.reads_processed() - before;
    assert!(reads <= 100, "500 overlapping publishes took {reads} Redis reads");

    // Let the connection go idle, then publish one after another: each leaves at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    for n in 0..20 {
        b.publish(&channel, Bytes::from(format!("lone:{n}"))).await.expect("publish");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "20 publishes one after another took {took:?}: held back by the 20 ms batch delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_subscription_per_channel_per_instance() {
    let server = RedisServer::start();
    let (a, b) = (backend(&server).await, backend(&server).await);
    let channels: Vec<String> = (0..20).map(|i| unique(&format!("numsub{i}"))).collect();
    for ch in &channels {
        for _ in 0..5 {
            a.subscribe(ch).await.expect("subscribe a");
            b.subscribe(ch).await.expect("subscribe b");
        }
    }
    for ch in &channels {
        assert_eq!(server.numsub(ch), 2, "one subscription per instance for {ch}");
    }
    for ch in &channels {
        a.unsubscribe(ch).await.expect("unsubscribe");
        assert_eq!(server.numsub(ch), 1, "{ch} after a unsubscribed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_client_kill() {
    let server = RedisServer::start();
    let (a, b) = (backend(&server).await, backend(&server).await);
    let mut a_in = a.take_incoming().expect("incoming");
    let channels: Vec<String> = (0..10).map(|i| unique(&format!("kill{i}"))).collect();
    for ch in &channels {
        a.subscribe(ch).await.expect("subscribe");
    }
    let killed = server.kill_pubsub_clients();
    // Only connections in pub/sub mode count: the 4 of `a` that hold subscriptions.
    assert!((1..=4).contains(&killed), "expected the subscriber connections of a, killed {killed}");
    wait_ready(&*a, Duration::from_secs(10)).await.expect("ready again");
    for ch in &channels {
        common::publish_until_delivered(&*b, &mut a_in, ch, "after CLIENT KILL", RESUME_WITHIN)
            .await;
    }
    for ch in &channels {
        assert_eq!(server.numsub(ch), 1, "exactly one re-subscription of {ch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_redis_restart() {
    let mut server = RedisServer::start();
    let (a, b) = (backend(&server).await, backend(&server).await);
    let mut a_in = a.take_incoming().expect("incoming");
    let ch = unique("restart");
    a.subscribe(&ch).await.expect("subscribe");
    b.publish(&ch, Bytes::from_static(b"before")).await.expect("publish");
    assert_eq!(next(&mut a_in, "before").await.payload, Bytes::from_static(b"before"));

    server.kill();
    // While Redis is down: not ready, and publish answers Unavailable promptly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.ready().await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "ready() stayed ok with Redis down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let result = b.publish(&ch, Bytes::from_static(b"while down")).await;
        assert!(matches!(result, Err(BackendError::Unavailable(_))), "got {result:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "publish took {:?}", started.elapsed());
    }

    server.restart();
    wait_ready(&*a, Duration::from_secs(10)).await.expect("ready after restart");
    wait_ready(&*b, Duration::from_secs(10)).await.expect("b ready after restart");
    common::publish_until_delivered(&*b, &mut a_in, &ch, "after restart", RESUME_WITHIN).await;
    b.publish(&ch, Bytes::from_static(b"steady")).await.expect("publish after restart");
    assert_eq!(next(&mut a_in, "steady").await.payload, Bytes::from_static(b"steady"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_degraded_when_redis_is_down_and_heals() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let a = RedisBackend::connect(options(url.clone())).expect("starts without redis");
    let mut a_in = a.take_incoming().expect("incoming");
    assert!(a.ready().await.is_err());
    let r = a.publish("x", Bytes::from_static(b"x")).await;
    assert!(matches!(r, Err(BackendError::Unavailable(_))), "got {r:?}");
    server.restart();
    wait_ready(&a, Duration::from_secs(10)).await.expect("heals");
    let ch = unique("degraded");
    a.subscribe(&ch).await.expect("subscribe");
    a.publish(&ch, Bytes::from_static(b"hello")).await.expect("publish");
    assert_eq!(next(&mut a_in, "hello").await.payload, Bytes::from_static(b"hello"));
}

/// A hub that takes messages slowly (the incoming queue full for many ping intervals) is our
/// problem, not Redis's: the subscriber must not declare Redis dead, reconnect and lose the
/// messages queued in the socket meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hub_does_not_make_redis_look_dead() {
    let server = RedisServer::start();
    let mut o = options(server.url());
    o.subscriber_connections = 1;
    o.connection.ping_interval = Duration::from_millis(100);
    o.connection.incoming_capacity = 1;
    let a = RedisBackend::connect(o).expect("connect");
    wait_ready(&a, Duration::from_secs(10)).await.expect("ready");
    let mut a_in = a.take_incoming().expect("incoming");
    let b = backend(&server).await;
    let ch = unique("slowhub");
    a.subscribe(&ch).await.expect("subscribe");
    for i in 0..8 {
        b.publish(&ch, Bytes::from(format!("m{i}"))).await.expect("publish");
    }
    // One message per three ping intervals: the subscriber is blocked on the hub far longer
    // than the two intervals after which a silent Redis counts as dead.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(a.ready().await.is_ok(), "a slow hub made the backend not ready");
        let m = next(&mut a_in, "slow hub").await;
        assert_eq!(m.payload, Bytes::from(format!("m{i}")), "message {i} lost or reordered");
    }
    assert_eq!(server.numsub(&ch), 1);
}

#[test]
fn invalid_urls_are_rejected_clearly() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    for url in ["localhost:6379", "http://h:1", "redis://h:port"] {
        match RedisBackend::connect(options(url.into())) {
            Err(BackendError::Invalid(msg)) => assert!(msg.contains(url), "{msg}"),
            Err(e) => panic!("{url}: wrong error {e}"),
            Ok(_) => panic!("{url} accepted"),
        }
    }
}
