//! History on the redis and redis-cluster backends, against real redis-server processes:
//! offsets and positions at the subscriber, `since` / last / limit 0 reads, trimming, TTL
//! expiry and a restart without persistence (both start a new epoch), keys in the channel's
//! slot on a cluster, concurrent publishers, and malformed or escaped headers on the wire.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{clustered, standalone};
use switchyard_backend::conformance::{next, unique, Pair};
use switchyard_backend::{Backend, Position, Retention};
use switchyard_redis::testing::{RedisCluster, RedisServer};

/// Long enough that nothing expires during a check that does not mean it to.
const KEEP: Retention = Retention { size: 100, ttl: Duration::from_secs(60) };

/// Runs every backend-neutral check, each on a fresh pair.
async fn run_checks<F, Fut>(pair: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Pair>,
{
    offsets_count_up_and_subscribers_get_the_positions(pair().await).await;
    reads_since_last_and_limit_zero(pair().await).await;
    reading_an_unknown_channel_fixes_the_epoch(pair().await).await;
    only_size_messages_are_kept(pair().await).await;
    expiry_starts_a_new_epoch(pair().await).await;
    concurrent_publishers_leave_no_holes(pair().await).await;
    plain_messages_keep_no_position(pair().await).await;
}

fn text(payload: &Bytes) -> &str {
    std::str::from_utf8(payload).expect("test payloads are UTF-8")
}

async fn offsets_count_up_and_subscribers_get_the_positions(mut p: Pair) {
    let ch = unique("kept");
    p.b.subscribe(&ch).await.expect("subscribe");
    let mut positions = Vec::new();
    for i in 1..=10u64 {
        let payload = Bytes::from(format!("m{i}"));
        let position = p.a.publish_kept(&ch, payload, KEEP).await.expect("publish_kept");
        assert_eq!(position.offset, i, "offsets are 1, 2, 3 … with no holes");
        positions.push(position);
    }
    assert!(positions.iter().all(|p| p.epoch == positions[0].epoch), "one epoch");
    for (i, expected) in positions.iter().enumerate() {
        let m = next(&mut p.b_in, "a kept message").await;
        assert_eq!(&*m.channel, ch);
        assert_eq!(text(&m.payload), format!("m{}", i + 1), "the header is stripped");
        assert_eq!(m.position.as_ref(), Some(expected), "the position publish_kept returned");
    }
}

async fn publish_n(b: &dyn Backend, ch: &str, n: u64, retention: Retention) -> Position {
    let mut last = None;
    for i in 1..=n {
        let payload = Bytes::from(format!("m{i}"));
        last = Some(b.publish_kept(ch, payload, retention).await.expect("publish_kept"));
    }
    last.expect("n > 0")
}

fn offsets(page: &switchyard_backend::Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.offset).collect()
}

async fn reads_since_last_and_limit_zero(p: Pair) {
    let ch = unique("reads");
    let top = publish_n(&*p.a, &ch, 5, KEEP).await;
    let since = p.b.history(&ch, Some(2), 2, KEEP).await.expect("history since");
    assert_eq!(offsets(&since), [3, 4], "the first `limit` after `since`");
    assert_eq!(text(&since.messages[0].payload), "m3");
    assert_eq!((since.top, &since.epoch), (5, &top.epoch));
    let last = p.b.history(&ch, None, 3, KEEP).await.expect("history last");
    assert_eq!(offsets(&last), [3, 4, 5], "the last `limit`, oldest first");
    let all = p.b.history(&ch, Some(0), 100, KEEP).await.expect("history since 0");
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5]);
    let none = p.b.history(&ch, None, 0, KEEP).await.expect("history limit 0");
    assert!(none.messages.is_empty());
    assert_eq!((none.top, &none.epoch), (5, &top.epoch), "limit 0 still tells top and epoch");
    let caught_up = p.b.history(&ch, Some(5), 10, KEEP).await.expect("history at top");
    assert!(caught_up.messages.is_empty());
    let beyond = p.b.history(&ch, Some(u64::MAX), 10, KEEP).await.expect("history beyond");
    assert!(beyond.messages.is_empty());
}

async fn reading_an_unknown_channel_fixes_the_epoch(p: Pair) {
    let ch = unique("fresh");
    let page = p.b.history(&ch, None, 10, KEEP).await.expect("history of nothing");
    assert_eq!(page.top, 0);
    assert!(page.messages.is_empty());
    let again = p.a.history(&ch, Some(0), 10, KEEP).await.expect("second read");
    assert_eq!(again.epoch, page.epoch, "the first read created the stream");
    let first = p.a.publish_kept(&ch, Bytes::from_static(b"x"), KEEP).await.expect("publish");
    assert_eq!(first, Position { offset: 1, epoch: page.epoch.clone() });
}

async fn only_size_messages_are_kept(p: Pair) {
    let ch = unique("trim");
    let small = Retention { size: 3, ..KEEP };
    publish_n(&*p.a, &ch, 7, small).await;
    let last = p.b.history(&ch, None, 10, small).await.expect("history");
    assert_eq!(offsets(&last), [5, 6, 7], "exactly `size` kept");
    let since = p.b.history(&ch, Some(1), 10, small).await.expect("history since trimmed");
    assert_eq!(offsets(&since), [5, 6, 7], "what is left after a trimmed offset");
    assert_eq!(last.top, 7);
}

async fn expiry_starts_a_new_epoch(p: Pair) {
    let ch = unique("ttl");
    let short = Retention { size: 10, ttl: Duration::from_millis(500) };
    let before = publish_n(&*p.a, &ch, 3, short).await;
    assert_eq!(before.offset, 3);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = p.a.publish_kept(&ch, Bytes::from_static(b"x"), short).await.expect("publish");
    assert_eq!(after.offset, 1, "a new life starts at 1");
    assert_ne!(after.epoch, before.epoch, "and says so with a new epoch");
    let page = p.b.history(&ch, Some(0), 10, short).await.expect("history");
    assert_eq!(offsets(&page), [1], "nothing of the old life is left");
    assert_eq!(page.epoch, after.epoch);
}

async fn concurrent_publishers_leave_no_holes(mut p: Pair) {
    const TASKS: u64 = 4;
    const EACH: u64 = 50;
    let ch = unique("race");
    p.b.subscribe(&ch).await.expect("subscribe");
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (backend, ch) = (if t % 2 == 0 { p.a.clone() } else { p.b.clone() }, ch.clone());
        tasks.spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let payload = Bytes::from(format!("t{t}.{i}"));
                got.push(backend.publish_kept(&ch, payload, KEEP).await.expect("publish_kept"));
            }
            got
        });
    }
    let mut returned: Vec<Position> = tasks.join_all().await.into_iter().flatten().collect();
    returned.sort_by_key(|p| p.offset);
    let expected: Vec<u64> = (1..=TASKS * EACH).collect();
    assert_eq!(returned.iter().map(|p| p.offset).collect::<Vec<_>>(), expected, "no holes");
    for want in &returned {
        let m = next(&mut p.b_in, "a racing message").await;
        assert_eq!(m.position.as_ref(), Some(want), "in offset order at the subscriber");
    }
}

async fn plain_messages_keep_no_position(mut p: Pair) {
    let ch = unique("plain");
    p.b.subscribe(&ch).await.expect("subscribe");
    // A plain payload that starts with NUL must not be mistaken for a history message.
    for payload in [&b"\0looks like\n a header"[..], b"\x001:ab\nfake", b"{\"plain\":1}"] {
        p.a.publish(&ch, Bytes::copy_from_slice(payload)).await.expect("publish");
        let m = next(&mut p.b_in, "a plain message").await;
        assert_eq!(&m.payload[..], payload);
        assert_eq!(m.position, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_keeps_history() {
    let server = RedisServer::start();
    assert!(standalone(&server).await.has_history());
    run_checks(|| async { Pair::new(standalone(&server).await, standalone(&server).await) }).await;
    // The shared contract every history backend keeps (the memory backend runs it too).
    switchyard_backend::conformance::run_history(|| async {
        Pair::new(standalone(&server).await, standalone(&server).await)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_backend_keeps_history() {
    let cluster = RedisCluster::start(3, 0);
    assert!(clustered(&cluster).await.has_history());
    run_checks(|| async { Pair::new(clustered(&cluster).await, clustered(&cluster).await) }).await;
    switchyard_backend::conformance::run_history(|| async {
        Pair::new(clustered(&cluster).await, clustered(&cluster).await)
    })
    .await;
}

/// `publish_kept` until it succeeds (after a restart the first ones may find no connection).
async fn publish_kept_until_ok(b: &dyn Backend, ch: &str) -> Position {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match b.publish_kept(ch, Bytes::from_static(b"after"), KEEP).await {
            Ok(position) => return position,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no publish: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn int(value: redis::Value) -> i64 {
    match value {
        redis::Value::Int(n) => n,
        other => panic!("expected an integer reply, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_and_lost_scripts() {
    let mut server = RedisServer::start();
    let (a, b) = (standalone(&server).await, standalone(&server).await);
    let ch = unique("restart");
    let before = publish_n(&*a, &ch, 3, KEEP).await;
    let stream = format!("#switchyard:history:{{{ch}}}:stream");
    let meta = format!("#switchyard:history:{{{ch}}}:meta");
    for key in [&stream, &meta] {
        let ttl = int(server.query(redis::cmd("PTTL").arg(key)));
        assert!(ttl > 50_000 && ttl <= 60_000, "{key} lives `ttl` after the publish: {ttl}");
    }
    assert_eq!(int(server.query(redis::cmd("XLEN").arg(&stream))), 3);

    // SCRIPT FLUSH: the next EVALSHA answers NOSCRIPT and the script is sent whole.
    server.query(redis::cmd("SCRIPT").arg("FLUSH"));
    let next_one = a.publish_kept(&ch, Bytes::from_static(b"x"), KEEP).await.expect("publish");
    assert_eq!(next_one, Position { offset: 4, epoch: before.epoch.clone() });

    server.restart();
    let after = publish_kept_until_ok(&*a, &ch).await;
    assert_eq!(after.offset, 1, "a restart without persistence starts a new life");
    assert_ne!(after.epoch, before.epoch);
    // `b`'s connection broke with the restart; it heals after its first failed command.
    let mut page = b.history(&ch, None, 10, KEEP).await;
    for _ in 0..100 {
        if page.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = b.history(&ch, None, 10, KEEP).await;
    }
    let page = page.expect("history after restart");
    assert_eq!((offsets(&page), page.epoch), (vec![1], after.epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_headers_are_dropped() {
    let server = RedisServer::start();
    let b = standalone(&server).await;
    let mut b_in = b.take_incoming().expect("incoming");
    let ch = unique("malformed");
    b.subscribe(&ch).await.expect("subscribe");
    for bad in [&b"\0no end"[..], b"\0x:e\nbad offset", b"\x007:\nno epoch"] {
        server.query(redis::cmd("PUBLISH").arg(&ch).arg(bad));
    }
    b.publish_kept(&ch, Bytes::from_static(b"good"), KEEP).await.expect("publish_kept");
    let m = next(&mut b_in, "the good message").await;
    assert_eq!((&m.payload[..], m.position.map(|p| p.offset)), (&b"good"[..], Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_live_in_the_channels_slot() {
    let cluster = RedisCluster::start(3, 0);
    let b = clustered(&cluster).await;
    let chans = cluster.channels_on_every_master(&unique("slot"), 4);
    for ch in &chans {
        b.publish_kept(ch, Bytes::from_static(b"x"), KEEP).await.expect("publish_kept");
        let owner = &cluster.masters[cluster.master_index_of(ch)];
        let slot = int(owner.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(ch)));
        for suffix in ["meta", "stream"] {
            let key = format!("#switchyard:history:{{{ch}}}:{suffix}");
            assert_eq!(int(owner.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key))), slot);
            assert_eq!(int(owner.query(redis::cmd("EXISTS").arg(&key))), 1, "{key} on its owner");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_history_follows_a_migrated_slot() {
    let cluster = RedisCluster::start(3, 0);
    let b = clustered(&cluster).await;
    let ch = unique("moved");
    let before = publish_n(&*b, &ch, 2, KEEP).await;
    let to = (cluster.master_index_of(&ch) + 1) % 3;
    // MIGRATE carries the stream and its metadata along: the same life goes on, on the new
    // owner, reached through the MOVED the old one answers.
    cluster.migrate_slot(switchyard_redis::slot::key_slot(ch.as_bytes()), to);
    let after = b.publish_kept(&ch, Bytes::from_static(b"x"), KEEP).await.expect("MOVED followed");
    assert_eq!(after, Position { offset: 3, epoch: before.epoch.clone() });
    let page = b.history(&ch, Some(0), 10, KEEP).await.expect("history after migration");
    assert_eq!(offsets(&page), [1, 2, 3]);
}
