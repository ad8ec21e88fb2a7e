//! The redis-cluster backend on a real 3-master Redis Cluster: the conformance suite, one
//! shard subscription per channel per instance, and delivery resuming after CLIENT KILL, a
//! master failover and a slot migration.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::conformance::{self, next, unique, Pair};
use switchyard_backend::Backend;
use switchyard_redis::slot::key_slot;
use switchyard_redis::testing::{wait_until, RedisCluster};
use switchyard_redis::{wait_ready, RedisClusterBackend, RedisClusterOptions};

mod common;

/// How long delivery may take to resume after a fault.
const RESUME_WITHIN: Duration = Duration::from_secs(30);

fn options(cluster: &RedisCluster) -> RedisClusterOptions {
    let mut o = RedisClusterOptions { nodes: cluster.urls(), ..RedisClusterOptions::default() };
    o.connection.reconnect_min = Duration::from_millis(20);
    o.connection.reconnect_max = Duration::from_millis(300);
    o.connection.command_timeout = Duration::from_secs(2);
    o.connection.connect_timeout = Duration::from_millis(500);
    o.topology_refresh_interval = Duration::from_secs(2);
    o
}

async fn backend(cluster: &RedisCluster) -> Arc<RedisClusterBackend> {
    let b = RedisClusterBackend::connect(options(cluster)).expect("connect");
    wait_ready(&b, Duration::from_secs(15)).await.expect("ready");
    Arc::new(b)
}

/// Channel names spread over all masters.
fn channels(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| unique(&format!("{prefix}{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_backend_passes_the_conformance_suite() {
    let cluster = RedisCluster::start(3, 0);
    conformance::run_all(|| async {
        let a: Arc<dyn Backend> = backend(&cluster).await;
        let b: Arc<dyn Backend> = backend(&cluster).await;
        Pair::new(a, b)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_subscription_per_channel_per_instance_and_client_kill() {
    let cluster = RedisCluster::start(3, 0);
    let (a, b) = (backend(&cluster).await, backend(&cluster).await);
    let mut a_in = a.take_incoming().expect("incoming");
    let chans = cluster.channels_on_every_master(&unique("shardnumsub"), 10);
    for ch in &chans {
        for _ in 0..4 {
            a.subscribe(ch).await.expect("subscribe a");
            b.subscribe(ch).await.expect("subscribe b");
        }
    }
    for ch in &chans {
        assert_eq!(cluster.shardnumsub(ch), 2, "one shard subscription per instance for {ch}");
    }

    let killed = cluster.kill_pubsub_clients();
    assert_eq!(killed, 6, "one sharded subscriber connection per master per instance");
    wait_ready(&*a, Duration::from_secs(15)).await.expect("ready again");
    for ch in &chans {
        common::publish_until_delivered(&*b, &mut a_in, ch, "after CLIENT KILL", RESUME_WITHIN)
            .await;
    }
    for ch in &chans {
        wait_until(&format!("two subscriptions of {ch}"), || cluster.shardnumsub(ch) == 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_failover() {
    let mut cluster = RedisCluster::start(3, 1);
    let (a, b) = (backend(&cluster).await, backend(&cluster).await);
    let mut a_in = a.take_incoming().expect("incoming");
    let chans = channels("failover", 12);
    for ch in &chans {
        a.subscribe(ch).await.expect("subscribe");
    }
    let victim = cluster.master_index_of(&chans[0]);
    let on_victim: Vec<&String> =
        chans.iter().filter(|c| cluster.master_index_of(c) == victim).collect();
    cluster.fail_over(victim);
    for ch in &chans {
        common::publish_until_delivered(&*b, &mut a_in, ch, "after failover", RESUME_WITHIN).await;
    }
    for ch in on_victim {
        assert_eq!(cluster.shardnumsub(ch), 1, "{ch} re-subscribed once on the new master");
    }
    wait_ready(&*a, Duration::from_secs(15)).await.expect("ready after failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_slot_migration() {
    let cluster = RedisCluster::start(3, 0);
    let (a, b) = (backend(&cluster).await, backend(&cluster).await);
    let mut a_in = a.take_incoming().expect("incoming");
    let ch = unique("migrate");
    let other = unique("stays");
    a.subscribe(&ch).await.expect("subscribe");
    a.subscribe(&other).await.expect("subscribe");
    b.publish(&ch, Bytes::from_static(b"before")).await.expect("publish");
    assert_eq!(next(&mut a_in, "before").await.payload, Bytes::from_static(b"before"));

    let from = cluster.master_index_of(&ch);
    let to = (from + 1) % 3;
    cluster.migrate_slot(key_slot(ch.as_bytes()), to);
    assert_eq!(cluster.master_index_of(&ch), to);
    common::publish_until_delivered(&*b, &mut a_in, &ch, "after migration", RESUME_WITHIN).await;
    wait_until("one subscription on the new owner", || {
        cluster.masters[to].shardnumsub(&ch) == 1 && cluster.masters[from].shardnumsub(&ch) == 0
    });
    b.publish(&other, Bytes::from_static(b"other")).await.expect("publish");
    assert_eq!(next(&mut a_in, "other channel").await.payload, Bytes::from_static(b"other"));
}
