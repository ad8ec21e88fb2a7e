//! Presence on the redis and redis-cluster backends, against real redis-server processes: the
//! shared conformance suite, the keys in the channel's slot on a cluster, keys that expire with
//! the last lease and vanish with the last member, a restart without persistence, and a slot
//! migration.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{clustered, standalone};
use switchyard_backend::conformance::{unique, Pair};
use switchyard_backend::Member;
use switchyard_redis::testing::{RedisCluster, RedisServer};

const LONG: Duration = Duration::from_secs(60);

fn int(value: redis::Value) -> i64 {
    match value {
        redis::Value::Int(n) => n,
        other => panic!("expected an integer reply, got {other:?}"),
    }
}

fn keys(ch: &str) -> Vec<String> {
    ["members", "leases", "users", "counts"]
        .iter()
        .map(|k| format!("#switchyard:presence:{{{ch}}}:{k}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_keeps_presence() {
    let server = RedisServer::start();
    switchyard_backend::conformance::run_presence(|| async {
        Pair::new(standalone(&server).await, standalone(&server).await)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_backend_keeps_presence() {
    let cluster = RedisCluster::start(3, 0);
    switchyard_backend::conformance::run_presence(|| async {
        Pair::new(clustered(&cluster).await, clustered(&cluster).await)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_with_the_last_lease_and_go_with_the_last_member() {
    let server = RedisServer::start();
    let b = standalone(&server).await;
    let ch = unique("keys");
    let alice = Member::new("n:1", Some("alice"));
    b.presence_update(&ch, &[alice], &[], Duration::from_secs(30)).await.expect("update");
    for key in keys(&ch) {
        let ttl = int(server.query(redis::cmd("PTTL").arg(&key)));
        assert!(ttl > 25_000 && ttl <= 30_000, "{key} lives one lease: {ttl}");
    }
    b.presence_update(&ch, &[], &[Arc::from("n:1")], LONG).await.expect("leave");
    for key in keys(&ch) {
        assert_eq!(int(server.query(redis::cmd("EXISTS").arg(&key))), 0, "{key} is gone");
    }
}

/// Leaves do not extend the keys: they live a lease from the last join or renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_does_not_extend_the_keys() {
    let server = RedisServer::start();
    let b = standalone(&server).await;
    let ch = unique("leave-ttl");
    let members = [Member::new("n:1", Some("alice")), Member::new("n:2", Some("bob"))];
    b.presence_update(&ch, &members, &[], Duration::from_secs(30)).await.expect("update");
    let changes = b.presence_update(&ch, &[], &[Arc::from("n:2")], LONG).await.expect("leave");
    assert_eq!(changes.left, [members[1].clone()]);
    for key in keys(&ch) {
        let ttl = int(server.query(redis::cmd("PTTL").arg(&key)));
        assert!(ttl > 25_000 && ttl <= 30_000, "{key} still lives one lease: {ttl}");
    }
    let roster = b.presence_read(&ch, None, 10).await.expect("read");
    assert_eq!((roster.connections, roster.users), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_is_healed_by_the_next_renewal() {
    let mut server = RedisServer::start();
    let b = standalone(&server).await;
    let ch = unique("restart");
    let members = [Member::new("n:1", Some("alice")), Member::new("n:2", None)];
    b.presence_update(&ch, &members, &[], LONG).await.expect("update");
    server.restart();
    // The renewal a node sends every third of a lease puts its members back, as joins.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let changes = loop {
        match b.presence_update(&ch, &members, &[], LONG).await {
            Ok(c) => break c,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no update: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(changes.joined.len(), 2, "both members are back: {changes:?}");
    let r = b.presence_read(&ch, None, 10).await.expect("read");
    assert_eq!((r.connections, r.users), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_live_in_the_channels_slot_and_follow_a_migration() {
    let cluster = RedisCluster::start(3, 0);
    let b = clustered(&cluster).await;
    let chans: Vec<String> = (0..12).map(|i| unique(&format!("pslot{i}"))).collect();
    for ch in &chans {
        b.presence_update(ch, &[Member::new("n:1", Some("u"))], &[], LONG).await.expect("update");
        let owner = &cluster.masters[cluster.master_index_of(ch)];
        let slot = int(owner.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(ch)));
        for key in keys(ch) {
            assert_eq!(int(owner.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key))), slot);
        }
        assert_eq!(int(owner.query(redis::cmd("EXISTS").arg(&keys(ch)[0]))), 1, "on its owner");
    }
    let ch = &chans[0];
    let to = (cluster.master_index_of(ch) + 1) % 3;
    cluster.migrate_slot(switchyard_redis::slot::key_slot(ch.as_bytes()), to);
    let c = b
        .presence_update(ch, &[Member::new("n:2", None)], &[], LONG)
        .await
        .expect("MOVED followed");
    assert_eq!(c.joined, vec![Member::new("n:2", None)]);
    let r = b.presence_read(ch, None, 10).await.expect("read after migration");
    assert_eq!((r.connections, r.users), (2, 1), "the members moved with the slot");
}
