//! A frozen Redis (SIGSTOP: sockets open, nothing answered) must not make the backends hang:
//! `publish` and `subscribe` answer `Unavailable` within the command timeout, `ready()` turns
//! false within it, and after SIGCONT everything recovers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::conformance::{next, unique};
use switchyard_backend::{Backend, BackendError, Incoming};
use switchyard_redis::testing::{Frozen, RedisCluster, RedisServer};
use switchyard_redis::{
    wait_ready, ConnectionOptions, RedisBackend, RedisClusterBackend, RedisClusterOptions,
    RedisOptions,
};
use tokio::time::Instant;

/// Short, so the test is quick; the assertions allow twice this.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

fn connection(command_timeout: Duration) -> ConnectionOptions {
    ConnectionOptions {
        command_timeout,
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(300),
        ..ConnectionOptions::default()
    }
}

async fn standalone(server: &RedisServer, timeout: Duration) -> Arc<RedisBackend> {
    let options =
        RedisOptions { url: server.url(), connection: connection(timeout), ..Default::default() };
    let b = RedisBackend::connect(options).expect("connect");
    wait_ready(&b, Duration::from_secs(10)).await.expect("ready");
    Arc::new(b)
}

async fn cluster_backend(cluster: &RedisCluster, timeout: Duration) -> Arc<RedisClusterBackend> {
    let mut options = RedisClusterOptions {
        nodes: cluster.urls(),
        connection: connection(timeout),
        ..Default::default()
    };
    options.connection.connect_timeout = Duration::from_millis(500);
    options.topology_refresh_interval = Duration::from_secs(2);
    let b = RedisClusterBackend::connect(options).expect("connect");
    wait_ready(&b, Duration::from_secs(15)).await.expect("ready");
    Arc::new(b)
}

/// How long until `ready()` fails, polled every 5 ms; panics after `limit`.
async fn time_until_not_ready(backend: &dyn Backend, since: Instant, limit: Duration) -> Duration {
    loop {
        if backend.ready().await.is_err() {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "ready() still ok {:?} after the freeze", since.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes on a frozen server; returns how long the answer took, asserting it is
/// `Unavailable`.
async fn frozen_publish(backend: &dyn Backend, channel: &str) -> Duration {
    let started = Instant::now();
    let result = backend.publish(channel, Bytes::from_static(b"into the void")).await;
    let took = started.elapsed();
    assert!(matches!(result, Err(BackendError::Unavailable(_))), "got {result:?}");
    took
}

/// Publishes until a message with `what` arrives. Messages published while Redis was frozen
/// may arrive first: a publish that timed out on our side was still queued in the socket, and
/// `Unavailable` never promised it was not delivered.
async fn delivered_after_thaw(publisher: &dyn Backend, incoming: &mut Incoming, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "delivery on {channel} did not resume after thaw");
        let payload = format!("after thaw #{attempt}");
        let _ = publisher.publish(channel, Bytes::from(payload)).await;
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(300), incoming.recv()).await
        {
            if m.payload.starts_with(b"after thaw") {
                return;
            }
            assert_eq!(m.payload, Bytes::from_static(b"into the void"), "unexpected message");
        }
    }
}

/// The common scenario: `publisher` and `subscriber` talk to the Redis that `freeze` stops;
/// `channel` and `other` live there.
async fn frozen_then_thawed(
    freeze: impl FnOnce() -> switchyard_redis::testing::Frozen,
    publisher: Arc<dyn Backend>,
    subscriber: Arc<dyn Backend>,
    (channel, other): (&str, &str),
) {
    let bound = COMMAND_TIMEOUT * 2;
    let mut incoming = subscriber.take_incoming().expect("incoming");
    subscriber.subscribe(channel).await.expect("subscribe");
    publisher.publish(channel, Bytes::from_static(b"before")).await.expect("publish");
    assert_eq!(next(&mut incoming, "before").await.payload, Bytes::from_static(b"before"));

    let frozen = freeze();
    let since = Instant::now();
    let (took, flipped) = tokio::join!(
        frozen_publish(&*publisher, channel),
        time_until_not_ready(&*publisher, since, bound)
    );
    assert!(took <= bound, "publish answered after {took:?}, command timeout {COMMAND_TIMEOUT:?}");
    assert!(flipped <= bound, "ready() flipped after {flipped:?}");
    // A subscribe on the frozen server answers within the timeout too.
    let started = Instant::now();
    let result = subscriber.subscribe(other).await;
    assert!(matches!(result, Err(BackendError::Unavailable(_))), "got {result:?}");
    assert!(started.elapsed() <= bound, "subscribe answered after {:?}", started.elapsed());
    let flipped = time_until_not_ready(&*subscriber, Instant::now(), bound).await;
    assert!(flipped <= bound, "subscriber's ready() flipped after {flipped:?}");

    frozen.thaw();
    wait_ready(&*publisher, Duration::from_secs(15)).await.expect("publisher ready after thaw");
    wait_ready(&*subscriber, Duration::from_secs(15)).await.expect("subscriber ready after thaw");
    delivered_after_thaw(&*publisher, &mut incoming, channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_answers_within_command_timeout_while_redis_is_frozen() {
    let server = RedisServer::start();
    let (a, b) =
        (standalone(&server, COMMAND_TIMEOUT).await, standalone(&server, COMMAND_TIMEOUT).await);
    let (channel, other) = (unique("frozen"), unique("frozen-sub"));
    frozen_then_thawed(|| server.freeze(), b, a, (&channel, &other)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_answers_within_command_timeout_while_a_master_is_frozen() {
    let cluster = RedisCluster::start(3, 0);
    let (a, b) = (
        cluster_backend(&cluster, COMMAND_TIMEOUT).await,
        cluster_backend(&cluster, COMMAND_TIMEOUT).await,
    );
    let channel = unique("frozen");
    let index = cluster.master_index_of(&channel);
    // A second channel on the same (frozen) master.
    let other = (0..)
        .map(|i| unique(&format!("frozen-sub{i}")))
        .find(|c| cluster.master_index_of(c) == index)
        .expect("some channel lands on every master");
    let master = &cluster.masters[index];
    frozen_then_thawed(|| master.freeze(), b, a, (&channel, &other)).await;
}

/// Not a pass/fail test: prints how long a publish takes to answer, and `ready()` to flip, with
/// the default 3 s command timeout. Run with
/// `cargo test -p switchyard-redis --test sigstop -- --ignored --nocapture measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints figures"]
async fn measure_frozen_redis_latency_at_default_timeout() {
    let timeout = ConnectionOptions::default().command_timeout;
    let server = RedisServer::start();
    let b = standalone(&server, timeout).await;
    measure_frozen("standalone", &*b, server.freeze(), timeout).await;

    let cluster = RedisCluster::start(3, 0);
    let b = cluster_backend(&cluster, timeout).await;
    let frozen = cluster.masters[cluster.master_index_of("measure")].freeze();
    measure_frozen("cluster", &*b, frozen, timeout).await;
}

/// Prints how long a publish takes to be answered, and `ready()` to flip, while `frozen` holds.
async fn measure_frozen(what: &str, b: &dyn Backend, frozen: Frozen, timeout: Duration) {
    let since = Instant::now();
    let (took, flipped) = tokio::join!(
        async {
            let started = Instant::now();
            let result = b.publish("measure", Bytes::from_static(b"x")).await;
            (started.elapsed(), result)
        },
        time_until_not_ready(b, since, Duration::from_secs(30))
    );
    println!("{what}: publish answered after {:?} ({:?}); ready() flipped after {flipped:?} (command_timeout {timeout:?})", took.0, took.1);
    frozen.thaw();
}
